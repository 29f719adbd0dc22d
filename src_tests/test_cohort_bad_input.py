"""Every kind of bad input: a clear message naming the case and the fix, the rest goes on.

One cohort holds two good cases and one case per problem; ``prepare`` runs once on it.
"""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl_radiomics.config import PrepareConfig
from napari_ssl_radiomics.core.cache import load_prepared
from napari_ssl_radiomics.core.cohort import load_cohort
from napari_ssl_radiomics.core.preprocess import prepare, prepare_case

CFG = PrepareConfig(size=16, spacing=1.0)
N = 16


def write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    img = sitk.GetImageFromArray(array, isVector=False)
    if img.GetDimension() == 3:
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        if direction is not None:
            img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path.name


def blob(value=1):
    mask = np.zeros((N,) * 3, np.uint8)
    mask[5:11, 4:10, 6:12] = value
    return mask


def image(seed=0):
    return np.random.default_rng(seed).normal(100, 20, (N,) * 3).astype(np.float32)


@pytest.fixture(scope="module")
def bad_cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rows = []

    def add(case_id, img, mask, extra=""):
        rows.append(f"{case_id},{img},{mask},{extra}")

    add("good1", write(d / "good1.nii.gz", image(1)), write(d / "good1_m.nii.gz", blob()))
    add("good2", write(d / "good2.nrrd", image(2)), write(d / "good2_m.nrrd", blob()))
    add("label255", write(d / "l255.nii.gz", image(3)), write(d / "l255_m.nii.gz", blob(255)))
    add("missing", "nowhere.nii.gz", write(d / "missing_m.nii.gz", blob()))
    (d / "garbage.nii.gz").write_bytes(b"this is not an image" * 20)
    add("unreadable", "garbage.nii.gz", write(d / "unreadable_m.nii.gz", blob()))
    add("spacing", write(d / "sp.nii.gz", image()), write(d / "sp_m.nii.gz", blob(), spacing=(1.0, 1.0, 1.5)))
    add("origin", write(d / "or.nii.gz", image()), write(d / "or_m.nii.gz", blob(), origin=(3.0, 0.0, 0.0)))
    add(
        "direction",
        write(d / "di.nii.gz", image()),
        write(d / "di_m.nii.gz", blob(), direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)),
    )
    add("size", write(d / "si.nii.gz", image()), write(d / "si_m.nii.gz", np.pad(blob(), ((0, 2), (0, 0), (0, 0)))))
    add("empty", write(d / "em.nii.gz", image()), write(d / "em_m.nii.gz", np.zeros((N,) * 3, np.uint8)))
    add("absent", write(d / "ab.nii.gz", image()), write(d / "ab_m.nii.gz", blob()), "3")
    several = blob()
    several[12:14, 12:14, 12:14] = 2
    add("several", write(d / "se.nii.gz", image()), write(d / "se_m.nii.gz", several))
    add("chosen", write(d / "ch.nii.gz", image(4)), write(d / "ch_m.nii.gz", several), "2")
    add("flat", write(d / "flat.nrrd", image()[0]), write(d / "flat_m.nrrd", blob()[0]))
    add("fourd", write(d / "4d.nii.gz", np.stack([image(), image()])), write(d / "4d_m.nii.gz", blob()))
    nan = image()
    nan[3, 3, 3] = np.nan
    nan[4, 4, 4] = np.inf
    # NRRD: ITK's NIfTI IO turns NaN into 0 on the way
    add("nan", write(d / "nan.nrrd", nan), write(d / "nan_m.nii.gz", blob()))
    add("constant", write(d / "co.nii.gz", np.full((N,) * 3, 7.0, np.float32)), write(d / "co_m.nii.gz", blob()))
    # NIfTI: SimpleITK's reader returns NaN and Inf as 0, so the file itself is scanned.
    add("nan_nii", write(d / "nan.nii.gz", nan), write(d / "nan_nii_m.nii.gz", blob()))
    add("inf_nii", write(d / "inf.nii", np.where(np.isnan(nan), 0, nan)), write(d / "inf_nii_m.nii", blob()))
    # Truncated files, which SimpleITK reads with the missing voxels set to 0.
    full = d / "full.nii"
    write(full, (image(5) * 10).astype(np.int16))
    data = full.read_bytes()
    (d / "cut.nii").write_bytes(data[: len(data) // 2])
    add("cut_nii", "cut.nii", write(d / "cut_m.nii.gz", blob()))
    (d / "cut_stream.nii.gz").write_bytes(gzip.compress(data[: len(data) // 2]))  # whole gzip, short data
    add("cut_gz_data", "cut_stream.nii.gz", write(d / "cut_gz_data_m.nii.gz", blob()))
    packed = gzip.compress(data)
    (d / "cut_gzip.nii.gz").write_bytes(packed[: len(packed) // 2])  # the gzip stream itself cut
    add("cut_gzip", "cut_gzip.nii.gz", write(d / "cut_gzip_m.nii.gz", blob()))
    # BraTS-style labels {1, 2, 4}: the whole tumour is their union.
    brats = np.zeros((N,) * 3, np.uint8)
    brats[4:12, 4:12, 4:12] = 2
    brats[6:10, 6:10, 6:10] = 4
    brats[7:9, 7:9, 7:9] = 1
    add("brats_union", write(d / "br.nii.gz", image(6)), write(d / "br_m.nii.gz", brats), "1+2+4")
    add("brats_all", write(d / "br2.nii.gz", image(7)), "br_m.nii.gz", "all")
    add("brats_core", write(d / "br3.nii.gz", image(8)), "br_m.nii.gz", "1+4")
    add("brats_half", write(d / "br4.nii.gz", image(10)), "br_m.nii.gz", "1+9")  # 9 is not in the mask
    add("background", write(d / "bg.nii.gz", image(11)), write(d / "bg_m.nii.gz", blob()), "0")
    huge = image(12).astype(np.float64) * 1e200  # finite in float64, inf once cast to float32
    add("huge_nii", write(d / "huge.nii.gz", huge), write(d / "huge_m.nii.gz", blob()))
    add("huge_nrrd", write(d / "huge.nrrd", huge), write(d / "huge_m.nrrd", blob()))
    add("good1", write(d / "dup.nii.gz", image(9)), write(d / "dup_m.nii.gz", blob()))
    (d / "manifest.csv").write_text("ID,Image,Mask,MaskLabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = d / "cache"
    gen = prepare(d / "manifest.csv", CFG, out)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            table = stop.value
            break
    return d, out, table.set_index("ID", drop=False), events


OK = ["chosen", "good1", "good2", "label255", "brats_union", "brats_all", "brats_core"]


def reason(table, case_id):
    rows = table.loc[[case_id]]
    skipped = rows[rows["status"] == "skipped"]
    assert len(skipped) == 1, f"{case_id} was not skipped"
    return skipped.iloc[0]["reason"]


def test_good_cases_survive_every_bad_neighbour(bad_cohort):
    _, out, table, events = bad_cohort
    ok = table[table["status"] == "ok"]["ID"].tolist()
    assert sorted(ok) == sorted(OK)
    assert len(events) == len(table) == 30 and events[-1].total == 30
    cohort = load_prepared(out)
    assert sorted(cohort.ids) == sorted(ok) and cohort.images.shape == (len(OK), 1, 16, 16, 16)
    assert (out / "cases.csv").exists() and (out / "prepare.json").exists()


def test_missing_file(bad_cohort):
    text = reason(bad_cohort[2], "missing")
    assert "nowhere.nii.gz" in text and "not found" in text and "fix the path" in text


def test_unreadable_file(bad_cohort):
    text = reason(bad_cohort[2], "unreadable")
    assert "cannot read image" in text and "garbage.nii.gz" in text and "NIfTI" in text


@pytest.mark.parametrize(
    "case_id, what", [("spacing", "spacing"), ("origin", "origin"), ("direction", "direction"), ("size", "size")]
)
def test_geometry_mismatch_offers_resampling(bad_cohort, case_id, what):
    text = reason(bad_cohort[2], case_id)
    assert f"geometry differ ({what}" in text and "--resample-mask true" in text


def test_resample_mask_rescues_a_mismatched_mask(bad_cohort):
    d = bad_cohort[0]
    case = next(c for c in load_cohort(d / "manifest.csv").cases if c.id == "spacing")
    img, mask, meta = prepare_case(case, dataclasses.replace(CFG, resample_mask=True))
    # the mask's 6 x 6 x 6 voxels at 1.5 mm along z cover 9 mm: about 9 slices at 1 mm
    assert abs(meta["roi_volume_mm3"] - 6 * 6 * 9) <= 6 * 6
    assert mask.sum() > 0


def test_empty_mask(bad_cohort):
    assert "is empty (all zero)" in reason(bad_cohort[2], "empty")


def test_roi_label_absent(bad_cohort):
    text = reason(bad_cohort[2], "absent")
    assert "ROI label 3 is absent" in text and "labels found: 1" in text and "MaskLabel" in text


def test_every_member_of_a_union_must_be_present(bad_cohort):
    """MaskLabel 1+9 on a mask of {1, 2, 4} used to become label 1 alone, silently."""
    text = reason(bad_cohort[2], "brats_half")
    assert "ROI label 9 of MaskLabel 1+9 is absent" in text and "labels found: 1, 2, 4" in text
    assert "every member of a union must be present" in text


def test_label_0_is_called_the_background(bad_cohort):
    text = reason(bad_cohort[2], "background")
    assert "label 0, which is the background" in text and "absent" not in text


def test_several_labels_without_masklabel(bad_cohort):
    text = reason(bad_cohort[2], "several")
    assert "several labels (1, 2)" in text and "add a MaskLabel column" in text


def test_masklabel_and_255_select_the_roi(bad_cohort):
    out = bad_cohort[1]
    cohort = load_prepared(out)
    by_id = dict(zip(cohort.ids, cohort.masks))
    assert by_id["chosen"].sum() == 8  # label 2: the 2 x 2 x 2 cube
    assert by_id["label255"].sum() == 6 * 6 * 6
    meta = dict(zip(cohort.ids, cohort.meta))
    assert meta["chosen"]["mask_label"] == 2 and meta["label255"]["mask_label"] == 255


def test_2d_and_4d_images(bad_cohort):
    table = bad_cohort[2]
    assert "is 2D" in reason(table, "flat") and "needs 3D" in reason(table, "flat")
    assert "is 4D" in reason(table, "fourd") and "split it into 3D files" in reason(table, "fourd")


def test_nan_and_inf_voxels(bad_cohort):
    text = reason(bad_cohort[2], "nan")
    assert "2 NaN or Inf voxels" in text and "replace them" in text


@pytest.mark.parametrize("case_id, name", [("huge_nii", "huge.nii.gz"), ("huge_nrrd", "huge.nrrd")])
def test_float64_values_beyond_float32_are_named_as_an_overflow(bad_cohort, case_id, name):
    text = reason(bad_cohort[2], case_id)
    assert f"the values of image {name} overflow float32 (largest magnitude" in text and "e+202" in text
    assert "nan" not in text.lower()


def test_constant_image(bad_cohort):
    assert "no intensity range" in reason(bad_cohort[2], "constant")


def test_duplicate_id_second_is_skipped(bad_cohort):
    _, out, table, _ = bad_cohort
    rows = table.loc[["good1"]]
    assert list(rows["status"]) == ["ok", "skipped"]
    assert "duplicate ID" in rows.iloc[1]["reason"]
    # the first one's crop is the one kept (dup.nii.gz has other intensities)
    meta = load_prepared(out).meta[load_prepared(out).ids.index("good1")]
    assert meta["sources"]["Image"]["path"].endswith("good1.nii.gz")


def test_a_run_without_any_good_case_still_writes_its_table(tmp_path):
    write(tmp_path / "e.nii.gz", image())
    write(tmp_path / "e_m.nii.gz", np.zeros((N,) * 3, np.uint8))
    (tmp_path / "m.csv").write_text("ID,Image,Mask\ne,e.nii.gz,e_m.nii.gz\n", encoding="utf-8")
    from napari_ssl_radiomics.core.preprocess import prepare_all

    table = prepare_all(tmp_path / "m.csv", CFG, tmp_path / "c")
    assert list(table["status"]) == ["skipped"]
    with pytest.raises(ValueError, match="no case was prepared successfully"):
        load_prepared(tmp_path / "c")


@pytest.mark.parametrize("case_id", ["nan_nii", "inf_nii"])
def test_nan_and_inf_voxels_in_nifti(bad_cohort, case_id):
    """The same values in NRRD are caught above; NIfTI lost them in SimpleITK's reader."""
    text = reason(bad_cohort[2], case_id)
    assert "NaN or Inf voxels" in text and "replace them" in text


@pytest.mark.parametrize("case_id", ["cut_nii", "cut_gz_data"])
def test_truncated_nifti_is_refused(bad_cohort, case_id):
    text = reason(bad_cohort[2], case_id)
    assert "is truncated: its header promises" in text and "copy the file again" in text


def test_cut_gzip_stream_is_refused(bad_cohort):
    text = reason(bad_cohort[2], "cut_gzip")
    assert "cut_gzip.nii.gz" in text and ("truncated" in text or "cannot read" in text)


def test_whole_tumour_and_label_unions(bad_cohort):
    """MaskLabel 1+2+4 and 'all' give the union of a BraTS mask; 1+4 the tumour core."""
    cohort = load_prepared(bad_cohort[1])
    masks = dict(zip(cohort.ids, cohort.masks))
    meta = dict(zip(cohort.ids, cohort.meta))
    assert masks["brats_union"].sum() == masks["brats_all"].sum() == 8**3
    assert masks["brats_core"].sum() == 4**3
    assert meta["brats_union"]["mask_label"] == "1+2+4" and meta["brats_all"]["mask_label"] == "all"


def test_mask_label_setting_applies_where_the_manifest_gives_none(bad_cohort):
    d = bad_cohort[0]
    case = next(c for c in load_cohort(d / "manifest.csv").cases if c.id == "several")
    _, mask, meta = prepare_case(case, dataclasses.replace(CFG, mask_label="all"))
    assert meta["mask_label"] == "all" and mask.sum() == 6 * 6 * 6 + 8
    with pytest.raises(ValueError, match="mask_label"):
        prepare_case(case, dataclasses.replace(CFG, mask_label="whole tumour please"))


def test_radiomics_refuses_exactly_what_prepare_refuses(bad_cohort):
    """One validation: every case prepare skips fails in radiomics with the same reason."""
    from napari_ssl_radiomics.config import RadiomicsConfig
    from napari_ssl_radiomics.core.radiomics import extract_all

    d, _, table, _ = bad_cohort
    features, failures = extract_all(d / "manifest.csv", RadiomicsConfig(jobs=1), None)
    # A constant image has no intensity range to rescale for the network; pyradiomics copes.
    prepared = {i for i in table[table["status"] == "ok"]["ID"]} | {"constant"}
    assert set(features["ID"]) == prepared
    skipped = table[(table["status"] == "skipped") & (table["ID"] != "constant")]
    assert sorted(failures["ID"]) == sorted(skipped["ID"])
    theirs = dict(zip(failures["ID"], failures["reason"]))
    for row in skipped.itertuples():
        if row.ID != "good1":  # the duplicate: the same ID twice, compared below
            assert theirs[row.ID] == row.reason, row.ID

"""Preparation on pyradiomics' real cases (CT 0.57-0.63 mm x 5 mm, MR 0.78 mm x 6.5 mm,
the multi-label prostate phantom), checked against independent references: the mask's
centroid from SimpleITK's label statistics, and trilinear sampling with scipy."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from napari_ssl_radiomics.config import PrepareConfig
from napari_ssl_radiomics.core.cache import crop_paths, load_prepared
from napari_ssl_radiomics.core.cohort import load_cohort
from napari_ssl_radiomics.core.preprocess import prepare, prepare_all, prepare_case

CFG = PrepareConfig(size=48, spacing=2.0)
CASES = {  # ID: (image, mask, MaskLabel)
    "brain1": ("brain1_image.nrrd", "brain1_label.nrrd", ""),
    "lung2": ("lung2_image.nrrd", "lung2_label.nrrd", ""),
    "phantom9": ("prostate_phantom_subvolume.nrrd", "prostate_phantom_subvolume-label.nrrd", "9"),
    "phantom7": ("prostate_phantom_subvolume.nrrd", "prostate_phantom_subvolume-label.nrrd", "7"),
}


def manifest(folder, data, ids):
    lines = ["ID,Image,Mask,MaskLabel"]
    lines += [f"{i},{data / CASES[i][0]},{data / CASES[i][1]},{CASES[i][2]}" for i in ids]
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(pyradiomics_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    table = prepare_all(manifest(d, pyradiomics_data, list(CASES)), CFG, d / "cache")
    assert list(table["status"]) == ["ok"] * len(CASES), table["reason"].tolist()
    cohort = load_prepared(d / "cache")
    return {i: (cohort.images[k], cohort.masks[k], cohort.meta[k]) for k, i in enumerate(cohort.ids)}


def source_roi(data, case_id):
    image, mask, label = CASES[case_id]
    m = sitk.ReadImage(str(data / mask))
    value = int(label) if label else 1
    return sitk.ReadImage(str(data / image)), sitk.Cast(m == value, sitk.sitkUInt8)


def crop_to_physical(meta, index_zyx):
    """Physical points (N, 3) of crop voxel indices given as (N, 3) in (z, y, x)."""
    direction = np.array(meta["direction"]).reshape(3, 3)
    xyz = np.asarray(index_zyx, float)[:, ::-1]
    return np.array(meta["origin"]) + (xyz * np.array(meta["spacing"])) @ direction.T


@pytest.mark.parametrize("case_id", list(CASES))
def test_crop_is_isotropic_and_centred_on_the_masks_centroid(prepared, pyradiomics_data, case_id):
    image, mask, meta = prepared[case_id]
    assert image.shape == (1, 48, 48, 48) and mask.shape == (48, 48, 48)
    assert meta["spacing"] == [2.0, 2.0, 2.0]
    _, roi = source_roi(pyradiomics_data, case_id)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(roi)
    truth = np.array(stats.GetCentroid(1))
    # the cube's centre voxel lies on the centroid ...
    centre = crop_to_physical(meta, [[23.5, 23.5, 23.5]])[0]
    assert np.linalg.norm(centre - truth) < 1e-6
    if case_id == "phantom7":  # 170 voxels of 0.5 x 0.5 x 3 mm: too thin for a 2 mm grid
        assert "changed the ROI's volume" in meta["note"]
        return
    # ... and the resampled mask's own centroid is within one output voxel of it
    assert meta["note"] == "" and meta["roi_inside_fraction"] == 1.0
    crop_centroid = crop_to_physical(meta, [ndi.center_of_mass(mask)])[0]
    assert np.all(np.abs(crop_centroid - truth) < 2.0), (crop_centroid, truth)


@pytest.mark.parametrize("case_id", ["brain1", "lung2"])
def test_roi_volume_survives_resampling(prepared, pyradiomics_data, case_id):
    _, mask, meta = prepared[case_id]
    _, roi = source_roi(pyradiomics_data, case_id)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(roi)
    truth = stats.GetPhysicalSize(1)
    assert truth > 15000  # big enough for a 2 mm grid to measure it
    assert mask.sum() * 8.0 == pytest.approx(truth, rel=0.03)
    assert meta["roi_volume_mm3"] == pytest.approx(truth, rel=1e-9)


def reference_crop(source: sitk.Image, meta: dict, default: float) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear samples (scipy) of ``source`` at the crop's voxel centres, and a mask of
    the voxels that lie inside the source by more than one voxel."""
    size = meta["size"]
    idx = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    points = crop_to_physical(meta, idx)
    frame = np.array(source.GetDirection()).reshape(3, 3) * np.array(source.GetSpacing())
    cont_xyz = np.linalg.solve(frame, (points - np.array(source.GetOrigin())).T)
    arr = sitk.GetArrayFromImage(source).astype(np.float64)
    values = ndi.map_coordinates(arr, cont_xyz[::-1], order=1, mode="nearest")
    extent = np.array(source.GetSize())[:, None]
    inside = np.all((cont_xyz >= -0.5) & (cont_xyz <= extent - 0.5), axis=0)
    deep = np.all((cont_xyz >= 1) & (cont_xyz <= extent - 2), axis=0)
    values[~inside] = default
    shape = (size,) * 3
    return values.reshape(shape), deep.reshape(shape), inside.reshape(shape)


@pytest.mark.parametrize("case_id", ["brain1", "phantom9"])
def test_resampling_matches_an_independent_trilinear_reference(prepared, pyradiomics_data, case_id):
    image, _, meta = prepared[case_id]
    source, _ = source_roi(pyradiomics_data, case_id)
    low, high = meta["intensity_range"][0]
    ref, deep, _ = reference_crop(source, meta, meta["background"][0])
    ref = np.clip((ref - low) / (high - low) * 255, 0, 255)
    assert deep.sum() > 1000
    assert np.max(np.abs(image[0][deep] - ref[deep])) < 1e-2


def test_bspline_interpolation_agrees_with_linear(prepared, pyradiomics_data):
    linear, _, _ = prepared["brain1"]
    case = next(c for c in load_cohort(pyradiomics_data).cases if c.id == "brain1")
    bspline, _, meta = prepare_case(case, dataclasses.replace(CFG, interpolator="bspline"))
    assert meta["settings"]["interpolator"] == "bspline"
    assert not np.array_equal(bspline, linear)
    assert np.corrcoef(bspline.ravel(), linear.ravel())[0, 1] > 0.98


def test_padding_takes_the_background_value(pyradiomics_data):
    # The phantom is 41 x 33 x 39 mm; a 96 mm cube pads most of it. A window below the
    # image's minimum (0) makes the background a visible 42.5 instead of 0.
    cfg = dataclasses.replace(CFG, intensity="window", window=(-500.0, 2500.0))
    case = next(c for c in load_cohort(pyradiomics_data).cases if c.id == "prostate_phantom_subvolume")
    case.mask_label = 9
    image, mask, meta = prepare_case(case, cfg)
    source = sitk.ReadImage(str(case.image))
    assert meta["background"] == [float(sitk.GetArrayViewFromImage(source).min())] == [0.0]
    _, _, inside = reference_crop(source, meta, 0.0)
    assert (~inside).sum() > 0.5 * inside.size
    assert np.all(image[0][~inside] == pytest.approx(500 / 3000 * 255))
    assert image[0][inside].max() > 100


def test_an_roi_larger_than_the_crop_is_flagged(pyradiomics_data):
    case = next(c for c in load_cohort(pyradiomics_data).cases if c.id == "lung2")
    _, mask, meta = prepare_case(case, dataclasses.replace(CFG, size=32, spacing=1.0))
    # lung2's tumour spans about 55 x 41 x 55 mm; a 32 mm cube holds part of it
    assert 0.1 < meta["roi_inside_fraction"] < 0.9
    assert mask.sum() == pytest.approx(meta["roi_inside_fraction"] * meta["roi_volume_mm3"], rel=0.1)
    assert "lies inside the crop" in meta["note"] and "--crop bbox" in meta["note"]


def test_bbox_crop_fits_the_roi_with_its_margin(pyradiomics_data):
    cfg = dataclasses.replace(CFG, size=32, crop="bbox", margin=5.0)
    case = next(c for c in load_cohort(pyradiomics_data).cases if c.id == "lung1")
    image, mask, meta = prepare_case(case, cfg)
    low, high = np.array(meta["bbox_mm"])
    side = (high - low).max() + 10.0
    assert meta["spacing"] == pytest.approx([side / 32] * 3)
    # the ROI's longest side spans the cube minus the two margins
    zyx = np.nonzero(mask)
    spans = np.array([(a.max() - a.min() + 1) for a in zyx[::-1]]) * side / 32
    assert spans.max() == pytest.approx((high - low).max(), abs=2 * side / 32)
    assert mask.sum() * (side / 32) ** 3 == pytest.approx(meta["roi_volume_mm3"], rel=0.1)


def test_box_mask_sets_the_networks_crop_and_the_mask_stays_the_tumour(pyradiomics_data, tmp_path):
    """The paper's lung setting: the box around a whole organ (BoxMask), the lesion (Mask)."""
    phantom = pyradiomics_data / "prostate_phantom_subvolume.nrrd"
    labels = pyradiomics_data / "prostate_phantom_subvolume-label.nrrd"
    (tmp_path / "m.csv").write_text(
        f"ID,Image,Mask,MaskLabel,BoxMask\nboxed,{phantom},{labels},1,{labels}\nplain,{phantom},{labels},1,\n",
        encoding="utf-8",
    )
    boxed, plain = load_cohort(tmp_path / "m.csv").cases
    assert boxed.box_mask == labels and "BoxMask" in boxed.sources() and plain.box_mask is None
    cfg = dataclasses.replace(CFG, size=32, crop="bbox", margin=5.0)
    _, box_roi, box_meta = prepare_case(boxed, cfg)
    _, roi, meta = prepare_case(plain, cfg)
    # The cube's side: the longest extent of every nonzero label (the organ), plus the margins.
    img = sitk.ReadImage(str(labels))
    zyx = np.argwhere(sitk.GetArrayFromImage(img) != 0)
    extent = (zyx.max(0) - zyx.min(0) + 1)[::-1] * np.array(img.GetSpacing())
    assert box_meta["spacing"] == pytest.approx([(extent.max() + 10.0) / 32] * 3, rel=1e-6)
    assert box_meta["spacing"][0] > meta["spacing"][0]  # the organ's box is larger than the lesion's
    # The mask is still the lesion (label 1), whole inside the organ's box, at a coarser grid.
    assert box_meta["roi_volume_mm3"] == meta["roi_volume_mm3"] and box_meta["roi_inside_fraction"] == 1.0
    assert 0 < box_roi.sum()
    # The cube is centred on the organ's box, not on the lesion's.
    centre = img.TransformContinuousIndexToPhysicalPoint(((zyx.min(0) + zyx.max(0)) / 2)[::-1].tolist())
    direction = np.array(box_meta["direction"]).reshape(3, 3)
    crop_centre = np.array(box_meta["origin"]) + direction @ np.full(3, box_meta["spacing"][0] * 31 / 2)
    assert crop_centre == pytest.approx(centre, abs=1e-6)
    plain_centre = np.array(meta["origin"]) + direction @ np.full(3, meta["spacing"][0] * 31 / 2)
    assert np.abs(plain_centre - centre).max() > 1.0
    assert box_meta["sources"]["BoxMask"]["path"] == str(labels)


@pytest.mark.parametrize("crop", ["bbox", "centroid"])
def test_a_box_mask_that_misses_the_roi_is_named_as_such(pyradiomics_data, tmp_path, crop):
    """A BoxMask of another place: no crop setting mends it, so none is advised."""
    phantom = pyradiomics_data / "prostate_phantom_subvolume.nrrd"
    labels = pyradiomics_data / "prostate_phantom_subvolume-label.nrrd"
    img = sitk.ReadImage(str(labels))
    corner = np.zeros(sitk.GetArrayViewFromImage(img).shape, np.uint8)
    corner[:4, :4, :4] = 1  # a box far from the lesion
    box = sitk.GetImageFromArray(corner)
    box.CopyInformation(img)
    sitk.WriteImage(box, str(tmp_path / "corner.nrrd"))
    (tmp_path / "m.csv").write_text(
        f"ID,Image,Mask,MaskLabel,BoxMask\nmissed,{phantom},{labels},1,{tmp_path / 'corner.nrrd'}\n", encoding="utf-8"
    )
    (case,) = load_cohort(tmp_path / "m.csv").cases
    _, _, meta = prepare_case(case, dataclasses.replace(CFG, size=16, crop=crop, margin=0.0))
    assert meta["roi_inside_fraction"] < 0.9
    assert "inside the crop that BoxMask corner.nrrd sets: the BoxMask misses the ROI" in meta["note"]
    assert "--crop" not in meta["note"]


def test_second_run_reuses_the_cache_and_changes_redo_it(pyradiomics_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in (
        "breast1_image.nrrd",
        "breast1_label.nrrd",
        "prostate_phantom_subvolume.nrrd",
        "prostate_phantom_subvolume-label.nrrd",
    ):
        shutil.copy(pyradiomics_data / name, data / name)
    (tmp_path / "m.csv").write_text(
        "ID,Image,Mask,MaskLabel\nbreast1,data/breast1_image.nrrd,data/breast1_label.nrrd,\n"
        "phantom,data/prostate_phantom_subvolume.nrrd,data/prostate_phantom_subvolume-label.nrrd,8\n",
        encoding="utf-8",
    )
    cfg = dataclasses.replace(CFG, size=32)
    out = tmp_path / "cache"

    def run(cfg):
        return {e.case_id: e.status for e in prepare_events(tmp_path / "m.csv", cfg, out)}

    assert run(cfg) == {"breast1": "ok", "phantom": "ok"}
    files = [p for i in ("breast1", "phantom") for p in crop_paths(out, i)]
    stamps = [p.stat().st_mtime_ns for p in files]
    assert run(cfg) == {"breast1": "cached", "phantom": "cached"}
    assert [p.stat().st_mtime_ns for p in files] == stamps
    # jobs does not change a crop: still cached
    assert run(dataclasses.replace(cfg, jobs=1)) == {"breast1": "cached", "phantom": "cached"}
    # a changed setting redoes every case
    assert run(dataclasses.replace(cfg, spacing=1.5)) == {"breast1": "ok", "phantom": "ok"}
    assert load_prepared(out).meta[0]["spacing"] == [1.5] * 3
    # a changed source redoes only its case; a touched but equal one stays cached
    mask = sitk.ReadImage(str(data / "breast1_label.nrrd"))
    mask[mask.GetSize()[0] // 2, 64, 10] = 1
    sitk.WriteImage(mask, str(data / "breast1_label.nrrd"))
    (data / "prostate_phantom_subvolume.nrrd").touch()
    assert run(dataclasses.replace(cfg, spacing=1.5)) == {"breast1": "ok", "phantom": "cached"}


def prepare_events(manifest_path, cfg, out):
    gen = prepare(manifest_path, cfg, out)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration:
            return events

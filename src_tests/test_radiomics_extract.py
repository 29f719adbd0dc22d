"""Extraction behaviour on tiny real NIfTI volumes: cache, failures, mask labels, int16 CT, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from napari_ssl_radiomics.cli import main
from napari_ssl_radiomics.config import RadiomicsConfig
from napari_ssl_radiomics.core.cohort import Case
from napari_ssl_radiomics.core.radiomics import extract, extract_all


def _write(path, array, dtype):
    img = sitk.GetImageFromArray(array.astype(dtype))
    img.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(img, str(path))
    return path


def _case(tmp_path, name, seed, mask_value=1, ct=False, mask_label=None, empty=False):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:20, :20, :20]
    r = 4 + seed % 3
    roi = (z - 10) ** 2 + (y - 10) ** 2 + (x - 10) ** 2 <= r * r
    if ct:  # int16 CT-like values near the type's limits make numpy 2 overflow pyradiomics' bins
        image = np.where(roi, 32740 + rng.integers(0, 28, roi.shape), -1024 + rng.integers(0, 500, roi.shape))
        dtype = np.int16
    else:
        image = rng.normal(100, 20, roi.shape) + 60 * roi
        dtype = np.float32
    mask = np.zeros(roi.shape) if empty else roi * mask_value
    return Case(
        id=name,
        image=_write(tmp_path / f"{name}_image.nii.gz", image, dtype),
        mask=_write(tmp_path / f"{name}_mask.nii.gz", mask, np.uint8),
        mask_label=mask_label,
    )


def test_cache_computes_only_what_changed(tmp_path):
    cases = [_case(tmp_path, f"c{i}", i) for i in range(3)]
    cache = tmp_path / "cache"
    cfg = RadiomicsConfig(jobs=2)
    first, _ = extract_all(cases, cfg, cache)
    assert len(list(cache.glob("*.json"))) == 3

    events = list(extract(cases, cfg, cache))
    assert sorted(e.status for e in events) == ["cached"] * 3
    again, _ = extract_all(cases, cfg, cache)
    pd.testing.assert_frame_equal(first, again)

    _write(cases[1].image, np.random.default_rng(9).normal(0, 1, (20, 20, 20)), np.float32)  # one case changes
    statuses = {e.case_id: e.status for e in extract(cases, cfg, cache)}
    assert statuses == {"c0": "cached", "c1": "ok", "c2": "cached"}
    other = {e.status for e in extract(cases, RadiomicsConfig(jobs=1, bin_width=10), cache)}
    assert other == {"ok"}  # other settings, other cache entries


def test_a_failing_case_is_recorded_and_the_others_go_on(tmp_path):
    cases = [_case(tmp_path, "good", 0), _case(tmp_path, "empty", 1, empty=True), _case(tmp_path, "good2", 2)]
    cases.append(Case(id="missing", image=tmp_path / "nope.nii.gz", mask=cases[0].mask))
    features, failures = extract_all(cases, RadiomicsConfig(jobs=2), tmp_path / "cache")
    assert list(features["ID"]) == ["good", "good2"]
    reasons = dict(zip(failures["ID"], failures["reason"]))
    assert set(reasons) == {"empty", "missing"}
    assert "nope.nii.gz" in reasons["missing"]
    assert "mask" in reasons["empty"].lower()
    assert not any(
        json.loads(p.read_text(encoding="utf-8"))["ID"] == "empty" for p in (tmp_path / "cache").glob("*.json")
    )


def test_mask_label_and_single_label_masks(tmp_path):
    ones = _case(tmp_path, "ones", 0)
    stored_255 = _case(tmp_path, "s255", 0, mask_value=255)  # same ROI stored as 0/255
    named = _case(tmp_path, "named", 0, mask_value=2, mask_label=2)
    # a mask holding two ROIs: label 3 is a second, different ROI
    two = sitk.GetArrayFromImage(sitk.ReadImage(str(ones.mask))) * 2
    two[:, :3, :3] = 3
    multi = Case(id="multi", image=ones.image, mask=_write(tmp_path / "multi_mask.nii.gz", two, np.uint8), mask_label=2)
    # a multi-channel case: features come from the primary image only
    channels = Case(id="channels", image=ones.image, mask=ones.mask, extra_images={"t2": stored_255.image})
    features, failures = extract_all([ones, stored_255, named, multi, channels], RadiomicsConfig(jobs=1))
    assert failures.empty, failures.to_string()
    f = features.set_index("ID")
    for other in ("s255", "named", "multi", "channels"):
        pd.testing.assert_series_equal(f.loc["ones"], f.loc[other], check_names=False)


def test_int16_ct_values_are_cast_to_float32(tmp_path):
    case = _case(tmp_path, "ct", 0, ct=True)
    with np.errstate(over="raise"):  # pyradiomics' int16 bin arithmetic would overflow here
        features, failures = extract_all([case], RadiomicsConfig(jobs=1))
    assert failures.empty, failures.to_string()
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image))).astype(np.float64)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))) > 0
    assert features.loc[0, "original_firstorder_Mean"] == pytest.approx(image[mask].mean(), rel=1e-6)
    assert features.loc[0, "original_firstorder_Maximum"] == image[mask].max()


def test_cli_writes_table_sidecar_failures_and_cache(tmp_path, capsys):
    cases = [_case(tmp_path, f"c{i}", i) for i in range(2)] + [_case(tmp_path, "bad", 5, empty=True)]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "ID": [c.id for c in cases],
            "Image": [c.image.name for c in cases],
            "Mask": [c.mask.name for c in cases],
            "Label": ["a", "b", "a"],
        }
    ).to_csv(manifest, index=False)
    out = tmp_path / "out" / "trad.csv"
    assert main(["radiomics", str(manifest), "--out", str(out), "--jobs", "1"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:2]) == ["ID", "Label"] and table.shape == (2, 109)
    assert list(pd.read_csv(out.with_name("trad_failures.csv"))["ID"]) == ["bad"]
    side = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert side["config"]["jobs"] == 1 and "versions" in side and "date" in side
    assert len(list((out.parent / ".radiomics_cache").glob("*.json"))) == 2


def test_cli_mask_label_union_gives_the_whole_tumour(tmp_path):
    """A BraTS-style mask {1, 2, 4}: refused without a label (as prepare refuses it);
    ``--mask-label all`` and ``1+2+4`` extract the union, equal to a plain 0/1 mask of it."""
    whole = _case(tmp_path, "whole", 0)
    brats = sitk.GetArrayFromImage(sitk.ReadImage(str(whole.mask))).astype(np.uint8) * 2
    brats[9:11, 9:11, 9:11] = 4
    brats[10, 10, 10] = 1
    _write(tmp_path / "brats_mask.nii.gz", brats, np.uint8)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"ID,Image,Mask\nbrats,{whole.image.name},brats_mask.nii.gz\n", encoding="utf-8")
    out = tmp_path / "t.csv"
    assert main(["radiomics", str(manifest), "--out", str(out), "--jobs", "1", "--no-cache"]) == 2
    reason = pd.read_csv(tmp_path / "t_failures.csv")["reason"][0]
    assert "several labels (1, 2, 4)" in reason and "--mask-label all" in reason
    reference, _ = extract_all([whole], RadiomicsConfig(jobs=1))
    for spec in ("all", "1+2+4"):
        assert main(["radiomics", str(manifest), "--out", str(out), "--jobs", "1", "--mask-label", spec]) == 0
        got = pd.read_csv(out).drop(columns="ID").iloc[0]
        pd.testing.assert_series_equal(got, reference.drop(columns="ID").iloc[0], check_names=False)

"""pyradiomics features through our extraction path agree with pyradiomics' own baseline.

The five clinical cases of pyradiomics' test data (brain1, brain2, breast1, lung1, lung2)
with the settings of the baseline's plain and ``_resampling`` columns (each column's
``diagnostics_Configuration_Settings`` row), written as a parameter YAML and passed through
:func:`extract_all` like a user's file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from napari_ssl_radiomics.config import RadiomicsConfig
from napari_ssl_radiomics.core.cohort import Case
from napari_ssl_radiomics.core.radiomics import DEFAULT_CLASSES, extract_all, settings_from_baseline

CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")
COUNTS = {"shape": 14, "firstorder": 18, "glcm": 24, "glrlm": 16, "glszm": 16, "gldm": 14, "ngtdm": 5}
RTOL = 1e-3  # pyradiomics' own test tolerance is a relative difference of this order


@pytest.fixture(scope="module")
def baseline(pyradiomics_data):
    return {c: pd.read_csv(pyradiomics_data / "baseline" / f"baseline_{c}.csv", index_col=0) for c in DEFAULT_CLASSES}


@pytest.mark.parametrize("suffix", ["", "_resampling"])
def test_features_match_pyradiomics_baseline(pyradiomics_data, baseline, tmp_path, suffix):
    settings = settings_from_baseline(baseline["glcm"].loc["diagnostics_Configuration_Settings", "brain1" + suffix])
    for case in CASES:  # every case of a column was made with the same settings
        assert (
            settings_from_baseline(baseline["shape"].loc["diagnostics_Configuration_Settings", case + suffix])
            == settings
        )
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {"setting": settings, "imageType": {"Original": {}}, "featureClass": {c: None for c in DEFAULT_CLASSES}}
        ),
        encoding="utf-8",
    )
    cases = [
        Case(id=n, image=pyradiomics_data / f"{n}_image.nrrd", mask=pyradiomics_data / f"{n}_label.nrrd") for n in CASES
    ]

    features, failures = extract_all(cases, RadiomicsConfig(params=str(params), jobs=2))

    assert failures.empty, failures.to_string()
    assert list(features["ID"]) == list(CASES)
    feats = [c for c in features.columns if c != "ID"]
    assert {k: sum(f.startswith(f"original_{k}_") for f in feats) for k in COUNTS} == COUNTS
    compared, worst = 0, (0.0, "")
    for cls in DEFAULT_CLASSES:
        for feat in (f for f in feats if f.startswith(f"original_{cls}_")):
            for case in CASES:
                ref = float(baseline[cls].loc[feat, case + suffix])
                got = float(features.set_index("ID").loc[case, feat])
                rel = abs(got - ref) / abs(ref) if ref != 0 else abs(got)
                worst = max(worst, (rel, f"{case} {feat}: {got} vs {ref}"))
                compared += 1
    assert compared == 107 * len(CASES)
    assert worst[0] < RTOL, worst[1]


def test_default_settings_give_107_numeric_features(pyradiomics_data, tmp_path):
    """No params file: pyradiomics' defaults (binWidth 25), diagnostics kept aside, values equal the baseline."""
    cases = [
        Case(id="breast1", image=pyradiomics_data / "breast1_image.nrrd", mask=pyradiomics_data / "breast1_label.nrrd")
    ]
    features, failures = extract_all(cases, RadiomicsConfig(jobs=1))
    assert failures.empty
    assert features.shape == (1, 108) and features.columns[0] == "ID"
    assert all(np.issubdtype(features[c].dtype, np.floating) for c in features.columns[1:])
    assert not any(c.startswith("diagnostics_") for c in features.columns)
    diag = features.attrs["diagnostics"]
    assert "diagnostics_Configuration_Settings" in diag.columns
    base = pd.read_csv(pyradiomics_data / "baseline" / "baseline_firstorder.csv", index_col=0)
    np.testing.assert_allclose(
        features.loc[0, "original_firstorder_Mean"], float(base.loc["original_firstorder_Mean", "breast1"]), rtol=1e-6
    )

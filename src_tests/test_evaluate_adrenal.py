"""AdrenalMNIST3D through the full traditional-radiomics path on a stratified subset:
NIfTI + manifest, `ssl-radiomics radiomics`, `ssl-radiomics evaluate` (benchmarks/adrenal_eval.py
runs the same path on all 1584 volumes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from napari_ssl_radiomics.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adrenal_eval.py"


def _script():
    spec = importlib.util.spec_from_file_location("adrenal_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_traditional_features_beat_chance_on_adrenalmnist3d(adrenal_data, tmp_path):
    adrenal = _script()
    images, labels, ids = adrenal.load_pooled(adrenal_data / "adrenalmnist3d.npz")
    assert images.shape == (1584, 28, 28, 28) and 0.2 < labels.mean() < 0.24
    keep = adrenal.stratified_subset(labels, 150, seed=0)
    manifest = adrenal.write_cohort(tmp_path, images[keep], labels[keep], [ids[i] for i in keep])
    assert main(["radiomics", str(manifest), "--out", str(tmp_path / "trad.csv"), "--jobs", "2"]) == 0
    trad = pd.read_csv(tmp_path / "trad.csv")
    assert trad.shape == (150, 2 + 107) and not (tmp_path / "trad_failures.csv").exists()
    assert (
        main(
            [
                "evaluate",
                f"trad={tmp_path / 'trad.csv'}",
                "--out",
                str(tmp_path / "ev"),
                "--label-fraction",
                "1.0",
                "--positive",
                "1",
                "--repeats",
                "2",
            ]
        )
        == 0
    )
    res = pd.read_csv(tmp_path / "ev" / "results.csv")
    auc = res[res.metric == "auc"]["value"]
    assert len(auc) == 10 and auc.mean() > 0.7, auc.describe()
    assert np.isfinite(res[res.metric == "sensitivity"]["value"]).all()

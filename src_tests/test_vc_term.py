"""The variance-covariance term (``TrainConfig.vc_weight``) and the settings added beside it.

The term is VICReg's (Bardes et al. 2022) added to 3DSiam's loss against dimensional collapse
at small batch; a candidate of the study in benchmarks/README.md. Real training on tiny volumes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_engine import make_cache  # the shared synthetic-cache fixture

from napari_ssl_radiomics import config as C
from napari_ssl_radiomics.cli import main
from napari_ssl_radiomics.core.cache import load_prepared
from napari_ssl_radiomics.core.checkpoint import load_model
from napari_ssl_radiomics.core.health import effective_rank
from napari_ssl_radiomics.core.model import variance_covariance
from napari_ssl_radiomics.core.pipeline import _train_key
from napari_ssl_radiomics.core.runs import RunFolder
from napari_ssl_radiomics.core.train import _config_mismatch, run_to_end, train


def reference(z: np.ndarray, eps: float = 1e-4) -> float:
    """VICReg's two terms written out with numpy."""
    std = np.sqrt(z.var(axis=0, ddof=1) + eps)
    cov = np.cov(z, rowvar=False)
    off = (cov**2).sum() - (np.diag(cov) ** 2).sum()
    return float(np.maximum(0.0, 1.0 - std).mean() + off / z.shape[1] / 25.0)


def test_the_term_matches_vicregs_definition():
    rng = np.random.default_rng(0)
    for z in (rng.normal(0, 0.3, (6, 16)), rng.normal(0, 2.0, (6, 16)), np.outer(rng.normal(size=8), np.ones(5))):
        ours = float(variance_covariance(torch.from_numpy(z)))
        assert ours == pytest.approx(reference(z), rel=1e-5, abs=1e-6)
    # spread, decorrelated dimensions cost nothing; a constant batch costs the whole variance term
    assert float(variance_covariance(torch.from_numpy(rng.normal(0, 3, (4000, 4))))) < 0.01
    assert float(variance_covariance(torch.zeros(6, 8))) == pytest.approx(0.99, abs=1e-3)
    with pytest.raises(ValueError, match="batch of 2"):
        variance_covariance(torch.zeros(1, 8))


def cohort_z(run, cases: torch.Tensor) -> torch.Tensor:
    """The run's z of ``cases`` (N, 1, D, H, W) with batch statistics (train mode), no gradient."""
    model = load_model(run)
    model.train()
    with torch.no_grad():
        return model.encoder(cases)


@pytest.mark.learning
def test_the_term_keeps_the_dimensions_apart_where_plain_3dsiam_collapses_them(tmp_path, torch_threads):
    cache = make_cache(tmp_path / "cache", cases=12)
    cases = torch.from_numpy(np.asarray(load_prepared(cache).images, dtype=np.float32))
    z = {}
    for weight in (0.0, 1.0):
        cfg = C.TrainConfig(
            mode="none",
            iterations=20,
            batch_size=4,
            optimizer="adam",
            lr=1e-2,
            schedule="constant",
            lr_warmup=0,
            health_cases=0,
            device="cpu",
            vc_weight=weight,
        )
        run_to_end(train(cache, tmp_path / f"run{weight}", cfg, C.AugmentConfig()))
        z[weight] = cohort_z(tmp_path / f"run{weight}", cases)
    plain, with_term = z[0.0], z[1.0]
    # measured (1 and 2 threads): term 600-1200 vs 0.8; effective rank 1.7 vs 4.1-4.4 of 11
    assert float(variance_covariance(with_term)) < 0.1 * float(variance_covariance(plain))
    assert effective_rank(with_term.numpy()) > 1.5 * effective_rank(plain.numpy())


def test_rubik_refuses_the_term(tmp_path):
    cache = make_cache(tmp_path / "cache", cases=4, size=28)
    cfg = C.TrainConfig(method="rubik", mode="none", iterations=1, batch_size=2, vc_weight=1.0, device="cpu")
    with pytest.raises(ValueError, match="method=siam"):
        run_to_end(train(cache, tmp_path / "run", cfg, C.AugmentConfig()))
    assert not (tmp_path / "run").exists()


def test_runs_recorded_before_the_new_settings_resume_and_keep_their_stage_keys():
    for section, cfg, new in (
        ("train", C.TrainConfig(), ("vc_weight",)),
        ("augment", C.AugmentConfig(), ("zoom", "zoom_p")),
    ):
        given = C.to_dict(cfg)
        saved = {k: v for k, v in given.items() if k not in new}
        assert _config_mismatch(saved, given, section) is None
        assert f"{section}.{new[-1]}" in _config_mismatch(saved, {**given, new[-1]: 0.5}, section)
        assert not set(new) & set(C.key_dict(cfg))  # the pipeline's stage keys are as before
    assert _train_key(C.TrainConfig(vc_weight=0.5))["vc_weight"] == 0.5
    assert C.key_dict(C.AugmentConfig(zoom_p=0.5))["zoom_p"] == 0.5


def test_cli_trains_with_the_term_and_the_zoom_crop_and_records_both(tmp_path):
    cache = make_cache(tmp_path / "cache", cases=4)
    run = tmp_path / "run"
    args = ["train", str(cache), "--out", str(run), "--iterations", "2", "--batch-size", "2"]
    args += ["--health-cases", "0", "--device", "cpu", "--vc-weight", "0.5", "--zoom-p", "1", "--zoom", "0.6", "0.9"]
    assert main(args) == 0
    saved = RunFolder(run).config()["config"]
    assert saved["train"]["vc_weight"] == 0.5
    assert saved["augment"]["zoom"] == [0.6, 0.9] and saved["augment"]["zoom_p"] == 1.0

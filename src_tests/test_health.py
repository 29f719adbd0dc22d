"""The representation-health figures, the monitor's warnings, and the engine's health checks.

The engine tests train the real 3DSiam on a tiny synthetic cache (27³, a few steps): one
run made to collapse (SimSiam without its stop-gradient, the test-only switch) must be
flagged within a few checks, and a healthy run of the same size must not be.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_train_engine import make_cache

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core import health
from napari_ssl_radiomics.core.events import drive
from napari_ssl_radiomics.core.health import (
    HEALTH_COLUMNS,
    PATIENCE,
    PROBE_CAVEAT,
    Health,
    HealthMonitor,
    effective_rank,
    linear_probe,
    norm_std,
    probe_set,
    top_pc_share,
)
from napari_ssl_radiomics.core.runs import HEALTH_CSV
from napari_ssl_radiomics.core.train import train


def test_figures_tell_a_spread_cloud_from_a_line():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(300, 32))
    line = rng.normal(size=(300, 1)) * rng.normal(size=(1, 32)) + rng.normal(size=(1, 32))
    assert effective_rank(cloud) > 25  # isotropic: close to the 32 dimensions
    assert effective_rank(line) < 1.01 and top_pc_share(line) > 0.999
    assert top_pc_share(cloud) < 0.1
    assert norm_std(np.ones((10, 8))) == pytest.approx(0.0, abs=1e-12)
    assert norm_std(cloud) > 0.1
    with pytest.raises(ValueError, match="embeddings"):
        effective_rank(np.ones((1, 4)))


def test_linear_probe_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(1)
    y = np.array(["a"] * 60 + ["b"] * 20)
    x = rng.normal(size=(80, 16))
    signal = x.copy()
    signal[:, 0] += 3.0 * (y == "b")
    auc, bacc = linear_probe(signal, y)
    assert auc > 0.95 and bacc > 0.65
    noise_auc, _ = linear_probe(x, y)
    assert noise_auc < auc - 0.2
    assert all(math.isnan(v) for v in linear_probe(x[:8], y[:8]))  # too few of a class for 5 folds


def test_probe_set_is_fixed_and_keeps_the_minority():
    labels = ["0"] * 900 + ["1"] * 100
    a, b = probe_set(labels, 256, seed=3), probe_set(labels, 256, seed=3)
    assert np.array_equal(a, b) and len(set(a.tolist())) == len(a)
    share = np.mean([labels[i] == "1" for i in a])
    assert 0.08 < share < 0.12
    assert np.array_equal(probe_set(labels[:50], 256, seed=3), np.arange(50))


def test_monitor_warns_after_patience_checks_once():
    mon = HealthMonitor()
    assert mon.update(Health(0, 60.0, 0.1, 0.05, probe_auc=0.80)) == []
    for i in range(1, PATIENCE):
        assert mon.update(Health(i, 1.5, 0.99, 0.001, probe_auc=0.60)) == []
    warnings = mon.update(Health(PATIENCE, 1.5, 0.99, 0.001, probe_auc=0.60))
    assert len(warnings) == 1  # one warning, from the label-free figures; the probe adds none
    assert "collapsing" in warnings[0] and "effective rank" in warnings[0] and "--lr" in warnings[0]
    assert "first principal direction" in warnings[0] and "spread" in warnings[0] and "probe" not in warnings[0]
    assert mon.update(Health(PATIENCE + 1, 1.5, 0.99, 0.001, probe_auc=0.60)) == []  # once per run
    # a healthy check resets the count; state survives a round trip (checkpoints)
    mon = HealthMonitor.from_state(HealthMonitor().state())
    mon.update(Health(0, 60.0, 0.1, 0.05))
    for i in range(1, 10):
        low = i % PATIENCE != 0
        assert mon.update(Health(i, 1.5 if low else 50.0, 0.5, 0.05)) == []
    assert list(mon.frame().columns) == HEALTH_COLUMNS and len(mon.frame()) == 10


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), cases=15)  # 5 large, 10 small: the probe runs


def _run(cache, out, stop_gradient: bool, **kw):
    cfg = TrainConfig(
        mode="none", batch_size=4, iterations=8, checkpoint_every=2, device="cpu", seed=0, lr_warmup=0, **kw
    )
    events = []
    drive(train(cache, out, cfg, AugmentConfig(), stop_gradient=stop_gradient), events.append)
    return events


@pytest.mark.learning
def test_a_run_without_stop_gradient_is_flagged_within_a_few_checks(cache, tmp_path):
    events = _run(cache, tmp_path / "collapse", stop_gradient=False, lr=0.5, schedule="constant")
    checks = [e for e in events if e.kind == "health"]
    assert [e.iteration for e in checks] == [0, 2, 4, 6, 8]
    warnings = [e for e in events if e.kind == "warning" and "collapsing" in e.message]
    assert warnings, [e.health["effective_rank"] for e in checks]
    assert warnings[0].iteration <= 8 and "effective rank" in warnings[0].message
    assert checks[-1].health["effective_rank"] < checks[0].health["effective_rank"] / 5


@pytest.mark.learning
def test_a_healthy_run_is_not_flagged_and_its_checks_are_recorded(cache, tmp_path):
    events = _run(cache, tmp_path / "healthy", stop_gradient=True, lr=0.002)  # a gentle run keeps its rank
    checks = [e for e in events if e.kind == "health"]
    shown = [e for e in events if e.kind != "progress"]  # the check's k-of-n events come before it
    assert shown[0].kind == "health" and shown[0].iteration == 0  # the untrained encoder first
    assert any(e.kind == "progress" and "of" in e.message for e in events[: events.index(shown[0])])
    assert not [e for e in events if e.kind == "warning"], [e.message for e in events if e.kind == "warning"]
    assert set(checks[0].health) == {
        "effective_rank",
        "top_pc_share",
        "norm_std",
        "probe_auc",
        "probe_balanced_accuracy",
    }
    assert "labels" not in checks[0].message or "untrained" in checks[0].message
    steps = [e for e in events if e.kind == "step"]
    assert steps[-1].message.startswith("loss ") and ", rank " in steps[-1].message
    frame = pd.read_csv(tmp_path / "healthy" / HEALTH_CSV)
    assert list(frame.columns) == HEALTH_COLUMNS and frame["iteration"].tolist() == [0, 2, 4, 6, 8]
    np.testing.assert_allclose(frame["effective_rank"], [e.health["effective_rank"] for e in checks])
    title, text, _, table = health.report_section({"none": tmp_path / "healthy"}, {"none": "3DSiam"})
    assert table["3DSiam row"].tolist() == ["3DSiam"] and table["steps"].tolist() == [8]
    assert table["rank untrained"].iloc[0] == round(frame["effective_rank"].iloc[0], 3)
    assert table["probe AUC trained"].iloc[0] == round(frame["probe_auc"].iloc[-1], 3)
    assert "never for training" in text
    assert PROBE_CAVEAT in text and "optimistic" in text  # tuning on the probe inflates Table 2
    # the report writes it as a pipe table, without pandas' optional tabulate
    from napari_ssl_radiomics.core.report import markdown_table

    rendered = markdown_table(table).splitlines()
    assert rendered[0].startswith("| 3DSiam row | steps | rank untrained |") and rendered[2].startswith(
        "| 3DSiam | 8 | "
    )
    assert health.report_section({"none": tmp_path / "nothing"}) is None


def test_a_falling_probe_with_healthy_label_free_figures_gives_no_warning():
    """The probe sees every label (test folds included): acting on it would tune on the test set."""
    mon = HealthMonitor()
    mon.update(Health(0, 60.0, 0.3, 0.05, probe_auc=0.80, probe_balanced_accuracy=0.7))
    for i in range(1, 3 * PATIENCE):
        assert mon.update(Health(i, 55.0, 0.3, 0.05, probe_auc=0.55, probe_balanced_accuracy=0.5)) == []
    frame = mon.frame()  # still recorded (health.csv), and shown
    assert frame["probe_auc"].tolist() == [0.80] + [0.55] * (3 * PATIENCE - 1)


@pytest.mark.parametrize(
    "figure, healthy, collapsed, words",
    [
        ("effective_rank", 60.0, 2.0, "effective rank"),
        ("top_pc_share", 0.3, 0.995, "first principal direction"),
        ("norm_std", 0.05, 0.001, "spread"),
    ],
)
def test_each_label_free_figure_alone_can_warn(figure, healthy, collapsed, words):
    base = {"effective_rank": 60.0, "top_pc_share": 0.3, "norm_std": 0.05}
    mon = HealthMonitor()
    mon.update(Health(0, **base, probe_auc=0.7))
    out = []
    for i in range(1, PATIENCE + 1):  # the probe rises: it cannot hold the warning back either
        out += mon.update(Health(i, **{**base, figure: collapsed}, probe_auc=0.9))
    assert len(out) == 1 and "collapsing" in out[0] and words in out[0], out
    ok = HealthMonitor()
    ok.update(Health(0, **base))
    assert all(ok.update(Health(i, **{**base, figure: healthy})) == [] for i in range(1, 2 * PATIENCE))


def test_a_checkpoint_of_the_earlier_monitor_resumes():
    old = {"checks": [], "low_rank_run": 2, "low_probe_run": 1, "warned": ["probe"]}
    mon = HealthMonitor.from_state(old)
    assert (mon.collapse_run, mon.warned) == (2, [])
    assert HealthMonitor.from_state({**old, "warned": ["rank", "probe"]}).warned == ["collapse"]
    assert HealthMonitor.from_state(mon.state()) == mon


def test_the_collapse_monitor_warns_once_and_resumes_from_either_checkpoint_format():
    from napari_ssl_radiomics.core.monitors import COLLAPSE_STEPS, CollapseMonitor

    mon = CollapseMonitor()
    out = [text for _ in range(COLLAPSE_STEPS + 5) for text in mon.update(0.0)]
    assert len(out) == 1 and "collapsing" in out[0]
    assert mon.update(0.06) == [] and mon.run == 0  # a healthy step resets the count
    assert CollapseMonitor.from_checkpoint({"collapse": mon.state()}) == mon
    # format 2 kept the counters at the checkpoint's top level
    assert CollapseMonitor.from_checkpoint({"collapse_run": 7, "warned": True}) == CollapseMonitor(7, True)


def test_verdict_in_words_from_the_label_free_figures_only():
    from napari_ssl_radiomics.core.health import BELOW, COLLAPSING, HEALTHY, verdict

    untrained = {"effective_rank": 29.5, "top_pc_share": 0.43, "probe_auc": 0.75}
    assert verdict(untrained, untrained)[0] == ""  # the baseline itself
    assert verdict({"effective_rank": 28.0, "top_pc_share": 0.45}, None)[0] == ""
    assert verdict({"effective_rank": 27.0, "top_pc_share": 0.47}, untrained)[0] == HEALTHY
    # the example: the rank fell a little, the first PC took much more of the variance
    word, why = verdict({"effective_rank": 24.9, "top_pc_share": 0.61, "probe_auc": 0.86}, untrained)
    assert word == BELOW and "24.9" in why and "29.5" in why
    assert verdict({"effective_rank": 1.3, "top_pc_share": 0.6}, untrained)[0] == COLLAPSING
    assert verdict({"effective_rank": 20.0, "top_pc_share": 0.99}, untrained)[0] == COLLAPSING
    # the probe never decides: a perfect AUC does not rescue a collapsed representation
    assert verdict({"effective_rank": 1.3, "top_pc_share": 0.99, "probe_auc": 1.0}, untrained)[0] == COLLAPSING

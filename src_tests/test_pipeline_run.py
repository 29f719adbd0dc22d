"""`ssl-radiomics run`: one config, every stage cached, a killed run continues where it stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from napari_ssl_radiomics import config as C
from napari_ssl_radiomics.cli import main
from napari_ssl_radiomics.cli.pipeline import parse_sweep


def tiny_config(out: Path) -> C.PipelineConfig:
    """A cohort and schedule small enough for seconds, big enough for 3 folds."""
    cfg = C.PipelineConfig(out=str(out), modes=("none", "se"), supervised=False)
    cfg.sample = C.SampleConfig(cases=16, size=30, seed=3)
    cfg.prepare = C.PrepareConfig(size=28)
    cfg.train = C.TrainConfig(iterations=8, checkpoint_every=2, batch_size=4, pool=12, device="cpu", seed=5)
    cfg.radiomics = C.RadiomicsConfig(jobs=1)
    cfg.evaluate = C.EvaluateConfig(folds=3, label_fractions=(1.0,), group="")
    return cfg


def write_config(cfg: C.PipelineConfig, path: Path) -> Path:
    path.write_text(C.dump_yaml(cfg), encoding="utf-8")
    return path


def run_cli(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_ssl_radiomics", "run", str(config)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def kill_during_training(config: Path, out: Path) -> None:
    """Start a run and SIGKILL it once the second mode has written a checkpoint."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_ssl_radiomics", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = out / "runs" / "se" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run ended or stalled before training the second mode"
    assert not (out / "features" / "ssl_se.csv").exists(), "the kill came too late to interrupt training"


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_stages_and_equals_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    config = write_config(tiny_config(killed), tmp_path / "killed.yaml")
    kill_during_training(config, killed)
    finished_before = {
        p: p.stat().st_mtime_ns
        for p in [
            killed / "sample" / "manifest.csv",
            killed / "cache" / "cases.csv",
            killed / "runs" / "none" / "checkpoint.pt",
        ]
    }

    again = run_cli(config)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("cohort", "prepare", "train:none", "embed:none"):
        assert f"{stage}: unchanged, reused" in again.stdout + again.stderr, stage
    assert {p: p.stat().st_mtime_ns for p in finished_before} == finished_before

    whole = tmp_path / "whole"
    done = run_cli(write_config(tiny_config(whole), tmp_path / "whole.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("features/ssl_none.csv", "features/ssl_se.csv", "features/trad.csv", "evaluation/results.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(killed / name), pd.read_csv(whole / name), obj=name)
    loss = [pd.read_csv(d / "runs" / "se" / "history.csv")["loss"] for d in (killed, whole)]
    pd.testing.assert_series_equal(*loss)

    # What a user gets: the config it ran with, the versions, the report.
    assert C.load_yaml(killed / "config.yaml") == tiny_config(killed)
    assert "torch" in (killed / "versions.json").read_text(encoding="utf-8")
    report = (killed / "report.html").read_text(encoding="utf-8")
    assert "3DSiam+SE" in report and "data:image/png;base64," in report
    # beside Table 2: each 3DSiam row's encoder, untrained against trained (issue 9)
    table2 = (killed / "report.md").read_text(encoding="utf-8").split("## Table 2", 1)[1].split("\n## ", 1)[0]
    assert "rank untrained" in table2 and "probe AUC trained" in table2
    # and what the project measured of the question the table asks (issue 21)
    assert "at the paper's budget of 2000 steps no self-supervised encoder beat an untrained one" in table2
    assert all(re.search(rf"\|\s*{re.escape(row)}\s*\|\s*8\s*\|", table2) for row in ("3DSiam", "3DSiam+SE"))


def test_config_command_prints_a_loadable_default(tmp_path, capsys):
    assert main(["config", "--out", str(tmp_path / "c.yaml")]) == 0
    assert C.load_yaml(tmp_path / "c.yaml") == C.PipelineConfig()


def test_run_names_a_missing_config_and_how_to_make_one(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "ssl-radiomics config --out" in capsys.readouterr().err


def test_sweep_accepts_the_papers_two_sweeps_only():
    assert parse_sweep(["clusters=0,2,3", "batch_size=2,4"]) == [("clusters", [0, 2, 3]), ("batch_size", [2, 4])]
    with pytest.raises(ValueError, match="clusters=0,2,3,4,5"):
        parse_sweep(["lr=1,2"])


@pytest.mark.slow
def test_ids_that_read_as_missing_survive_run_and_a_changed_config_names_a_real_fix(tmp_path):
    """IDs NA, nan and None are cases, from the manifest to the report (issue 11)."""
    from napari_ssl_radiomics.core.pipeline import run_all
    from napari_ssl_radiomics.core.sample import write_sample_cohort

    cfg = tiny_config(tmp_path / "out")
    manifest = write_sample_cohort(tmp_path / "cohort", cfg.sample)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    odd = ["NA", "nan", "None"]
    table.loc[: len(odd) - 1, "ID"] = odd
    table.to_csv(manifest, index=False)
    cfg.cohort = str(manifest)
    cfg.modes = ("none",)
    cfg.train = C.TrainConfig(iterations=2, checkpoint_every=2, batch_size=4, device="cpu", seed=5)

    result = run_all(cfg)
    assert result.report is not None and result.report.exists()
    out = tmp_path / "out"
    for name in ("cache/cases.csv", "features/trad.csv", "features/ssl_none.csv", "features/features.csv"):
        ids = set(pd.read_csv(out / name, dtype=str, keep_default_na=False)["ID"])
        assert set(odd) <= ids, name
    predictions = pd.read_csv(out / "evaluation" / "predictions.csv", dtype=str, keep_default_na=False)
    assert set(odd) <= set(predictions["ID"])

    # After a config edit, the message names something `run` can do (it has no --resume).
    cfg.train = C.TrainConfig(iterations=2, checkpoint_every=2, batch_size=4, device="cpu", seed=6)
    with pytest.raises(ValueError) as err:
        run_all(cfg)
    assert "delete" in str(err.value) and "--resume" not in str(err.value)


def grouped_by_centre(tmp_path: Path) -> tuple[C.PipelineConfig, Path]:
    """A quick config on a 20-case sample cohort whose manifest also names the centre as the Group."""
    from napari_ssl_radiomics.core.sample import write_sample_cohort

    cfg = tiny_config(tmp_path / "out")
    cfg.sample = C.SampleConfig(cases=20, size=24, seed=3)
    cfg.prepare = C.PrepareConfig(size=16)
    cfg.evaluate = C.EvaluateConfig(label_fractions=(1.0,))  # the default: 5 folds, grouped by Group
    manifest = write_sample_cohort(tmp_path / "cohort", cfg.sample)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table.assign(Group=table["Centre"]).to_csv(manifest, index=False)
    cfg.cohort = str(manifest)
    return cfg, manifest


def test_the_sample_cohort_gets_the_papers_stratified_5_folds(tmp_path):
    """Its site is a Centre column, not a Group: `run` used to turn it into 3-fold leave-centre-out CV (issue 17)."""
    import warnings

    from napari_ssl_radiomics.core import pipeline
    from napari_ssl_radiomics.core.preprocess import prepare_all
    from napari_ssl_radiomics.core.sample import write_sample_cohort

    cfg = C.PipelineConfig(out=str(tmp_path / "out"))  # the default evaluation: 5 folds, grouped by Group
    cfg.sample = C.SampleConfig(cases=20, size=24, seed=3)
    manifest = write_sample_cohort(tmp_path / "out" / "sample", cfg.sample)
    assert "Group" not in pd.read_csv(manifest, nrows=0).columns
    prepare_all(manifest, C.PrepareConfig(size=16), tmp_path / "out" / "cache")
    ids = list(pd.read_csv(manifest, dtype=str)["ID"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "only 3 groups" note, no fold count changed
        folds = pd.read_csv(pipeline._folds_stage(cfg, tmp_path / "out", ids))
    assert folds["fold"].nunique() == 5 and len(folds) == 20


def test_run_refuses_fewer_groups_than_folds_before_training(tmp_path):
    from napari_ssl_radiomics.core.pipeline import run_all

    cfg, _ = grouped_by_centre(tmp_path)
    with pytest.raises(ValueError, match=r"'Group' holds only 3 groups, fewer than the 5 folds.*--folds 3;"):
        run_all(cfg)
    out = tmp_path / "out"
    assert (out / "cache" / "cases.csv").exists() and not (out / "runs").exists()  # refused before training
    # a group column that `run` cannot read is refused at once, not ignored (folds silently not grouped)
    cfg.evaluate = C.EvaluateConfig(label_fractions=(1.0,), group="Centre")
    with pytest.raises(ValueError, match=r"evaluate.group is 'Centre', but `run` reads .* manifest's 'Group' column"):
        run_all(cfg)

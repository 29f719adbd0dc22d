"""`ssl-radiomics train` / `embed` in-process: a run, a resume, Ctrl-C, a clear refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_train_engine import assert_ran_paper_with_sgd, make_cache  # the shared synthetic-cache fixture

from napari_ssl_radiomics.cli import main
from napari_ssl_radiomics.core.train import CHECKPOINT, CONFIG_JSON, HISTORY_CSV

FAST = ["--device", "cpu", "--batch-size", "4", "--seed", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache"), cases=8)


def test_train_resume_and_embed(cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(cache),
                "--out",
                str(run),
                "--mode",
                "re",
                "--iterations",
                "2",
                "--clusters",
                "2",
                "--warmup-epochs",
                "0",
                "--no-progress",
                *FAST,
            ]
        )
        == 0
    )
    assert len(pd.read_csv(run / HISTORY_CSV)) == 2
    # the health checks: step 0 (untrained) and the end, in health.csv and on the terminal
    assert pd.read_csv(run / "health.csv")["iteration"].tolist() == [0, 2]
    captured = capsys.readouterr()
    assert "health at step 0: rank" in captured.err and "(untrained encoder)" in captured.err
    assert "representation: effective rank" in captured.out and "untrained encoder" in captured.out
    # --resume reuses the run's settings; only --iterations is given
    assert main(["train", str(cache), "--out", str(run), "--resume", "--iterations", "3", "--no-progress"]) == 0
    history = pd.read_csv(run / HISTORY_CSV)
    assert history["iteration"].tolist() == [1, 2, 3] and set(history["phase"]) == {"re"}
    out = tmp_path / "features" / "ssl_features.csv"
    assert main(["embed", str(run), str(cache), "--out", str(out), "--device", "cpu"]) == 0
    table = pd.read_csv(out, dtype={"ID": str})
    assert list(table.columns) == ["ID"] + [f"ssl_{i:03d}" for i in range(256)]
    assert table["ID"].tolist() == [f"case{i:02d}" for i in range(8)]
    # a resume with another setting is refused with the setting named, exit status 2
    capsys.readouterr()
    assert main(["train", str(cache), "--out", str(run), "--resume", "--lr", "0.1", "--no-progress"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_exits_130(cache, tmp_path, capsys):
    run = tmp_path / "run"

    def interrupt() -> None:  # Ctrl-C once training has started (config.json is written first)
        deadline = time.monotonic() + 120
        while not (run / CONFIG_JSON).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    rc = main(["train", str(cache), "--out", str(run), "--mode", "none", "--iterations", "500", "--no-progress", *FAST])
    thread.join()
    assert rc == 130
    err = capsys.readouterr().err
    assert "--resume" in err and str(run) in err
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert 0 <= ckpt["iteration"] < 500
    assert len(pd.read_csv(run / HISTORY_CSV)) == ckpt["iteration"]


def test_recipe_paper_flag_and_an_explicit_setting(cache, tmp_path):
    run = tmp_path / "paper"
    args = ["train", str(cache), "--out", str(run), "--recipe", "paper", "--iterations", "1", "--no-progress"]
    assert main([*args, "--health-cases", "0", *FAST]) == 0
    saved = json.loads((run / CONFIG_JSON).read_text(encoding="utf-8"))["config"]["train"]
    # the paper's optimiser and schedule; --batch-size 4 was given, so it wins over the preset's 6
    assert (saved["recipe"], saved["optimizer"], saved["lr"], saved["schedule"]) == ("paper", "adam", 0.01, "constant")
    assert saved["batch_size"] == 4 and not (run / "health.csv").exists()


def test_an_explicit_flag_beats_the_recipe_even_at_the_default_value(cache, tmp_path):
    """`--recipe paper --optimizer sgd` trains SGD (the default's value, given explicitly), and resumes."""
    run = tmp_path / "sgd"
    args = ["train", str(cache), "--out", str(run), "--recipe", "paper", "--optimizer", "sgd", "--no-progress"]
    assert main([*args, "--iterations", "1", "--health-cases", "0", *FAST]) == 0
    assert_ran_paper_with_sgd(run)
    # the resume reads config.json back (every setting given) and the engine keeps it: no mismatch
    assert main(["train", str(cache), "--out", str(run), "--resume", "--iterations", "2", "--no-progress"]) == 0
    assert len(pd.read_csv(run / HISTORY_CSV)) == 2


def test_the_probe_caveat_is_printed_with_the_probe(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache", cases=15)  # 5 large, 10 small: the probe runs
    run = tmp_path / "run"
    args = ["train", str(cache), "--out", str(run), "--mode", "none", "--iterations", "1", "--no-progress", *FAST]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "linear-probe AUC" in out
    assert (
        "the test folds of the cross-validation included" in out
        and "cross-validated figures (Table 2) optimistic" in out
    )


def test_sigterm_saves_the_steps_done_and_resume_continues(cache, tmp_path):
    """SIGTERM (``timeout``, SLURM, Kubernetes) is handled like Ctrl-C: the steps since the
    last checkpoint are saved, the exit says so in one line, and --resume continues."""
    run = tmp_path / "run"
    every = 1000  # no periodic checkpoint before the signal: whatever is saved, SIGTERM saved
    args = ["train", str(cache), "--out", str(run), "--mode", "none", "--iterations", "5000"]
    args += ["--checkpoint-every", str(every), "--no-progress", *FAST]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_ssl_radiomics", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        for line in proc.stderr:  # the untrained encoder's check comes just before the first step
            if "health at step 0" in line:
                break
        time.sleep(3)  # a few steps
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert "stopped by SIGTERM at step" in err and "--resume" in err
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    done = ckpt["iteration"]
    assert 0 < done < every  # more than the last checkpoint_every multiple (0)
    assert len(pd.read_csv(run / HISTORY_CSV)) == done
    assert (
        main(["train", str(cache), "--out", str(run), "--resume", "--iterations", str(done + 2), "--no-progress"]) == 0
    )
    assert pd.read_csv(run / HISTORY_CSV)["iteration"].tolist() == list(range(1, done + 3))

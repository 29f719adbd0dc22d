"""The command line over a table of bad inputs, as a new user would meet them.

Each row runs ``ssl-radiomics`` as a subprocess in one small working folder (a 6-case
synthetic cohort, its 28³ cache and a one-step training run, made once) and checks:
the exit status, that the message's first line (``ssl-radiomics <command>: error: ...``)
says what is wrong, that no traceback is printed, and that nothing else in the folder
changed (no half-made output folder, no file touched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_ssl_radiomics.config import AugmentConfig, PrepareConfig, SampleConfig, TrainConfig
from napari_ssl_radiomics.core.events import drive
from napari_ssl_radiomics.core.preprocess import prepare_all
from napari_ssl_radiomics.core.sample import write_sample_cohort
from napari_ssl_radiomics.core.train import train

HOLD = """
import sys, time
from napari_ssl_radiomics.core.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_bad")
    manifest = write_sample_cohort(root / "cohort", SampleConfig(cases=6, size=32, seed=1))
    prepare_all(manifest, PrepareConfig(size=28), root / "cache")
    prepare_all(manifest, PrepareConfig(size=32), root / "cache32")  # the same cases, another crop size
    prepare_all(manifest, PrepareConfig(size=28, spacing=1.5), root / "coarse")  # same size, another spacing
    (root / "run").mkdir()
    (root / "run" / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a kill during a write
    drive(
        train(
            root / "cache",
            root / "run",
            TrainConfig(mode="none", iterations=1, batch_size=2, device="cpu", seed=0),
            AugmentConfig(),
        )
    )
    data = (root / "run" / "checkpoint.pt").read_bytes()
    (root / "broken.pt").write_bytes(data[: len(data) // 2])  # a copy cut short
    (root / "header.csv").write_text("ID,Image,Mask,Label\n", encoding="utf-8")
    (root / "empty.yaml").write_text("# only a comment\n", encoding="utf-8")
    (root / "syntax.yaml").write_text("train:\n  lr: 0.1\n   seed: 2\n", encoding="utf-8")
    (root / "modes.yaml").write_text("cohort: cohort/manifest.csv\nmodes: [none, foo]\n", encoding="utf-8")
    (root / "ok.yaml").write_text("cohort: cohort/manifest.csv\n", encoding="utf-8")
    (root / "afile").write_text("not a folder\n", encoding="utf-8")
    (root / "adir").mkdir()
    rows = [f"c{i},{'No' if i < 8 else 'no' if i < 12 else 'yes'},{i % 5},{(i * 7) % 11}" for i in range(24)]
    (root / "cased.csv").write_text("ID,Label,f0,f1\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_train_removes_the_temporary_file_of_a_killed_checkpoint_write(work):
    assert not list((work / "run").glob(".*.tmp"))
    assert (work / "run" / "checkpoint.pt").exists()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder below ``root``: (kind, size, mtime) by relative path."""
    out = {}
    for path in root.rglob("*"):
        st = path.lstat()
        out[path.relative_to(root).as_posix()] = (path.is_dir(), 0 if path.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def error_line(stderr: str, command: str) -> str:
    """The first line of our message (progress bars write '\\r' lines before it)."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines()]
    prefix = f"ssl-radiomics {command}: error:"
    return next((ln for ln in lines if ln.startswith(prefix)), "")


M = "cohort/manifest.csv"
# (name, arguments, the words the first line of the message must hold)
BAD = [
    ("manifest with only a header", ["prepare", "header.csv", "--out", "c2"], ["header.csv", "no cases"]),
    ("prepare --out is a file", ["prepare", M, "--out", "afile"], ["afile", "is a file, not a folder"]),
    ("prepare --mask-label not a label", ["prepare", M, "--out", "c2", "--mask-label", "tumour"], ["mask_label"]),
    ("prepare --mask-label 0", ["prepare", M, "--out", "c2", "--mask-label", "0"], ["label 0", "the background"]),
    ("prepare --size 0", ["prepare", M, "--out", "c2", "--size", "0"], ["PrepareConfig.size", "at least"]),
    ("radiomics --out is a folder", ["radiomics", M, "--out", "adir"], ["adir", "is a folder"]),
    ("radiomics --bin-width 0", ["radiomics", M, "--out", "t.csv", "--bin-width", "0"], ["bin_width", "greater"]),
    ("radiomics --bin-width -5", ["radiomics", M, "--out", "t.csv", "--bin-width", "-5"], ["bin_width"]),
    ("evaluate --folds 1", ["evaluate", M, "--out", "ev", "--folds", "1"], ["EvaluateConfig.folds"]),
    ("evaluate --repeats 0", ["evaluate", M, "--out", "ev", "--repeats", "0"], ["EvaluateConfig.repeats"]),
    ("evaluate label fraction 0", ["evaluate", M, "--out", "ev", "--label-fractions", "0"], ["label_fractions"]),
    ("evaluate label fraction 1.5", ["evaluate", M, "--out", "ev", "--label-fractions", "1.5"], ["label_fractions"]),
    ("evaluate --out is a file", ["evaluate", M, "--out", "afile"], ["afile", "is a file"]),
    ("run: empty YAML", ["run", "empty.yaml"], ["empty.yaml", "no settings", "ssl-radiomics config --out"]),
    ("run: YAML syntax error", ["run", "syntax.yaml"], ["syntax.yaml", "line 3"]),
    ("run: unknown mode", ["run", "modes.yaml"], ["PipelineConfig.modes", "'foo'"]),
    ("run --out is a file", ["run", "ok.yaml", "--out", "afile"], ["afile", "is a file"]),
    ("train --iterations -3", ["train", "cache", "--out", "r2", "--iterations", "-3"], ["TrainConfig.iterations"]),
    ("train --batch-size 0", ["train", "cache", "--out", "r2", "--batch-size", "0"], ["TrainConfig.batch_size"]),
    ("train --batch-size 50", ["train", "cache", "--out", "r2", "--batch-size", "50"], ["larger than the cohort"]),
    ("train --lr 0", ["train", "cache", "--out", "r2", "--lr", "0"], ["TrainConfig.lr"]),
    ("train --checkpoint-every 0", ["train", "cache", "--out", "r2", "--checkpoint-every", "0"], ["checkpoint_every"]),
    ("train --out is a file", ["train", "cache", "--out", "afile", "--batch-size", "2"], ["afile"]),
    ("embed a truncated checkpoint", ["embed", "broken.pt", "cache", "--out", "e.csv"], ["broken.pt", "truncated"]),
    # the output is checked before the checkpoint is even read, so no encoding is wasted
    ("embed --out is a folder", ["embed", "broken.pt", "cache", "--out", "adir"], ["adir", "is a folder"]),
    # checked before any work: a swept value, a resume's recipe, a boolean flag's value
    (
        "run --sweep batch_size=1",
        ["run", "ok.yaml", "--out", "o2", "--sweep", "batch_size=1"],
        ["batch_size=1", "at least 2"],
    ),
    (
        "resume with another recipe",
        ["train", "cache", "--out", "run", "--resume", "--recipe", "paper"],
        ["train.recipe", "'default'", "'paper'"],
    ),
    (
        "train --out-bn maybe",
        ["train", "cache", "--out", "r2", "--out-bn", "maybe"],
        ["--out-bn", "'maybe'", "true or false"],
    ),
    # a run knows what it was trained on: another preparation is refused, naming both values
    ("embed a cache of another size", ["embed", "run", "cache32", "--out", "e.csv"], ["cache32", "size = 32", "28"]),
    ("embed a cache of another spacing", ["embed", "run", "coarse", "--out", "e.csv"], ["spacing = 1.5", "1.0"]),
    (
        "resume on a cache of another size",
        ["train", "cache32", "--out", "run", "--resume", "--iterations", "2"],
        ["cache32", "size = 32", "size = 28", "resume with the cache"],
    ),
    (
        "evaluate labels No and no",
        ["evaluate", "cased.csv", "--out", "ev"],
        ["differ only in case", "'No' (8 cases) and 'no' (4 cases)"],
    ),
    # a scheduler address Dask would reject is refused before any client exists (no lingering, no __del__ noise)
    (
        "prepare --scheduler not a url",
        ["prepare", M, "--out", "c2", "--scheduler", "not a url!!"],
        ["'not a url!!'", "not a Dask scheduler address", "tcp://127.0.0.1:8786"],
    ),
    (
        "radiomics --scheduler http://",
        ["radiomics", M, "--out", "t.csv", "--scheduler", "http://127.0.0.1:8786"],
        ["http:// is not a protocol Dask speaks", "PROTOCOL://HOST:PORT"],
    ),
]


def run_cli(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_ssl_radiomics", *args],
        cwd=root,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
@pytest.mark.parametrize("name,args,words", BAD, ids=[row[0] for row in BAD])
def test_bad_input_gives_one_clear_line_and_changes_nothing(work, name, args, words):
    before = snapshot(work)
    done = run_cli(work, args)
    line = error_line(done.stderr, args[0])
    assert done.returncode == 2, f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for word in words:
        assert word in line, f"{name}: {word!r} not in {line!r}"
    assert snapshot(work) == before, f"{name}: the folder changed"


@pytest.mark.slow
def test_embed_on_the_runs_preparation_records_the_checkpoint_step(work, tmp_path):
    done = run_cli(work, ["embed", "run", "cache", "--out", str(tmp_path / "e.csv"), "--no-progress"])
    assert done.returncode == 0, done.stderr[-2000:]
    sidecar = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    assert sidecar["checkpoint_step"] == 1  # the one-step run of the fixture
    assert sidecar["checkpoint"].endswith("checkpoint.pt") and len(sidecar["checkpoint_sha256"]) == 64
    assert sidecar["table"]["rows"] == 6


@pytest.mark.slow
def test_train_into_a_folder_in_use_is_refused_at_once(work):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(work)
        done = run_cli(work, ["train", "cache", "--out", "run", "--resume", "--iterations", "3"])
        line = error_line(done.stderr, "train")
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"run is in use by PID {holder.pid} on host" in line
        assert snapshot(work) == before
    finally:
        holder.kill()
        holder.wait()
    (work / "run" / ".ssl-radiomics.lock").unlink(missing_ok=True)  # what the killed holder left


@pytest.mark.slow
def test_prepare_into_a_cache_in_use_is_refused(work):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work / "cache")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(work)
        done = run_cli(work, ["prepare", M, "--out", "cache", "--size", "32"])
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"cache is in use by PID {holder.pid}" in error_line(done.stderr, "prepare")
        assert snapshot(work) == before
    finally:
        holder.kill()
        holder.wait()
    (work / "cache" / ".ssl-radiomics.lock").unlink(missing_ok=True)


def test_full_disk_during_prepare_stops_with_one_line(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing a crop is the cache's problem: one error, not every case blamed."""
    import errno

    import numpy as np

    from napari_ssl_radiomics.cli import main

    manifest = write_sample_cohort(tmp_path / "s", SampleConfig(cases=4, size=16))
    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    assert main(["prepare", str(manifest), "--out", str(tmp_path / "c"), "--size", "16", "--jobs", "1"]) == 2
    line = error_line(capsys.readouterr().err, "prepare")
    assert "disk is full" in line and "check the files of this case" not in line
    assert not (tmp_path / "c" / "cases.csv").exists()


@pytest.mark.parametrize("flag, avail, words", [(os.ST_RDONLY, 100, "read-only"), (0, 0, "disk is full")])
def test_read_only_or_full_output_is_refused_before_work(tmp_path, monkeypatch, capsys, flag, avail, words):
    """Such a file system cannot be made here without privileges: its statvfs answer is faked."""
    import types

    from napari_ssl_radiomics.cli import main

    manifest = write_sample_cohort(tmp_path / "s", SampleConfig(cases=4, size=16))
    real = os.statvfs

    def statvfs(path):
        st = real(path)
        return types.SimpleNamespace(f_flag=st.f_flag | flag, f_bavail=avail, f_frsize=st.f_frsize)

    monkeypatch.setattr(os, "statvfs", statvfs)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["prepare", str(manifest), "--out", str(tmp_path / "cache"), "--size", "16"]) == 2
    line = error_line(capsys.readouterr().err, "prepare")
    assert words in line and str(tmp_path / "cache") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_fewer_groups_than_folds_is_one_line_naming_the_column_the_count_and_the_way_out(tmp_path, capsys):
    """`evaluate` and `run` used to fall back to as many folds as groups (3 centres: leave-centre-out) with a
    warning; they refuse instead, before any fit or training (issue 17)."""
    import numpy as np
    import pandas as pd
    import yaml

    from napari_ssl_radiomics.cli import main

    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "ID": [f"c{i}" for i in range(30)],
            "Label": ["a", "a", "b"] * 10,
            "Group": [f"centre-{(i // 3) % 3}" for i in range(30)],
            **{f"f{j}": rng.normal(size=30) for j in range(3)},
        }
    )
    table.to_csv(tmp_path / "features.csv", index=False)
    assert main(["evaluate", str(tmp_path / "features.csv"), "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    line = error_line(err, "evaluate")
    assert "'Group' holds only 3 groups, fewer than the 5 folds" in line and "--folds 3" in line, err
    assert "--group ''" in line and "Traceback" not in err and "evaluate:" not in err.replace(line, "")  # no bar
    assert not (tmp_path / "ev").exists()
    # the way out the message names works
    assert main(["evaluate", str(tmp_path / "features.csv"), "--out", str(tmp_path / "ev"), "--group", ""]) == 0
    assert "stratified 5-fold cross-validation, not grouped" in capsys.readouterr().out

    # `run` on a cohort grouped by its 3 centres: refused after preparing, before training
    manifest = write_sample_cohort(tmp_path / "cohort", SampleConfig(cases=20, size=24, seed=3))
    cases = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    cases.assign(Group=cases["Centre"]).to_csv(manifest, index=False)
    config = {"cohort": str(manifest), "out": str(tmp_path / "out"), "prepare": {"size": 16}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err
    line = error_line(err, "run")
    assert "'Group' holds only 3 groups, fewer than the 5 folds" in line and "Traceback" not in err, err
    assert not (tmp_path / "out" / "runs").exists()


def test_prepare_help_says_what_a_box_mask_does_in_each_crop_mode(capsys):
    from napari_ssl_radiomics.cli import main

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'centroid': a cube centred on the mask's centroid (on the BoxMask's centroid when the manifest" in text
    assert "'bbox': the bounding box of the mask (or of the manifest's BoxMask" in text


@pytest.mark.slow
def test_a_full_disk_during_train_is_one_line_and_keeps_the_last_checkpoint(work, tmp_path):
    """A real full disk: a tmpfs with room for one checkpoint and a half, so the second one
    (written beside the first, then renamed onto it) runs out of space."""
    import shutil

    import torch

    small = tmp_path / "small"
    small.mkdir()
    size = (work / "run" / "checkpoint.pt").stat().st_size * 3 // 2
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0 or shutil.disk_usage(small).total > 2 * size:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        args = ["train", "cache", "--out", str(small / "run"), "--iterations", "3", "--checkpoint-every", "1"]
        done = run_cli(work, [*args, "--batch-size", "2", "--mode", "none", "--health-cases", "0", "--no-progress"])
        line = error_line(done.stderr, "train")
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "unexpected pos" not in done.stderr
        assert f"the disk holding {small / 'run'} is full" in line and "the checkpoint of step 1 is kept" in line
        assert "--resume" in line
        assert torch.load(small / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)["iteration"] == 1
    finally:
        subprocess.run(["umount", str(small)], check=False)

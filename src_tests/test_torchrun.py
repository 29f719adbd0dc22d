"""Training under ``torchrun --nproc-per-node 2`` on the CPU (gloo), against one process.

Two processes with m = 2 each (a global batch of 4) train SE for a few steps from step 1,
each writing what it saw to a JSON report; a one-process run with batch 4 is the
reference. Augmentation is off, so that the runs differ only by how the work is shared
(and by batch norm, which on the CPU normalises each process's 2 cases: see
core/distributed.py). A global batch of 20 checks that SE's default pool grows with it,
so that SE still selects under torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from test_train_engine import make_cache  # the shared synthetic-cache fixture

from napari_ssl_radiomics.config import AugmentConfig, PrepareConfig, SampleConfig, TrainConfig
from napari_ssl_radiomics.core.events import drive
from napari_ssl_radiomics.core.preprocess import prepare_all
from napari_ssl_radiomics.core.sample import write_sample_cohort
from napari_ssl_radiomics.core.train import train

pytest.importorskip("torch.distributed")

SETTINGS = dict(mode="se", clusters=2, pool=8, iterations=4, warmup_epochs=0, health_cases=0, checkpoint_every=2)
SETTINGS.update(device="cpu", seed=0)
NO_AUGMENT = {f"{name}_p": 0.0 for name in ("rotation", "scale", "shift", "gamma", "sharpen", "blur", "noise")}

HARNESS = textwrap.dedent(
    """
    import json, os, sys
    from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
    from napari_ssl_radiomics.core.events import drive
    from napari_ssl_radiomics.core.train import train

    cache, out, report, settings, augment = sys.argv[1:6]
    events = []
    drive(train(cache, out, TrainConfig(**json.loads(settings)), AugmentConfig(**json.loads(augment))), events.append)
    steps = [e.row for e in events if e.kind == "step"]
    rank = os.environ["RANK"]
    with open(os.path.join(report, f"rank{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump({"selected": [e.selected_ids for e in steps], "loss": [e.loss for e in steps],
                   "pool": [sum(e.cluster_sizes) for e in steps], "world": os.environ["WORLD_SIZE"]}, fh)
    """
)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    manifest = write_sample_cohort(root / "cohort", SampleConfig(cases=8, size=32, seed=4))
    prepare_all(manifest, PrepareConfig(size=27, jobs=1), root / "cache")
    return root / "cache"


def test_two_processes_share_one_global_batch_and_resume(cache, tmp_path):
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS, encoding="utf-8")
    run, report = tmp_path / "run", tmp_path / "report"
    report.mkdir()
    torchrun(
        str(harness),
        str(cache),
        str(run),
        str(report),
        json.dumps({**SETTINGS, "batch_size": 2}),
        json.dumps(NO_AUGMENT),
    )
    ranks = [json.loads((report / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]

    # every rank selected the same global batch of 4 at every step, and logged the global loss
    assert ranks[0]["world"] == "2" and len(ranks[0]["selected"]) == 4
    assert ranks[0]["selected"] == ranks[1]["selected"]
    assert all(len(ids) == 4 for ids in ranks[0]["selected"])
    assert ranks[0]["loss"] == ranks[1]["loss"]
    # rank 0 wrote the run folder, with the global batches
    history = pd.read_csv(run / "history.csv")
    assert [json.loads(ids) for ids in history["selected_ids"]] == ranks[0]["selected"]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["processes"] == 2

    # one process with the same global batch: same first selection, a loss curve that tracks it
    one = drive(train(cache, tmp_path / "one", TrainConfig(**SETTINGS, batch_size=4), AugmentConfig(**NO_AUGMENT)))
    assert json.loads(one.history["selected_ids"].iloc[0]) == ranks[0]["selected"][0]
    gap = np.abs(np.array(ranks[0]["loss"]) - one.history["loss"].to_numpy())
    assert gap.max() < 0.1, (ranks[0]["loss"], list(one.history["loss"]))

    # the command line under torchrun resumes the run with the same number of processes
    torchrun(
        "-m",
        "napari_ssl_radiomics",
        "train",
        str(cache),
        "--out",
        str(run),
        "--resume",
        "--iterations",
        "6",
        "--no-progress",
    )
    resumed = pd.read_csv(run / "history.csv")
    assert list(resumed["iteration"]) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(resumed["loss"].iloc[:4], history["loss"])


def test_resuming_with_another_number_of_processes_is_refused(cache, tmp_path):
    cfg = TrainConfig(**{**SETTINGS, "iterations": 2}, batch_size=4)
    drive(train(cache, tmp_path / "run", cfg, AugmentConfig(**NO_AUGMENT)))
    harness = tmp_path / "harness.py"
    harness.write_text(
        "import sys\nfrom napari_ssl_radiomics.cli import main\nsys.exit(main(sys.argv[1:]))\n", encoding="utf-8"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(harness)]
    command += ["train", str(cache), "--out", str(tmp_path / "run"), "--resume", "--iterations", "3", "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "trained on 1 process" in done.stdout + done.stderr


def test_se_still_selects_when_processes_multiply_the_batch(tmp_path):
    # Spheres of two sizes, one large for two small: the untrained encoder (step 1) already
    # tells them apart, so SE's two farthest centroids are "large" and "small" and its batch
    # is half large, against a third in the cohort (later steps cluster on what they learn).
    # 2 processes x 10 make a global batch of 20, which the paper's fixed pool of k x 10 = 20
    # would equal: SE would then train on the whole pool, at the pool's share. The default
    # pool grows with the batch instead (k x 10 x 20 / 6 = 67, cut to the cohort's 30 cases).
    cache = make_cache(tmp_path / "cache", cases=30)
    labels = dict(pd.read_csv(cache / "cases.csv")[["ID", "Label"]].to_numpy())
    cohort_share = np.mean([v == "large" for v in labels.values()])

    def share(ids: list[str]) -> float:
        return float(np.mean([labels[i] == "large" for i in ids]))

    settings = {**SETTINGS, "pool": 0, "iterations": 1}
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS, encoding="utf-8")
    report = tmp_path / "report"
    report.mkdir()
    torchrun(
        str(harness),
        str(cache),
        str(tmp_path / "two"),
        str(report),
        json.dumps({**settings, "batch_size": 10}),
        json.dumps(NO_AUGMENT),
    )
    two = json.loads((report / "rank0.json").read_text(encoding="utf-8"))
    # the step trained the global batch of 20, selected from a pool larger than it
    assert [len(ids) for ids in two["selected"]] == [20]
    assert two["pool"] == [30], two["pool"]
    config = json.loads((tmp_path / "two" / "config.json").read_text(encoding="utf-8"))
    assert (config["global_batch"], config["se_pool"]) == (20, 30)
    selected = two["selected"][0]
    assert cohort_share == pytest.approx(1 / 3) and share(selected) >= 0.45, share(selected)

    # one process with the same global batch and seed: the same selection, the same share
    one = drive(train(cache, tmp_path / "one", TrainConfig(**settings, batch_size=20), AugmentConfig(**NO_AUGMENT)))
    first = json.loads(one.history["selected_ids"].iloc[0])
    assert sum(json.loads(one.history["cluster_sizes"].iloc[0])) == 30 and len(first) == 20
    # (at least 18 of the 20: float rounding may break a tie at the edge of the small spheres' half)
    assert len(set(first) & set(selected)) >= 18, (first, selected)
    assert abs(share(first) - share(selected)) <= 0.05, (share(first), share(selected))


CLI_HARNESS = "import sys\nfrom napari_ssl_radiomics.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def test_a_global_batch_larger_than_the_cohort_is_one_line_on_every_rank(cache, tmp_path):
    # 5 per process x 2 processes = 10 > 8 cases, although 5 alone would fit
    harness = tmp_path / "harness.py"
    harness.write_text(CLI_HARNESS, encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(harness)]
    command += ["train", str(cache), "--out", str(tmp_path / "run"), "--batch-size", "5", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    line = "error: the global batch, TrainConfig.batch_size (--batch-size) = 5 per process x 2 processes = 10, is"
    assert output.count(line) == 2, output[-3000:]  # each rank says it once
    assert "give --batch-size 4 or less" in output
    assert "napari_ssl_radiomics" not in "".join(ln for ln in output.splitlines() if ln.lstrip().startswith("File "))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_sigterm_to_torchrun_keeps_the_steps_on_every_rank(cache, tmp_path):
    """What `timeout`, SLURM and Kubernetes do: SIGTERM to torchrun, which passes it to each rank.
    The ranks stop together after a step and save it, although no checkpoint was due."""
    import re
    import signal
    import threading
    import time

    import torch

    harness = tmp_path / "harness.py"
    harness.write_text(CLI_HARNESS, encoding="utf-8")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(harness)]
    command += ["train", str(cache), "--out", str(run), "--batch-size", "2", "--iterations", "500"]
    command += ["--checkpoint-every", "400", "--health-cases", "0", "--mode", "none"]
    agent = subprocess.Popen(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: agent.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not re.search(rb"\s([3-9]|\d\d+)/500", b"".join(err)):  # rank 0's bar: 3 steps done
            assert agent.poll() is None and time.monotonic() < deadline, b"".join(err)[-3000:].decode()
            time.sleep(0.1)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    reader.join(timeout=10)
    text = b"".join(err).decode(errors="replace")
    stopped = re.search(r"stopped by SIGTERM at step (\d+) of 500", text)
    assert stopped, text[-3000:]
    step = int(stopped.group(1))
    assert step >= 3
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == step
    assert len(pd.read_csv(run / "history.csv")) == step
    assert "Connection closed by peer" not in text

"""Per-case costs of each stage, measured here, and the wall time they project for large cohorts.

Measured (one process, this machine): ``prepare`` and ``radiomics`` per case on
pyradiomics' five real clinical cases (brain MR, breast MR, lung CT; ../shared/data),
``embed`` per case (no-gradient forward of the encoder, batch 16) and training samples/s
(the real engine, mode none, fp32, batch 6) at 32³, 64³ and 96³ on synthetic crops.

Projected (printed after the measurements, docs/scaling.md explains them): the wall time of
10,000 and 100,000 cases on 1, 8 and 64 CPU workers (prepare, radiomics, CPU embedding)
and 1 and 8 GPUs (training, embedding), from the measured per-case CPU costs divided by
the workers and from an assumed GPU throughput (``--gpu-samples-per-s``, to be replaced
by a measurement from benchmarks/bench_train.py on a GPU).

    python benchmarks/bench_scaling.py                  # CPU, about 3-6 minutes on 2 cores
    python benchmarks/bench_scaling.py --sizes 32 64    # without the slow 96³ rows
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from napari_ssl_radiomics.config import AugmentConfig, PrepareConfig, RadiomicsConfig, TrainConfig
from napari_ssl_radiomics.core.cache import PreparedCohort
from napari_ssl_radiomics.core.cohort import Case
from napari_ssl_radiomics.core.events import drive
from napari_ssl_radiomics.core.model import SimSiam3D
from napari_ssl_radiomics.core.preprocess import prepare
from napari_ssl_radiomics.core.radiomics import extract
from napari_ssl_radiomics.core.train import train

try:
    from bench_train import machine
except ImportError:  # pragma: no cover - run from elsewhere
    from benchmarks.bench_train import machine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pyradiomics"
CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")


def real_cases() -> list[Case]:
    return [Case(c, DATA / f"{c}_image.nrrd", DATA / f"{c}_label.nrrd") for c in CASES]


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def prepare_s(size: int, tmp: Path) -> tuple[float, float]:
    """Wall and CPU seconds per case of ``prepare`` (one process) at ``size``³, 1 mm."""
    from napari_ssl_radiomics.core.cohort import Cohort

    cohort = Cohort(cases=real_cases(), problems=[], source=DATA)
    wall, cpu = timed(lambda: drive(prepare(cohort, PrepareConfig(size=size, spacing=1.0, jobs=1), tmp / f"p{size}")))
    return wall / len(CASES), cpu / len(CASES)


def radiomics_s() -> tuple[float, float]:
    wall, cpu = timed(lambda: drive(extract(real_cases(), RadiomicsConfig(jobs=1))))
    return wall / len(CASES), cpu / len(CASES)


def embed_s(size: int, batch: int = 16) -> tuple[float, float]:
    model = SimSiam3D(in_channels=1).eval()
    x = torch.rand(batch, 1, size, size, size) * 255
    with torch.no_grad():
        model.encoder(x[:2])  # warm-up
        wall, cpu = timed(lambda: model.encoder(x))
    return wall / batch, cpu / batch


def train_rate(size: int, steps: int, batch: int = 6) -> tuple[float, float]:
    """Samples/s of the steps after the first, by the wall clock and by this process's CPU time."""
    rng = np.random.default_rng(0)
    cases = 24
    data = PreparedCohort(
        root=Path("<bench>"),
        ids=[f"b{i}" for i in range(cases)],
        images=rng.uniform(0, 255, (cases, 1, size, size, size)).astype(np.float32),
        masks=np.zeros((cases, size, size, size), np.uint8),
    )
    cfg = TrainConfig(mode="none", iterations=steps, batch_size=batch, checkpoint_every=10**9, device="cpu", seed=0)
    marks = []
    with tempfile.TemporaryDirectory() as tmp:
        for event in train(data, Path(tmp) / "run", cfg, AugmentConfig()):
            if event.kind == "step":
                marks.append((time.perf_counter(), time.process_time()))
    samples = batch * (len(marks) - 1)
    return samples / (marks[-1][0] - marks[0][0]), samples / (marks[-1][1] - marks[0][1])


def hours(cases: int, seconds_per_case: float, workers: int) -> str:
    h = cases * seconds_per_case / workers / 3600
    return f"{h:,.1f} h" if h >= 1 else f"{h * 60:,.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[32, 64], help="96³ training on a CPU is slow")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=50, help="training epochs in the projection (the paper: ~50)")
    parser.add_argument(
        "--gpu-samples-per-s",
        type=float,
        default=300.0,
        help="assumed training samples/s per GPU at 96³ (benchmarks/README.md's H100 target; not measured here)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-case costs of one worker process on one core
    print(f"machine: {machine(torch.device('cpu'))}; load average {os.getloadavg()[0]:.1f}")
    measured = []

    def add(stage: str, unit: str, values: tuple[float, float]) -> None:
        measured.append({"stage": stage, "unit": unit, "wall": values[0], "CPU": values[1]})

    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            add(f"prepare {size}³", "s/case", prepare_s(size, Path(tmp)))
    add("radiomics, 107 features", "s/case", radiomics_s())
    for size in args.sizes:
        add(f"embed {size}³, CPU", "s/case", embed_s(size))
    for size in args.train_sizes:
        add(f"train {size}³ batch 6, CPU", "samples/s", train_rate(size, args.steps))
    table = pd.DataFrame(measured)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\nmeasured, one process on 1 thread (CPU: this process's CPU time, what a dedicated core gives):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))

    per = dict(zip(table["stage"], table["CPU"]))
    big = max(args.sizes)
    rows = []
    for cases in (10_000, 100_000):
        for workers in (1, 8, 64):
            rows.append(
                {
                    "cases": f"{cases:,}",
                    "CPU workers": workers,
                    f"prepare {big}³": hours(cases, per[f"prepare {big}³"], workers),
                    "radiomics": hours(cases, per["radiomics, 107 features"], workers),
                    f"embed {big}³ CPU": hours(cases, per[f"embed {big}³, CPU"], workers),
                }
            )
    print(f"\nprojected from the measured per-case costs (perfect scaling over workers, {big}³):")
    print(pd.DataFrame(rows).to_string(index=False))
    rows = []
    for cases in (10_000, 100_000):
        for gpus in (1, 8):
            rate = args.gpu_samples_per_s * gpus * 0.9 ** (gpus > 1)  # ~90% DDP efficiency on one node
            rows.append(
                {
                    "cases": f"{cases:,}",
                    "GPUs": gpus,
                    f"train {args.epochs} epochs": hours(cases * args.epochs, 1 / rate, 1),
                    "embed": hours(cases, 1 / (rate * 3), 1),  # forward only: about 1/3 of a training sample
                }
            )
    print(f"\nprojected for GPUs at an assumed {args.gpu_samples_per_s:g} samples/s per GPU ({big}³):")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

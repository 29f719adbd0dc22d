"""Step time of the Rubik's-cube baseline against 3DSiam on the same encoder (core.train.train).

A 3DSiam step encodes two views of each crop; a Rubik step encodes its 8 sub-cubes, each
resized to the encoder's minimum of 27³ when the crop is below 54³ (core/rubik.py), so at
28³/32³ it passes about 2.4× the voxels. Each row runs the real engine on an in-memory
synthetic cohort and reports the median and best seconds per step after the first step.
The load average is printed: on a shared machine the figures are only comparable within
one run.

    python benchmarks/bench_rubik.py                # 28³ and 32³, batch 6, 4 steps per row
    python benchmarks/bench_rubik.py --steps 8 --sizes 32 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core.cache import PreparedCohort
from napari_ssl_radiomics.core.train import train
from napari_ssl_radiomics.core.utils import cpu_model


def cohort(size: int, cases: int = 12, seed: int = 0) -> PreparedCohort:
    """Noisy bright spheres, (cases, 1, size, size, size) float32 in [0, 255]."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:size, :size, :size].astype(np.float32) - size / 2
    dist = np.sqrt((grid**2).sum(0))
    images = np.clip(40 + 160 / (1 + np.exp(dist - size / 4)) + rng.normal(0, 8, (cases, 1, *dist.shape)), 0, 255)
    return PreparedCohort(
        root=Path("<bench>"),
        ids=[f"b{i:03d}" for i in range(cases)],
        images=images.astype(np.float32),
        masks=np.zeros((cases, size, size, size), np.uint8),
    )


def seconds_per_step(data: PreparedCohort, method: str, batch: int, steps: int) -> tuple[float, float]:
    """Median and best wall seconds of the steps after the first."""
    cfg = TrainConfig(
        method=method, mode="none", iterations=steps, batch_size=batch, health_cases=0, checkpoint_every=10**9
    )
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for event in train(data, Path(tmp) / "run", cfg, AugmentConfig()):
            if event.kind == "step" and event.iteration > 1:
                times.append(batch / event.row.samples_per_s)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 32])
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(
        f"CPU {cpu_model()} ({torch.get_num_threads()} torch threads), torch {torch.__version__}, "
        f"python {platform.python_version()}, load average before {os.getloadavg()[0]:.1f}"
    )
    print("| crop | batch | method | s/step median | s/step best |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        data = cohort(size, max(12, args.batch))
        for method in ("siam", "rubik"):
            median, best = seconds_per_step(data, method, args.batch, args.steps)
            print(f"| {size}³ | {args.batch} | {method} | {median:.2f} | {best:.2f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

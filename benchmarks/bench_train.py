"""Training throughput of the engine (core.train.train), in samples per second.

One sample = one case's two augmented views through the encoder and predictor, forward
and backward (the paper's training unit). Every row runs the real engine on an in-memory
synthetic cohort for a few steps and reports the median of the steps after the first
``--warmup`` (which include cuDNN autotuning and allocator warm-up), and the best step
(the least disturbed one on a shared machine).

Rows: crop size x batch size in fp32 and autocast (bf16/fp16 per the device), the
augmentation on the device against the same augmentation on the CPU copied to the device,
channels_last_3d off, and the RE/SE overhead (mode none vs re vs se, RE/SE from step 1).

    python benchmarks/bench_train.py --quick          # CPU: 32³/64³, 3 steps per row
    python benchmarks/bench_train.py                  # GPU: 32³, 64³, 96³, batch 6/16/32
    python benchmarks/bench_train.py --full --quick   # CPU with the 96³ row (slow)
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core.cache import PreparedCohort
from napari_ssl_radiomics.core.train import resolve_device, train
from napari_ssl_radiomics.core.utils import cpu_model


def cohort(size: int, cases: int, seed: int = 0) -> PreparedCohort:
    """Spheres of two sizes on a noisy background, (cases, 1, size, size, size) float32."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:size, :size, :size].astype(np.float32) - size / 2
    images = np.empty((cases, 1, size, size, size), np.float32)
    for i in range(cases):
        dist = np.sqrt(((grid - rng.uniform(-3, 3, (3, 1, 1, 1)).astype(np.float32)) ** 2).sum(0))
        radius = size / (4 if i % 3 else 8)
        images[i, 0] = np.clip(40 + 160 / (1 + np.exp(dist - radius)) + rng.normal(0, 8, dist.shape), 0, 255)
    return PreparedCohort(
        root=Path("<bench>"),
        ids=[f"b{i:03d}" for i in range(cases)],
        images=images,
        masks=np.zeros((cases, size, size, size), np.uint8),
    )


def measure(data: PreparedCohort, steps: int, warmup: int, **kw) -> tuple[float, float]:
    """Median and best samples/s over the steps after ``warmup``."""
    augment_on = kw.pop("augment_on", "device")
    channels_last = kw.pop("channels_last", None)
    # health checks off: they embed a probe set at step 0 and at the end, not part of a step
    cfg = TrainConfig(iterations=steps, checkpoint_every=10**9, warmup_epochs=0, seed=0, health_cases=0, **kw)
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for event in train(
            data, Path(tmp) / "run", cfg, AugmentConfig(), augment_on=augment_on, channels_last=channels_last
        ):
            if event.kind == "step" and event.iteration > warmup:
                rates.append(event.row.samples_per_s)
    return statistics.median(rates), max(rates)


def machine(device: torch.device) -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return (
        f"date {dt.date.today()}, CPU {cpu} ({torch.get_num_threads()} torch threads), GPU {gpu}, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )


def rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    cuda = device.type == "cuda"
    sizes = [32, 64] + ([96] if args.full or not args.quick else [])
    batches = [2, 6] if args.quick else [6, 16, 32]
    autocast = "auto" if cuda else "bf16"
    plan = []
    for size in sizes:
        for batch in batches:
            if args.quick and size > 32 and batch != batches[0]:
                continue
            plan.append(dict(size=size, batch_size=batch, precision="fp32", what="fp32"))
            # CPU bf16 autocast without native bf16 units is ~100x slower: only with --full
            if cuda or (args.full and size == 32 and batch == batches[0]):
                plan.append(dict(size=size, batch_size=batch, precision=autocast, what=f"autocast ({autocast})"))
    big = 96 if (cuda and not args.quick) else 32
    batch = batches[-1]
    best = "auto" if cuda else "fp32"
    if cuda:  # on the CPU the host is the device: nothing to compare
        plan.append(dict(size=big, batch_size=batch, precision=best, augment_on="host", what="augment on CPU, copied"))
        plan.append(dict(size=big, batch_size=batch, precision=best, channels_last=False, what="no channels_last_3d"))
    for mode in ("re", "se"):
        plan.append(dict(size=big, batch_size=batch, precision=best, mode=mode, what=f"mode {mode} (vs none above)"))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 steps per row (CPU)")
    parser.add_argument("--full", action="store_true", help="with --quick, also the 96³ rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=0, help="steps per row (default: 3 quick, 12 otherwise)")
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the median")
    parser.add_argument("--cases", type=int, default=40, help="cohort size (SE draws a pool of 30)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    steps = args.steps or (3 if args.quick else 12)
    print(f"# bench_train: {machine(device)}")
    print(
        f"# mode none unless noted; {steps} steps per row; median and best of the steps after the first {args.warmup}"
    )
    print("| crop | batch | setting | samples/s (median) | samples/s (best) | s/step (median) |")
    print("|---|---|---|---|---|---|")
    cohorts: dict[int, PreparedCohort] = {}
    for row in rows(args, device):
        size = row.pop("size")
        what = row.pop("what")
        data = cohorts.setdefault(size, cohort(size, args.cases))
        rate, best = measure(data, steps, args.warmup, device=str(device), mode=row.pop("mode", "none"), **row)
        print(
            f"| {size}³ | {row['batch_size']} | {what} | {rate:.2f} | {best:.2f} | {row['batch_size'] / rate:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

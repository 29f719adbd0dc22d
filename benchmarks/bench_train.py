"""Training throughput of the engine (core.train.train), in samples per second.

One sample = one case's two augmented views through the encoder and predictor, forward
and backward (the paper's training unit). Every row runs the real engine on an in-memory
synthetic cohort for a few steps and reports the median of the steps after the first
``--warmup`` (which include cuDNN autotuning and allocator warm-up), and the best step
(the least disturbed one on a shared machine).

GPU rows: crop size x batch size in fp32 and autocast (bf16/fp16 per the device), the
augmentation on the device against the same augmentation on the CPU copied to the device,
channels_last_3d off, and the RE/SE overhead (mode none vs re vs se, RE/SE from step 1).

CPU rows (batch 6, 32³ and 64³): fp32 against bf16 autocast (where the CPU has native bf16),
each with and without channels_last_3d, what ``precision: auto`` picks, and the RE/SE
overhead; ``--compile`` adds eager against ``torch.compile`` and its break-even step.

    python benchmarks/bench_train.py                  # GPU: 32³, 64³, 96³, batch 6/16/32
    python benchmarks/bench_train.py --quick          # GPU: small sizes, 3 steps per row
    python benchmarks/bench_train.py --steps 6 --compile   # CPU: the fast path, 6 steps per row
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core.cache import PreparedCohort
from napari_ssl_radiomics.core.devices import cpu_has_native_bf16
from napari_ssl_radiomics.core.train import TrainingDiverged, resolve_device, train
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


def cpu_plan(args: argparse.Namespace) -> list[dict]:
    """The CPU fast path: fp32 against bf16 autocast, each with and without channels_last_3d.

    bf16 rows only where the CPU computes bf16 natively (emulated bf16 is ~100x slower), or
    with ``--full``.
    """
    plan = []
    bf16 = cpu_has_native_bf16() or args.full
    for size in (32, 64):
        for precision in ("fp32", "bf16") if bf16 else ("fp32",):
            for layout in (False, True):
                what = f"{precision}{' + channels_last_3d' if layout else ''}"
                plan.append(dict(size=size, batch_size=6, precision=precision, channels_last=layout, what=what))
        plan.append(dict(size=size, batch_size=6, precision="auto", what="auto (fp32 + channels_last_3d)"))
    for mode in ("re", "se"):
        plan.append(dict(size=32, batch_size=6, precision="auto", mode=mode, what=f"auto, mode {mode}"))
    return plan


def rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    if device.type != "cuda":
        return cpu_plan(args)
    sizes = [32, 64] + ([96] if args.full or not args.quick else [])
    batches = [2, 6] if args.quick else [6, 16, 32]
    plan = []
    for size in sizes:
        for batch in batches:
            if args.quick and size > 32 and batch != batches[0]:
                continue
            plan.append(dict(size=size, batch_size=batch, precision="fp32", what="fp32"))
            plan.append(dict(size=size, batch_size=batch, precision="auto", what="autocast (auto)"))
    big = 32 if args.quick else 96
    batch = batches[-1]
    plan.append(dict(size=big, batch_size=batch, precision="auto", augment_on="host", what="augment on CPU, copied"))
    plan.append(dict(size=big, batch_size=batch, precision="auto", channels_last=False, what="no channels_last_3d"))
    for mode in ("re", "se"):
        plan.append(dict(size=big, batch_size=batch, precision="auto", mode=mode, what=f"mode {mode} (vs none above)"))
    return plan


def model_step(net, opt: torch.optim.Optimizer, x: torch.Tensor, dtype: torch.dtype) -> float:
    """Seconds of one step of ``net`` (SimSiam3D, maybe compiled) on two views of ``x``."""
    from napari_ssl_radiomics.core.model import simsiam_loss

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        p1, p2, z1, z2 = net(x, x + 0.1 * torch.randn_like(x))
    loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float()).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def compile_rows(size: int, steps: int) -> list[str]:
    """Eager against ``torch.compile`` for one SimSiam3D step (bf16 autocast on a native-bf16 CPU,
    else fp32; channels_last_3d), and the steps after which compiling has paid for itself.

    The model alone (two views, forward, backward, SGD): the engine does not compile, so this
    says whether it should.
    """
    from napari_ssl_radiomics.core.model import SimSiam3D

    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    out, times = [], {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = SimSiam3D(1).to(memory_format=torch.channels_last_3d)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        net = torch.compile(model) if compiled else model
        x = torch.randn(6, 1, size, size, size).contiguous(memory_format=torch.channels_last_3d)
        first = model_step(net, opt, x, dtype)
        rest = sorted(model_step(net, opt, x, dtype) for _ in range(steps))
        times[compiled] = (first, statistics.median(rest), rest[0])
        name = "torch.compile" if compiled else "eager"
        out.append(
            f"| {size}³ | 6 | {name} ({str(dtype).removeprefix('torch.')}) | first step {first:.1f} s | "
            f"best {rest[0]:.2f} s | {statistics.median(rest):.2f} |"
        )
    saved = times[False][2] - times[True][2]  # best against best: the least disturbed steps
    cost = times[True][0] - times[False][0]
    verdict = f"pays after {cost / saved:.0f} steps" if saved > 0 else "never pays (not faster per step)"
    out.append(f"| {size}³ | 6 | torch.compile: {verdict} | compile {cost:.0f} s | saves {saved:.2f} s/step | |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 steps per row (CPU)")
    parser.add_argument("--full", action="store_true", help="with --quick, also the 96³ rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=0, help="steps per row (default: 3 quick, 12 otherwise)")
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the median")
    parser.add_argument("--cases", type=int, default=40, help="cohort size (SE draws a pool of 30)")
    parser.add_argument("--compile", action="store_true", help="also eager against torch.compile (minutes)")
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
        try:
            rate, best = measure(data, steps, args.warmup, device=str(device), mode=row.pop("mode", "none"), **row)
        except TrainingDiverged as exc:  # a finding of its own (bf16 on the CPU at 64³)
            print(f"| {size}³ | {row['batch_size']} | {what} | diverged: {str(exc).split(':')[0]} | | |", flush=True)
            continue
        print(
            f"| {size}³ | {row['batch_size']} | {what} | {rate:.2f} | {best:.2f} | {row['batch_size'] / rate:.2f} |",
            flush=True,
        )
    if args.compile:
        for line in compile_rows(32, steps):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

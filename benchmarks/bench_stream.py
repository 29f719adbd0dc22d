"""Samples/s of training from memory against from the memory-mapped uint8 cache (core/cache.py).

Writes a synthetic prepared cache (``--cases`` crops per size, on disk under ``--tmp``),
then for 32³ and 64³:

* **read** rows: batches of ``--batch`` random cases taken from the float32 tensor in
  memory (the baseline: what training indexes today), from the memory map with the file
  in the page cache (warm), and with the page cache dropped before every batch (cold:
  ``posix_fadvise(DONTNEED)``, the case of a cohort larger than memory), without and with
  the read-ahead of :class:`~napari_ssl_radiomics.core.cache.StreamedCrops` overlapping a
  stand-in compute of ``--compute-ms`` per batch;
* **train** rows: the real engine (``core.train.train``, mode none, fp32) for ``--steps``
  steps on the in-memory cohort and on the streamed one (median of the steps after the
  first).

    python benchmarks/bench_stream.py                   # CPU, 32³ and 64³
    python benchmarks/bench_stream.py --cases 2000      # a larger file (GPU box)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core.cache import (
    CASE_COLUMNS,
    CASES_CSV,
    STREAM,
    STREAM_IMAGES,
    StreamedCrops,
    load_prepared,
    load_streamed,
    write_crop,
)
from napari_ssl_radiomics.core.train import resolve_device, train
from napari_ssl_radiomics.core.utils import write_csv

try:  # the machine line of the other benchmarks
    from bench_train import machine
except ImportError:  # pragma: no cover - run from elsewhere
    from benchmarks.bench_train import machine


def write_cache(root: Path, size: int, cases: int, seed: int = 0) -> Path:
    """A prepared cache of ``cases`` random crops (C=1, size³) with cases.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(cases):
        image = rng.uniform(0, 255, (1, size, size, size)).astype(np.float32)
        mask = np.zeros((size, size, size), np.uint8)
        mask[size // 4 : -size // 4, size // 4 : -size // 4, size // 4 : -size // 4] = 1
        npz = write_crop(root, f"c{i:05d}", image, mask, {"id": f"c{i:05d}"})
        rows.append(
            {
                "ID": f"c{i:05d}",
                "Label": str(i % 2),
                "Group": "",
                "status": "ok",
                "reason": "",
                "file": npz.relative_to(root).as_posix(),
            }
        )
    write_csv(root / CASES_CSV, pd.DataFrame(rows, columns=CASE_COLUMNS))
    return root


def drop_page_cache(path: Path) -> None:
    """Evict ``path`` from the page cache (no root needed for clean pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_rate(take, batches: list[np.ndarray], before=None, prefetch=None, compute_s: float = 0.0) -> float:
    """Samples/s over ``batches``; ``before`` runs untimed before each batch."""
    total = 0.0
    for i, positions in enumerate(batches):
        if before is not None:
            before()
        start = time.perf_counter()
        x = take(positions)
        if prefetch is not None and i + 1 < len(batches):
            prefetch(batches[i + 1])
        if compute_s:
            time.sleep(compute_s)  # stands for the training step the read-ahead overlaps
        total += time.perf_counter() - start - compute_s
        del x
    return sum(len(b) for b in batches) / total


def take_memory(tensor: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    return tensor[torch.from_numpy(positions)].clone()


def train_rate(data, steps: int, batch: int, device: str) -> float:
    cfg = TrainConfig(mode="none", iterations=steps, batch_size=batch, checkpoint_every=10**9, device=device, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        rates = [
            e.row.samples_per_s
            for e in train(data, Path(tmp) / "run", cfg, AugmentConfig(), channels_last=False)
            if e.kind == "step" and e.iteration > 1
        ]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=96)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compute-ms", type=float, default=50.0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-train", action="store_true", help="only the read rows")
    parser.add_argument("--tmp", default=None, help="folder for the synthetic caches (default: a temporary one)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {machine(device)}; load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for size in args.sizes:
            root = write_cache(Path(tmp) / f"cache{size}", size, args.cases)
            memory = load_prepared(root)
            streamed = load_streamed(root)
            batches = [rng.choice(args.cases, args.batch, replace=False) for _ in range(args.batches)]
            crops = StreamedCrops(streamed.images)
            mb = args.cases * memory.images[0].nbytes / 2**20
            drop = partial(drop_page_cache, root / STREAM / STREAM_IMAGES)
            base = read_rate(partial(take_memory, torch.from_numpy(memory.images)), batches)
            results = {
                "read: memory float32 (baseline)": base,
                "read: memmap uint8, warm": read_rate(crops.take, batches),
                "read: memmap uint8, cold, no read-ahead": read_rate(
                    StreamedCrops(streamed.images).take, batches, before=drop
                ),
                "read: memmap uint8, cold, read-ahead": read_rate(
                    crops.take, batches, before=drop, prefetch=crops.prefetch, compute_s=args.compute_ms / 1000
                ),
            }
            if not args.no_train:
                results["train: memory float32 (baseline)"] = train_rate(memory, args.steps, args.batch, str(device))
                results["train: memmap uint8, read-ahead"] = train_rate(streamed, args.steps, args.batch, str(device))
            for name, rate in results.items():
                rows.append(
                    {"size": f"{size}³", "cohort MB (float32)": f"{mb:.0f}", "path": name, "samples/s": f"{rate:,.1f}"}
                )
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

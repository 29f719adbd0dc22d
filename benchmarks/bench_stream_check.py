"""Seconds the stream's self-check costs when it is opened (core/cache.py: ``stream_problem``).

Writes a synthetic stream (``--cases`` random uint8 crops of ``--size``³ and their masks,
under ``--tmp``) with its per-case SHA-256 digests, then times, with the files in the page
cache: computing the digests (what building the stream adds), the full check, and the
sampled checks of a few byte budgets (what a stream larger than ``STREAM_CHECK_BYTES``
pays on every open).

    python benchmarks/bench_stream_check.py                  # 2000 x 64³: 1 GB
    python benchmarks/bench_stream_check.py --cases 500      # a quicker look
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_ssl_radiomics.core.cache import STREAM_IMAGES, STREAM_MASKS, _case_digest, stream_problem
from napari_ssl_radiomics.core.utils import cpu_count, cpu_model

MIB = 1024**2


def machine() -> str:
    return f"{cpu_model()}, {cpu_count()} cores usable, Python {platform.python_version()}, {platform.system()}"


def write_stream(folder: Path, cases: int, size: int) -> dict:
    """A stream of random crops and empty masks, and its index (IDs and digests)."""
    images = np.lib.format.open_memmap(folder / STREAM_IMAGES, "w+", np.uint8, (cases, 1, size, size, size))
    masks = np.lib.format.open_memmap(folder / STREAM_MASKS, "w+", np.uint8, (cases, size, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, cases, 100):
        stop = min(cases, start + 100)
        images[start:stop] = rng.integers(0, 256, (stop - start, 1, size, size, size), dtype=np.uint8)
    images.flush()
    masks.flush()
    started = time.perf_counter()
    digests = [_case_digest(images[i], masks[i]) for i in range(cases)]
    index = {"ids": [f"c{i}" for i in range(cases)], "digests": digests, "build_s": time.perf_counter() - started}
    del images, masks
    return index


def timed(folder: Path, index: dict, budget: int) -> float:
    started = time.perf_counter()
    assert stream_problem(folder, index, budget) is None
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tmp", default=None, help="folder for the stream (default: the system's temporary folder)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="stream-check-", dir=args.tmp))
    try:
        index = write_stream(folder, args.cases, args.size)
        total = sum(f.stat().st_size for f in folder.iterdir())
        print(f"machine: {machine()}")
        print(f"stream: {args.cases} cases of {args.size}³ + masks, {total / MIB:.0f} MiB (page cache warm)\n")
        print("| what | bytes hashed (MiB) | seconds | MiB/s |\n|---|---:|---:|---:|")
        print(
            f"| digests while building | {total / MIB:.0f} | {index['build_s']:.2f} | {total / MIB / index['build_s']:.0f} |"
        )
        for budget in (total + 1, 1024 * MIB, 256 * MIB, 64 * MIB):
            if budget > total and budget != total + 1:
                continue
            seconds = timed(folder, index, budget)
            hashed = min(total, budget)
            what = "full check" if budget > total else f"sampled check, budget {budget / MIB:.0f} MiB"
            print(f"| {what} | {hashed / MIB:.0f} | {seconds:.2f} | {hashed / MIB / seconds:.0f} |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Our pyradiomics extraction against pyradiomics' own command line, same cases and settings.

Runs the five clinical cases of pyradiomics' test data (each listed ``--repeat`` times) with
pyradiomics' default settings through

- ``pyradiomics input.csv -o out.csv -f csv -j N`` (the reference), and
- ``ssl-radiomics``'s :func:`extract_all` with ``jobs=N`` (no cache, then a warm cache),

for N = 1 and 2, checks the values agree, and prints a table with the machine it ran on.

    .venv/bin/python benchmarks/bench_radiomics.py [--repeat 2] [--jobs 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SSL_RADIOMICS_SHARED", ROOT.parent / "shared")) / "data" / "pyradiomics"
CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")


def machine() -> str:
    from napari_ssl_radiomics.core.utils import cpu_count, cpu_model

    return f"{cpu_model()}, {cpu_count()} cores usable, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="list each case this many times (as distinct files)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    from napari_ssl_radiomics.config import RadiomicsConfig
    from napari_ssl_radiomics.core.cohort import Case
    from napari_ssl_radiomics.core.radiomics import extract_all

    pyradiomics = Path(sys.executable).with_name("pyradiomics")
    work = Path(tempfile.mkdtemp(prefix="bench_radiomics_"))
    cases = []
    for r in range(args.repeat):
        for name in CASES:
            # distinct copies, so that neither tool can reuse a result by file name
            img, msk = work / f"{name}_{r}_image.nrrd", work / f"{name}_{r}_label.nrrd"
            shutil.copy(DATA / f"{name}_image.nrrd", img)
            shutil.copy(DATA / f"{name}_label.nrrd", msk)
            cases.append(Case(id=f"{name}_{r}", image=img, mask=msk))
    batch = work / "input.csv"
    pd.DataFrame(
        {"ID": [c.id for c in cases], "Image": [str(c.image) for c in cases], "Mask": [str(c.mask) for c in cases]}
    ).to_csv(batch, index=False)

    rows = []
    for jobs in args.jobs:
        out = work / f"ref_{jobs}.csv"
        t0 = time.perf_counter()
        subprocess.run(
            [str(pyradiomics), str(batch), "-o", str(out), "-f", "csv", "-j", str(jobs)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t_ref = time.perf_counter() - t0
        ref = pd.read_csv(out).set_index("ID")

        cache = work / f"cache_{jobs}"
        t0 = time.perf_counter()
        ours, failures = extract_all(cases, RadiomicsConfig(jobs=jobs), cache)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        extract_all(cases, RadiomicsConfig(jobs=jobs), cache)
        t_warm = time.perf_counter() - t0
        assert failures.empty, failures
        ours = ours.set_index("ID")
        cols = [c for c in ours.columns]
        rel = np.abs(ours[cols].to_numpy() - ref.loc[ours.index, cols].to_numpy(float)) / np.maximum(
            np.abs(ref.loc[ours.index, cols].to_numpy(float)), 1e-12
        )
        rows.append((jobs, len(cases), t_ref, t_ours, t_ours / t_ref, t_warm, float(rel.max())))

    print(f"machine: {machine()}")
    print(f"cases: {len(cases)} ({', '.join(CASES)} x {args.repeat}), pyradiomics defaults (107 features)\n")
    print("| jobs | cases | pyradiomics CLI (s) | ours (s) | ours / CLI | ours, warm cache (s) | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for jobs, n, t_ref, t_ours, ratio, t_warm, diff in rows:
        print(f"| {jobs} | {n} | {t_ref:.1f} | {t_ours:.1f} | {ratio:.2f} | {t_warm:.2f} | {diff:.1e} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

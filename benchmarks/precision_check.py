"""Does bf16 autocast on the CPU learn what fp32 learns? Vanilla 3DSiam on AdrenalMNIST3D.

Trains vanilla 3DSiam (default recipe, the 2000-step schedule of the study in
``ssl_quality.py``, batch 6, 28³, 1 thread) for ``--steps`` steps in fp32 and in bf16
autocast (with channels_last_3d, what ``precision: auto`` picks on a CPU with native bf16),
seeds 0 and 1, and prints the health monitor's figures (effective rank and first-PC share
of the 256-case probe set, its probe AUC) at each check, with the seed-to-seed spread of
fp32 beside the bf16 - fp32 difference; and, less noisy than the 256-case probe, the
whole cohort's probe (1584 cases, the health monitor's logistic probe, stratified 5-fold)
on each run's embeddings at its last step. bf16 learns the same when its difference to fp32
at the same seed is within fp32's own seed-to-seed spread.

Runs go to ``--work``/runs/prec-<precision>-s<seed>-none (resumable, like the study's).

    python benchmarks/precision_check.py --work /work/study     # 4 runs x 200 steps (CPU: ~1 h)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import ssl_quality  # the sibling script: the cache and the resumable runs

FIGURES = ("effective_rank", "top_pc_share", "probe_auc")


def train(work: Path, precision: str, seed: int, steps: int) -> pd.DataFrame:
    """The run's health checks (``health.csv``) and, as step -1, the whole cohort's probe AUC;
    the run is trained to ``steps`` first when needed."""
    folder = work / "runs" / f"prec-{precision}-s{seed}-none"
    saved = folder / f"embeddings-{steps}.npz"
    if not saved.exists():
        ssl_quality.main(
            ["--train-only", "--methods", "none", "--threads", "1", "--work", str(work), "--seed", str(seed)]
            + ["--tag", f"prec-{precision}-s{seed}", "--stop-at", str(steps), "--set", f"precision={precision}"]
        )
    frame = pd.read_csv(folder / "health.csv")
    frame = frame[frame["iteration"] <= steps].set_index("iteration")
    with np.load(saved) as z:
        head = z["head"]
    _images, labels, _ids = ssl_quality.load_pooled()
    ssl_quality.PROBE = "logistic"
    frame.loc[-1, "probe_auc"] = float(np.mean(ssl_quality.fold_scores(head, labels, 1)["auc"]))
    return frame


def table(runs: dict[tuple[str, int], pd.DataFrame]) -> list[str]:
    lines = [
        "| step | figure | fp32 s0 | fp32 s1 | fp32 seed spread | bf16 s0 | bf16 s1 | largest bf16 − fp32 | within spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for step in runs[("fp32", 0)].index:
        if step == 0:
            continue
        for fig in FIGURES if step > 0 else ("probe_auc",):
            v = {key: float(frame.loc[step, fig]) for key, frame in runs.items()}
            spread = abs(v[("fp32", 0)] - v[("fp32", 1)])
            diff = max(abs(v[("bf16", s)] - v[("fp32", s)]) for s in (0, 1))
            cells = [v[("fp32", 0)], v[("fp32", 1)], spread, v[("bf16", 0)], v[("bf16", 1)], diff]
            where = "whole cohort, last step" if step < 0 else step
            lines.append(
                f"| {where} | {fig} | "
                + " | ".join(f"{c:.3f}" for c in cells)
                + f" | {'yes' if diff <= spread else 'no'} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ssl_quality.ROOT / "results" / "ssl_quality"))
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)
    work = Path(args.work)
    runs = {(p, s): train(work, p, s, args.steps) for p in ("fp32", "bf16") for s in (0, 1)}
    print(f"# precision_check: {ssl_quality.machine()}; vanilla 3DSiam, default recipe, 28³, batch 6, 1 thread")
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

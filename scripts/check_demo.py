"""Check a demo/run output folder: every file the README promises, with its columns.

Usage: python scripts/check_demo.py RESULTS_DIR   (exit 1 and a list of what is wrong)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

COLUMNS = {
    "cache/cases.csv": ["ID", "Label", "Group", "status", "reason", "file"],
    "features/trad.csv": ["ID", "original_shape_MeshVolume", "original_glcm_Contrast", "original_ngtdm_Busyness"],
    "features/ssl_none.csv": ["ID", "ssl_000", "ssl_255"],
    "features/ssl_re.csv": ["ID", "ssl_000", "ssl_255"],
    "features/ssl_se.csv": ["ID", "ssl_000", "ssl_255"],
    "features/features.csv": ["ID", "Label", "original_firstorder_Mean", "ssl_none_000", "ssl_se_255"],
    "evaluation/results.csv": ["feature_set", "label_fraction", "repeat", "fold", "metric", "value"],
    "evaluation/predictions.csv": [
        "ID",
        "feature_set",
        "label_fraction",
        "repeat",
        "fold",
        "y_true",
        "y_pred",
        "score",
    ],
    "runs/se/history.csv": ["iteration", "phase", "loss", "collapse", "cluster_sizes", "selected_ids"],
}
FILES = [
    "config.yaml",
    "versions.json",
    "report.md",
    "report.html",
    "evaluation/summary.md",
    "figures/umap.png",
    "figures/training_curves.png",
    "figures/correlation_density.png",
]
HEALTH_ROWS = ["3DSiam", "3DSiam+SE", "3DSiam+RE"]
ROWS = ["Trad.", "3DSiam", "3DSiam+SE", "3DSiam+RE", "Trad.+3DSiam", "Trad.+3DSiam+SE", "Trad.+3DSiam+RE", "Supervised"]


def problems(out: Path) -> list[str]:
    found = []
    for name, columns in COLUMNS.items():
        path = out / name
        if not path.exists():
            found.append(f"missing {name}")
            continue
        table = pd.read_csv(path)
        found += [f"{name}: no column {c}" for c in columns if c not in table.columns]
        if table.empty:
            found.append(f"{name}: no rows")
    found += [f"missing {name}" for name in FILES if not (out / name).exists()]
    # The built-in sample cohort's cases are independent: its site is a Centre column, no Group, and the folds
    # are the paper's (a run on another cohort has no sample/ folder and may group its folds).
    manifest = out / "sample/manifest.csv"
    if (out / "sample").exists():
        columns = list(pd.read_csv(manifest, nrows=0).columns) if manifest.exists() else []
        found += [
            f"sample/manifest.csv: no column {c}"
            for c in ("ID", "Image", "Mask", "Label", "Centre")
            if c not in columns
        ]
        if "Group" in columns:
            found.append("sample/manifest.csv: a Group column (the site must be the Centre column)")
        summary = out / "evaluation/summary.md"
        text = summary.read_text(encoding="utf-8") if summary.exists() else ""
        if "stratified 5-fold cross-validation, not grouped" not in text:
            found.append("evaluation/summary.md: not the paper's stratified 5-fold cross-validation without grouping")
    results = out / "evaluation/results.csv"
    if results.exists():
        table = pd.read_csv(results)
        found += [f"results.csv: no row for {r}" for r in ROWS if r not in set(table["feature_set"])]
        found += [
            f"results.csv: no {f:.0%} labels scenario" for f in (1.0, 0.5) if f not in set(table["label_fraction"])
        ]
    report = out / "report.md"
    if report.exists():
        text = report.read_text(encoding="utf-8")
        found += [f"report.md lacks {r}" for r in ROWS if f"| {r} |" not in text]
        # the health of each 3DSiam row's encoder sits in Table 2's section, before the next section
        table2 = text.split("## Table 2", 1)[-1].split("\n## ", 1)[0]
        found += [
            f"report.md: no health row for {r} beside Table 2"
            for r in HEALTH_ROWS
            if not re.search(rf"\|\s*{re.escape(r)}\s*\|", table2)
        ]
    return found


if __name__ == "__main__":
    out = Path(sys.argv[1])
    wrong = problems(out)
    for line in wrong:
        print("check_demo:", line)
    if not wrong:
        summary = (out / "evaluation/summary.md").read_text(encoding="utf-8")
        print(summary)
        print(f"check_demo: {out} holds every promised file and column")
    sys.exit(1 if wrong else 0)

"""The evaluation's presentation: Table 2 in markdown (:func:`summary_markdown`) and its files (:func:`write_outputs`).

It reads an :class:`.evaluate.EvalResult`; the pipeline's report (:mod:`.report`) embeds
the summary it writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..config import C_GRID

if TYPE_CHECKING:
    from .evaluate import EvalResult


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and count of each metric over all (repeat, fold) pairs (or repeats, for pooled)."""
    grouped = results.groupby(["feature_set", "label_fraction", "metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    return out


def _grouping(result: EvalResult) -> str:
    """How the folds were grouped, in words (the summary says what the evaluation did)."""
    group = result.config.group
    if result.grouped:
        return f"grouped by '{group}' ({result.n_groups} groups, each kept whole in one test fold)"
    return f"not grouped (no '{group}' column, or an empty one)" if group else "not grouped"


def summary_markdown(result: EvalResult) -> str:
    """Tables like the paper's Table 2: rows = feature sets, columns = label fractions.

    Fold-mean tables first (mean ± sd over folds and repeats), then the pooled metrics
    (all test samples of a repeat together), then the paired comparisons.
    """
    from .compare import comparison_markdown

    names = list(dict.fromkeys(result.results["feature_set"]))
    fractions = sorted(set(result.results["label_fraction"]), reverse=True)
    cfg = result.config
    folds = f"{result.n_folds} folds × {cfg.repeats} repeat(s)"
    fold_mean = f"fold mean ± sd over {folds}"
    if result.binary:
        why = "named" if cfg.positive else f"the {cfg.convention} class"
        main = ("sensitivity", "specificity")
        title = f"Sensitivity / Specificity (positive class: {result.positive}, {why}), {fold_mean}"
        recalls = ("minor_recall", "major_recall")
        recall_title = f"Minor-class recall ({result.minor}) / major-class recall ({result.major}), {fold_mean}"
    else:
        main = ("overall_accuracy", "minor_accuracy")
        title = f"Overall / Minor-class accuracy (minor class: {result.positive}), {fold_mean}"
        recalls = ()
        recall_title = ""
    pooled_note = "one value" if cfg.repeats == 1 else f"mean ± sd over {cfg.repeats} repeats"
    lines = [
        "# Evaluation",
        "",
        f"Linear SVM, stratified {result.n_folds}-fold cross-validation, {_grouping(result)}; "
        f"C from {', '.join(f'{c:g}' for c in C_GRID)} on 20% of each training fold; "
        f"{cfg.repeats} repeat(s), seed {cfg.seed}. Classes: {', '.join(result.classes)}. "
        "*Fold mean*: each metric computed on each test fold, then mean ± sd over the folds. "
        f"*Pooled*: computed once over all test samples of a repeat together (as the paper's Table 2), {pooled_note}.",
        "",
    ]
    agg = aggregate(result.results)
    lines += _table(title, main, agg, names, fractions)
    if recalls and result.positive != result.minor:  # else the same figures as sensitivity / specificity
        lines += _table(recall_title, recalls, agg, names, fractions)
    lines += _table(
        "AUC" + (" (macro one-vs-rest)" if not result.binary else "") + f", {fold_mean}",
        ("auc",),
        agg,
        names,
        fractions,
    )
    lines += _table(f"Balanced accuracy, {fold_mean}", ("balanced_accuracy",), agg, names, fractions)
    if result.pooled is not None and not result.pooled.empty:
        pooled = aggregate(result.pooled)
        shown = (
            ("sensitivity", "specificity", "auc") if result.binary else ("overall_accuracy", "minor_accuracy", "auc")
        )
        heading = " / ".join(m.replace("_", " ") for m in shown)
        lines += _table(f"Pooled over all test samples: {heading} ({pooled_note})", shown, pooled, names, fractions)
    compared = comparison_markdown(result.comparisons, result.minor) if result.comparisons is not None else ""
    if compared:
        lines += [compared, ""]
    if result.warnings:
        lines += ["### Notes", ""] + [f"- {w}" for w in result.warnings] + [""]
    return "\n".join(lines)


def _table(
    heading: str, metrics_: tuple[str, ...], agg: pd.DataFrame, names: list[str], fractions: list[float]
) -> list[str]:
    """One markdown table: a row per feature set, a column per label fraction."""
    agg = agg.set_index(["feature_set", "label_fraction", "metric"])

    def cell(name: str, frac: float, metric: str) -> str:
        key = (name, frac, metric)
        if key not in agg.index:
            return "–"
        m, s = agg.loc[key, "mean"], agg.loc[key, "sd"]
        n = agg.loc[key, "n"] if "n" in agg.columns else 2
        # one value (a pooled row of one repeat) has no spread: "± 0.000" would claim one
        return f"{m:.3f}" if np.isnan(s) or n < 2 else f"{m:.3f} ± {s:.3f}"

    head = "| Feature set | " + " | ".join(f"{f:.0%} labels" for f in fractions) + " |"
    lines = [f"### {heading}", "", head, "|" + "---|" * (len(fractions) + 1)]
    for name in names:
        cells = [" / ".join(cell(name, f, m) for m in metrics_) for f in fractions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_outputs(result: EvalResult, out: str | Path, **extra: Any) -> list[Path]:
    """Write the evaluation's files to ``out``; return their paths.

    results.csv (per fold), results_pooled.csv, comparisons.csv, predictions.csv,
    folds.csv, chosen_C.csv, summary.md, evaluate.json and PNG plots. Each file is written
    whole or not at all. ``extra`` goes into evaluate.json.
    """
    from . import plots
    from .utils import provenance, write_csv, write_json, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "results.csv": result.results,
        "results_pooled.csv": result.pooled,
        "comparisons.csv": result.comparisons,
        "predictions.csv": result.predictions,
        "folds.csv": result.folds,
        "chosen_C.csv": result.chosen_C,
    }
    paths = []
    for name, table in tables.items():
        if table is not None:
            write_csv(out / name, table)
            paths.append(out / name)
    write_text(out / "summary.md", result.summary)
    write_json(
        out / "evaluate.json",
        provenance(
            result.config,
            classes=result.classes,
            positive=result.positive,
            minor=result.minor,
            major=result.major,
            feature_sets={k: {"n_features": len(v), "columns": v} for k, v in result.feature_sets.items()},
            warnings=result.warnings,
            C_grid=list(C_GRID),
            **extra,
        ),
    )
    paths += [out / "summary.md", out / "evaluate.json"]
    for frac in sorted(set(result.predictions["label_fraction"]), reverse=True):
        paths.append(
            plots.roc_curves(
                result.predictions, out / f"roc_{_frac_name(frac)}.png", frac, result.classes, result.positive
            )
        )
    paths.append(plots.metric_bars(result.results, out / "metrics.png"))
    return paths


def _frac_name(frac: float) -> str:
    return f"{int(round(frac * 100))}pct"

"""Figures of the evaluation (PNG, matplotlib's Agg backend, written atomically).

- :func:`roc_curves`: ROC of each feature set from its pooled out-of-fold scores (the
  legend's AUC is the pooled one, not the tables' fold mean).
- :func:`metric_bars`: each metric's fold mean with ± sd error bars, per feature set and
  label fraction.
- :func:`correlation_density`: the paper's Fig. 2, the density of pairwise Pearson
  correlations between the features of each table, tables overlaid.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .tables import feature_columns
from .utils import atomic_path


def _figure(width: float = 6.0, height: float = 4.5):
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot) never touches a GUI backend, also inside napari.
    return Figure(figsize=(width, height), dpi=120)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def roc_curves(
    predictions: pd.DataFrame, path: str | Path, label_fraction: float, classes: list[str], positive: str
) -> Path:
    """ROC curve of each feature set at one label fraction (all repeats' out-of-fold scores pooled).

    For more than two classes the curve is the ``positive`` (minor) class against the rest.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure()
    ax = fig.add_subplot(111)
    sel = predictions[np.isclose(predictions["label_fraction"].astype(float), label_fraction)]
    col = "score" if len(classes) == 2 else f"score_{positive}"
    for name, g in sel.groupby("feature_set", sort=False):
        truth = g["y_true"].astype(str).to_numpy() == positive
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, g[col].to_numpy(float))
        ax.plot(fpr, tpr, label=f"{name} (pooled AUC {roc_auc_score(truth, g[col]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel(f"sensitivity ({positive})")
    repeats = sel["repeat"].nunique() if "repeat" in sel else 1
    pooled = "all test folds pooled" + (f", {repeats} repeats" if repeats > 1 else "")
    ax.set_title(f"ROC, {label_fraction:.0%} of the training labels ({pooled})", fontsize="medium")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def metric_bars(results: pd.DataFrame, path: str | Path) -> Path:
    """One panel per metric: fold mean ± sd over folds and repeats, bars per feature set and fraction."""
    metrics = list(dict.fromkeys(results["metric"]))
    names = list(dict.fromkeys(results["feature_set"]))
    fractions = sorted(set(results["label_fraction"]), reverse=True)
    agg = results.groupby(["metric", "feature_set", "label_fraction"])["value"].agg(["mean", "std"])
    fig = _figure(3.2 * len(metrics), 3.8)
    width = 0.8 / max(len(fractions), 1)
    x = np.arange(len(names))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for j, frac in enumerate(fractions):
            means = [agg["mean"].get((metric, n, frac), np.nan) for n in names]
            sds = [np.nan_to_num(agg["std"].get((metric, n, frac), np.nan)) for n in names]
            ax.bar(
                x + (j - (len(fractions) - 1) / 2) * width, means, width, yerr=sds, capsize=3, label=f"{frac:g} labels"
            )
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize="small")
        ax.set_ylim(0, 1.05)
        ax.set_title(metric.replace("_", " ") + "\n(fold mean ± sd)", fontsize="medium")
        if i == 0:
            ax.legend(fontsize="small")
    return _save(fig, path)


def pairwise_correlations(table: pd.DataFrame) -> np.ndarray:
    """Pearson r of every pair of numeric, non-constant feature columns (upper triangle), (p,)."""
    cols = [c for c in feature_columns(table) if pd.api.types.is_numeric_dtype(table[c])]
    X = table[cols].to_numpy(float)
    keep = np.nanstd(X, axis=0) > 0
    X = X[:, keep]
    if X.shape[1] < 2:
        raise ValueError("need at least two non-constant numeric features to correlate")
    frame = pd.DataFrame(X)
    r = frame.corr(method="pearson").to_numpy()  # pairwise-complete, NaN-tolerant
    iu = np.triu_indices_from(r, k=1)
    vals = r[iu]
    return vals[np.isfinite(vals)]


def correlation_density(tables: dict[str, pd.DataFrame], path: str | Path, bins: int = 400) -> Path:
    """The paper's Fig. 2: density of pairwise Pearson correlations, one curve per table.

    Parameters
    ----------
    tables : name -> feature table (``ID`` etc. are ignored; constant columns skipped)
    path : PNG to write
    bins : points on r in [-1, 1] where the Gaussian KDE is evaluated
    """
    from scipy.stats import gaussian_kde

    fig = _figure()
    ax = fig.add_subplot(111)
    grid = np.linspace(-1, 1, bins)
    for name, table in tables.items():
        r = pairwise_correlations(table)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            density = gaussian_kde(r)(grid) if np.ptp(r) > 0 else np.histogram(r, bins=grid, density=True)[0]
        ax.plot(grid[: len(density)], density, label=f"{name} ({len(r)} pairs, mean |r| {np.mean(np.abs(r)):.2f})")
    ax.set_xlabel("Pearson correlation coefficient r between two features")
    ax.set_ylabel("density")
    ax.set_xlim(-1, 1)
    ax.set_title("Pairwise feature correlations")
    ax.legend(fontsize="small")
    return _save(fig, path)

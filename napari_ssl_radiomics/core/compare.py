"""Does SSL add anything? Paired comparisons of feature sets on the same folds.

Every feature set of an evaluation is scored on the same (repeat, fold) test folds, so
two sets can be compared fold by fold: the difference d_j of a metric on fold j, for the
J = folds x repeats folds. The folds' training parts overlap, so the d_j are correlated
and the plain t-test's variance is too small. The Nadeau-Bengio corrected resampled
t-test (Nadeau & Bengio, Machine Learning 52, 2003; Bouckaert & Frank, PAKDD 2004)
widens it::

    var = (1 / J + n_test / n_train) * s^2,   t = mean(d) / sqrt(var),   df = k - 1

with s^2 the sample variance of the d_j. ``n_test / n_train`` is 1 / ((k - 1) * f) for
k folds and label fraction f. The 95% interval is mean(d) +- t_{0.975, k-1} sqrt(var);
the p-value is two-sided.

Degrees of freedom: k - 1, not J - 1. Repeats shuffle the same cases again, so they add
no independent information to the variance estimate. Measured on pure noise (two noise
feature sets, 400 cohorts of 60-200 cases, 5 folds, 2-10 repeats), the interval covered
0 in 94.5-96.5% of the cohorts with k - 1, and in only 85-92% with J - 1 (as in
Bouckaert & Frank); the plain paired t-test covered 54%. With one repeat both are J - 1
= 4 (92%). More repeats narrow the interval only through a better estimate of s^2.

Which pairs (:func:`default_pairs`): each ``Trad.+X`` against ``Trad.`` (does X add to the
traditional features?), and each ``...+RE`` / ``...+SE`` against the same set without
the module (does the imbalance module help, above all on the minor-class recall, the
paper's claim?).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .tables import TRAD

BINARY = ("auc", "sensitivity", "specificity", "minor_recall", "major_recall", "balanced_accuracy")
MULTI = ("auc", "overall_accuracy", "minor_accuracy", "balanced_accuracy")
COLUMNS = [
    "feature_set",
    "reference",
    "label_fraction",
    "metric",
    "mean_feature_set",
    "mean_reference",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "n_folds",
    "method",
]
METHOD = "Nadeau-Bengio corrected resampled t-test, k-1 df"


def default_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(feature set, reference) pairs among ``names``: Trad.+X vs Trad., X+RE/SE vs X."""
    pairs = []
    for name in names:
        if name.startswith(TRAD + "+") and TRAD in names:
            pairs.append((name, TRAD))
    for name in names:
        for module in ("+RE", "+SE"):
            if name.endswith(module) and name[: -len(module)] in names:
                pairs.append((name, name[: -len(module)]))
    return pairs


def corrected_t(
    diffs: np.ndarray, test_train_ratio: float, level: float = 0.95, df: int | None = None
) -> tuple[float, float, float, float]:
    """Mean, interval and two-sided p-value of paired differences over resampled folds.

    Parameters
    ----------
    diffs : (J,) differences of a metric, one per (repeat, fold)
    test_train_ratio : n_test / n_train of the folds (0: the plain paired t-test)
    level : coverage of the interval
    df : degrees of freedom of the t distribution (default J - 1; :func:`compare_results`
        uses k - 1, see the module's notes)

    Returns
    -------
    (mean, low, high, p). With J < 2 the interval and p are NaN; with no spread at all the
    interval is the mean itself and p is 1 for a zero mean, else 0.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    J = len(d)
    if J == 0:
        return (np.nan, np.nan, np.nan, np.nan)
    mean = float(d.mean())
    if J < 2:
        return (mean, np.nan, np.nan, np.nan)
    var = (1.0 / J + test_train_ratio) * d.var(ddof=1)
    if var <= 0:
        return (mean, mean, mean, 1.0 if mean == 0 else 0.0)
    dof = max(1, min(J - 1, df if df is not None else J - 1))
    se = float(np.sqrt(var))
    q = stats.t.ppf(0.5 + level / 2, dof)
    p = float(2 * stats.t.sf(abs(mean) / se, dof))
    return (mean, mean - q * se, mean + q * se, p)


def compare_results(
    results: pd.DataFrame,
    pairs: list[tuple[str, str]],
    metrics: tuple[str, ...],
    n_folds: int,
    level: float = 0.95,
) -> pd.DataFrame:
    """Paired comparisons from a tidy per-fold results table.

    Parameters
    ----------
    results : ``feature_set, label_fraction, repeat, fold, metric, value``
    pairs : (feature set, reference): the difference is feature set minus reference
    metrics : the metrics to compare
    n_folds : k of the k-fold cross-validation (for n_test / n_train)

    Returns
    -------
    One row per pair, label fraction and metric (:data:`COLUMNS`).
    """
    rows: list[dict[str, Any]] = []
    if results.empty or not pairs:
        return pd.DataFrame(columns=COLUMNS)
    wide = results.pivot_table(
        index=["label_fraction", "repeat", "fold"], columns=["feature_set", "metric"], values="value", dropna=False
    )
    for a, b in pairs:
        for frac in sorted(set(results["label_fraction"]), reverse=True):
            ratio = 1.0 / ((n_folds - 1) * float(frac)) if n_folds > 1 else np.nan
            part = wide.loc[frac]
            for metric in metrics:
                if (a, metric) not in part.columns or (b, metric) not in part.columns:
                    continue
                va, vb = part[(a, metric)].to_numpy(float), part[(b, metric)].to_numpy(float)
                both = np.isfinite(va) & np.isfinite(vb)
                mean, low, high, p = corrected_t(va[both] - vb[both], ratio, level, df=n_folds - 1)
                # Every metric lies in [0, 1], so a difference lies in [-1, 1].
                low, high = max(low, -1.0), min(high, 1.0)
                rows.append(
                    dict(
                        feature_set=a,
                        reference=b,
                        label_fraction=float(frac),
                        metric=metric,
                        mean_feature_set=float(np.mean(va[both])) if both.any() else np.nan,
                        mean_reference=float(np.mean(vb[both])) if both.any() else np.nan,
                        difference=mean,
                        ci_low=low,
                        ci_high=high,
                        p_value=p,
                        n_folds=int(both.sum()),
                        method=METHOD,
                    )
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def compare(result: Any, pairs: list[tuple[str, str]] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Paired comparisons of an :class:`.evaluate.EvalResult` (default: :func:`default_pairs`)."""
    names = list(dict.fromkeys(result.results["feature_set"]))
    pairs = default_pairs(names) if pairs is None else pairs
    metrics = BINARY if len(result.classes) == 2 else MULTI
    return compare_results(result.results, pairs, metrics, result.n_folds, level)


def comparison_markdown(comparisons: pd.DataFrame, minor: str = "") -> str:
    """The comparisons as markdown: one table per question, empty when there is none.

    Cells: difference (feature set minus reference) of the fold means, its 95% interval
    and p-value. The Features widget shows this text.
    """
    if comparisons is None or comparisons.empty:
        return ""
    n = int(comparisons["n_folds"].max())
    lines = [
        "### Does SSL add anything? (paired, on the same folds)",
        "",
        f"Difference of the fold means (feature set minus reference), 95% interval and p-value of the "
        f"{METHOD}, over {n} test folds (folds x repeats). An interval that holds 0 shows no difference "
        "at this size.",
        "",
    ]
    recall = "minor_recall" if "minor_recall" in set(comparisons["metric"]) else "minor_accuracy"
    trad = comparisons[comparisons["reference"] == TRAD]
    module = comparisons[comparisons["reference"] != TRAD]
    if not trad.empty:
        shown = [m for m in ("auc", "sensitivity", "specificity", recall) if m in set(trad["metric"])]
        lines += _table("Traditional features plus SSL features, against traditional features alone", trad, shown)
    if not module.empty:
        label = f"minor-class recall ({minor})" if minor else "minor-class recall"
        lines += _table(f"RE and SE against vanilla 3DSiam, on the {label}", module, [recall])
    return "\n".join(lines)


def _table(title: str, rows: pd.DataFrame, metrics: list[str]) -> list[str]:
    out = [
        f"#### {title}",
        "",
        "| Feature set | vs | Labels | Metric | Difference | 95% interval | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows[rows["metric"].isin(metrics)].itertuples():
        out.append(
            f"| {r.feature_set} | {r.reference} | {r.label_fraction:.0%} | {r.metric.replace('_', ' ')} | "
            f"{r.difference:+.3f} | [{r.ci_low:+.3f}, {r.ci_high:+.3f}] | {_p(r.p_value)} |"
        )
    return out + [""]


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"

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

Undefined results. When the d_j do not vary (every fold gives the same difference, e.g.
two sets with identical predictions, or a metric that is 1 on every fold for both), s^2 is
0 and the t statistic is 0/0 or x/0: the test has no spread to measure the difference
against, so neither a p-value nor an interval exists. They are reported as NaN, and the
``note`` column (and the summary's p cell) says why, rather than a p of 0 ("< 0.001") or 1
that the data cannot support. Fewer than 2 folds with both values give NaN with a note too.

Which pairs (:func:`default_pairs`): each ``Trad.+X`` against ``Trad.`` (does X add to the
traditional features?), each ``...+RE`` / ``...+SE`` against the same set without
the module (does the imbalance module help, above all on the minor-class recall, the
paper's claim?), each 3DSiam set (alone or with ``Trad.``) against the Rubik's-cube
baseline in the same place (Table 2's row 2: does 3DSiam beat another pretext task on
the same encoder?), and, when the supervised baseline ran, the paper's headline claim:
``Trad.+3DSiam+SE`` against ``Supervised``.
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
    "note",
]
METHOD = "Nadeau-Bengio corrected resampled t-test, k-1 df"
#: the feature-set name of the supervised baseline's predictions (core/pipeline.py)
SUPERVISED = "Supervised"
#: the paper's headline claim: traditional + 3DSiam+SE features against the supervised baseline
HEADLINE = (TRAD + "+3DSiam+SE", SUPERVISED)
#: the feature-set name of the Rubik's-cube baseline (``runs.MODE_NAMES["rubik"]``)
BASELINE = "Rubik's cube"
#: differences whose range is at most this count as not varying (metrics lie in [0, 1]; two
#: sets that differ by the same amount on every fold leave rounding noise of about 1e-16)
NO_SPREAD = 1e-12
NO_VARIATION = "the folds' differences do not vary"


def default_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(feature set, reference) pairs among ``names``.

    Trad.+X vs Trad., X+RE/SE vs X, each 3DSiam set vs :data:`BASELINE` (the Rubik's cube,
    with or without Trad.), and :data:`HEADLINE` (Trad.+3DSiam+SE vs Supervised) when both
    sets are among ``names`` (the supervised baseline ran).
    """
    pairs = []
    for name in names:
        if name.startswith(TRAD + "+") and TRAD in names:
            pairs.append((name, TRAD))
    for name in names:
        for module in ("+RE", "+SE"):
            if name.endswith(module) and name[: -len(module)] in names:
                pairs.append((name, name[: -len(module)]))
    for name in names:
        for prefix in ("", TRAD + "+"):
            if name.startswith(prefix + "3DSiam") and prefix + BASELINE in names:
                pairs.append((name, prefix + BASELINE))
    if all(name in names for name in HEADLINE):
        pairs.append(HEADLINE)
    return pairs


def undefined_reason(diffs: np.ndarray) -> str:
    """Why the test of ``diffs`` has no p-value or interval ('' when it has them).

    Fewer than 2 finite differences, or differences that do not vary (their range at most
    :data:`NO_SPREAD`): the t statistic then has no spread to divide by.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return "no fold has a value for both sets"
    if len(d) < 2:
        return "only one fold has a value for both sets"
    if np.ptp(d) <= NO_SPREAD:
        return f"{NO_VARIATION} (every fold gives {float(d.mean()):+.3f})"
    return ""


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
    (mean, low, high, p). The interval and p are NaN when they do not exist: with J < 2, or
    when the differences do not vary (:func:`undefined_reason` says which).
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    J = len(d)
    if J == 0:
        return (np.nan, np.nan, np.nan, np.nan)
    mean = float(d.mean())
    if undefined_reason(d):
        return (mean, np.nan, np.nan, np.nan)
    var = (1.0 / J + test_train_ratio) * d.var(ddof=1)
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
    One row per pair, label fraction and metric (:data:`COLUMNS`); ``note`` says why
    ``ci_low``, ``ci_high`` and ``p_value`` are NaN ('' when they are defined).
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
                diffs = va[both] - vb[both]
                mean, low, high, p = corrected_t(diffs, ratio, level, df=n_folds - 1)
                # Every metric lies in [0, 1], so a difference lies in [-1, 1] (NaN stays NaN).
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
                        note=undefined_reason(diffs),
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
        f"at this size. Where {NO_VARIATION}, the test has no spread to measure the difference against: "
        "its interval and p are undefined, and the p cell says why.",
        "",
    ]
    recall = "minor_recall" if "minor_recall" in set(comparisons["metric"]) else "minor_accuracy"
    trad = comparisons[comparisons["reference"] == TRAD]
    headline = comparisons[comparisons["reference"] == SUPERVISED]
    baselines = [BASELINE, f"{TRAD}+{BASELINE}"]
    baseline = comparisons[comparisons["reference"].isin(baselines)]
    module = comparisons[~comparisons["reference"].isin([TRAD, SUPERVISED, *baselines])]
    if not trad.empty:
        shown = [m for m in ("auc", "sensitivity", "specificity", recall) if m in set(trad["metric"])]
        lines += _table("Traditional features plus SSL features, against traditional features alone", trad, shown)
    if not headline.empty:
        shown = [m for m in ("auc", "sensitivity", "specificity", recall) if m in set(headline["metric"])]
        lines += _table(f"The paper's headline claim: {HEADLINE[0]} against the supervised baseline", headline, shown)
    if not baseline.empty:
        shown = [m for m in ("auc", recall) if m in set(baseline["metric"])]
        lines += _table("3DSiam against the Rubik's-cube baseline on the same encoder (Table 2)", baseline, shown)
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
        note = getattr(r, "note", "")
        note = note if isinstance(note, str) else ""  # a comparisons.csv read back gives NaN for ''
        defined = np.isfinite(r.ci_low) and np.isfinite(r.ci_high)
        interval = f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if defined else "undefined"
        difference = f"{r.difference:+.3f}" if np.isfinite(r.difference) else "–"
        out.append(
            f"| {r.feature_set} | {r.reference} | {r.label_fraction:.0%} | {r.metric.replace('_', ' ')} | "
            f"{difference} | {interval} | {_p(r.p_value, note)} |"
        )
    return out + [""]


def _p(p: float, note: str = "") -> str:
    if not np.isfinite(p):
        return f"undefined: {note}" if note else "undefined"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"

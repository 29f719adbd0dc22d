"""Does SSL add anything? The paired comparisons find a planted difference and, on pure
noise, their 95% interval covers 0 in about 95% of the cohorts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.model_selection import StratifiedKFold

from napari_ssl_radiomics.config import EvaluateConfig
from napari_ssl_radiomics.core.compare import (
    HEADLINE,
    compare_results,
    comparison_markdown,
    corrected_t,
    default_pairs,
)
from napari_ssl_radiomics.core.evaluate import binary_auc, evaluate, write_outputs


def _tables(n=120, seed=0, signal=2.0):
    """Trad. (weak signal), 3DSiam (strong signal) and Trad.+3DSiam, as table2_sets names them."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.3, "LGG", "HGG")
    ids = [f"c{i:03d}" for i in range(n)]
    hit = (y == "LGG").astype(float)
    trad = pd.DataFrame({f"t{j}": rng.normal(size=n) + 0.3 * hit * (j == 0) for j in range(4)})
    ssl = pd.DataFrame({f"s{j}": rng.normal(size=n) + signal * hit for j in range(3)})
    base = pd.DataFrame({"ID": ids, "Label": y})
    return {
        "Trad.": pd.concat([base, trad], axis=1),
        "3DSiam": pd.concat([base, ssl], axis=1),
        "Trad.+3DSiam": pd.concat([base, trad, ssl], axis=1),
    }


def test_planted_signal_is_found_and_written(tmp_path):
    cfg = EvaluateConfig(label_fractions=(1.0,), repeats=2, jobs=1)
    result = evaluate(_tables(), cfg)
    comp = result.comparisons
    assert set(zip(comp["feature_set"], comp["reference"])) == {("Trad.+3DSiam", "Trad.")}
    auc = comp.query("metric == 'auc'").iloc[0]
    assert auc["n_folds"] == 10
    assert auc["difference"] > 0.1 and auc["ci_low"] > 0 and auc["p_value"] < 0.05, auc.to_dict()
    # the difference is the one of the fold means in results.csv
    means = result.results.query("metric == 'auc'").groupby("feature_set")["value"].mean()
    assert auc["difference"] == pytest.approx(means["Trad.+3DSiam"] - means["Trad."])
    assert {"auc", "sensitivity", "specificity", "minor_recall", "major_recall"} <= set(comp["metric"])
    paths = write_outputs(result, tmp_path)
    written = pd.read_csv(tmp_path / "comparisons.csv")
    assert len(written) == len(comp) and tmp_path / "comparisons.csv" in paths
    assert "Does SSL add anything?" in result.summary and "| Trad.+3DSiam | Trad. | 100% | auc |" in result.summary


def test_default_pairs_are_trad_plus_x_and_the_imbalance_modules_against_vanilla():
    names = ["Trad.", "3DSiam", "3DSiam+SE", "3DSiam+RE", "Trad.+3DSiam", "Trad.+3DSiam+SE", "Supervised"]
    assert default_pairs(names) == [
        ("Trad.+3DSiam", "Trad."),
        ("Trad.+3DSiam+SE", "Trad."),
        ("3DSiam+SE", "3DSiam"),
        ("3DSiam+RE", "3DSiam"),
        ("Trad.+3DSiam+SE", "Trad.+3DSiam"),
        ("Trad.+3DSiam+SE", "Supervised"),  # the paper's headline claim
    ]
    assert ("Trad.+3DSiam+SE", "Supervised") not in default_pairs([n for n in names if n != "Supervised"])


def test_corrected_t_is_the_paired_t_test_widened_by_the_training_overlap():
    d = np.random.default_rng(0).normal(0.02, 0.05, size=15)
    mean, low, high, p = corrected_t(d, 0.0)  # no overlap: the ordinary one-sample t-test
    ref = stats.ttest_1samp(d, 0.0)
    assert p == pytest.approx(ref.pvalue) and mean == pytest.approx(d.mean())
    ci = ref.confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high))
    _, low4, high4, p4 = corrected_t(d, 0.25)  # 5 folds: n_test / n_train = 1/4
    assert high4 - low4 == pytest.approx((high - low) * np.sqrt((1 / 15 + 0.25) / (1 / 15)))
    assert p4 > p
    # no spread: the mean stands, the interval and p do not exist
    mean0, *rest = corrected_t(np.zeros(5), 0.25)
    assert mean0 == 0.0 and all(np.isnan(v) for v in rest)


def _noise_results(seed: int, n: int = 60, repeats: int = 2) -> pd.DataFrame:
    """Per-fold AUC of two pure-noise feature sets on shared stratified folds (a cheap linear model)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) < n // 3
    X = {"a": rng.normal(size=(n, 3)), "b": rng.normal(size=(n, 3))}
    rows = []
    for r in range(repeats):
        folds = StratifiedKFold(5, shuffle=True, random_state=seed * 100 + r).split(X["a"], y)
        for k, (tr, te) in enumerate(folds):
            for name, x in X.items():
                w = x[tr][y[tr]].mean(axis=0) - x[tr][~y[tr]].mean(axis=0)  # nearest centroid
                rows.append((name, 1.0, r, k, "auc", binary_auc(y[te], x[te] @ w)))
    return pd.DataFrame(rows, columns=["feature_set", "label_fraction", "repeat", "fold", "metric", "value"])


def test_on_pure_noise_the_interval_covers_zero_in_about_95_percent_of_cohorts():
    covered = []
    for seed in range(200):
        comp = compare_results(_noise_results(seed), [("a", "b")], ("auc",), n_folds=5)
        covered.append(bool(comp["ci_low"].iloc[0] <= 0 <= comp["ci_high"].iloc[0]))
    coverage = float(np.mean(covered))
    # Binomial sd at 200 cohorts is 1.5%. Measured: 0.96 here; the uncorrected paired
    # t-test gives ~0.55 and J - 1 degrees of freedom ~0.88, both below this range.
    assert 0.91 <= coverage <= 0.99, coverage


def _constant_difference_results(offset: float) -> pd.DataFrame:
    """Per-fold AUCs of two sets that differ by exactly ``offset`` on every fold (up to rounding)."""
    a = np.array([0.71, 0.83, 0.64, 0.92, 0.77])
    rows = [(name, 1.0, 0, k, "auc", v) for k, v0 in enumerate(a) for name, v in (("a", v0), ("b", v0 - offset))]
    return pd.DataFrame(rows, columns=["feature_set", "label_fraction", "repeat", "fold", "metric", "value"])


@pytest.mark.parametrize("offset", [0.1, 0.0])
def test_identical_fold_differences_give_no_p_value_and_say_why(offset):
    comp = compare_results(_constant_difference_results(offset), [("a", "b")], ("auc",), n_folds=5)
    row = comp.iloc[0]
    assert row["difference"] == pytest.approx(offset)
    # no spread to test against: not p < 0.001 (nor p = 1), but undefined, with the reason
    assert np.isnan(row["p_value"]) and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"]), row.to_dict()
    assert "the folds' differences do not vary" in row["note"]
    text = comparison_markdown(comp.assign(reference="Trad.", feature_set="Trad.+a"))
    cells = [line for line in text.splitlines() if line.startswith("| Trad.+a |")]
    assert cells and "| undefined | undefined: the folds' differences do not vary" in cells[0], text
    assert "< 0.001" not in text and "undefined" in text.split("####")[0]  # the header explains it too
    # a varying difference keeps its p and interval, with an empty note
    varying = _constant_difference_results(offset)
    varying.loc[0, "value"] += 0.05
    row = compare_results(varying, [("a", "b")], ("auc",), n_folds=5).iloc[0]
    assert np.isfinite(row["p_value"]) and row["ci_low"] < row["ci_high"] and row["note"] == ""


def test_the_headline_claim_is_compared_with_the_supervised_baseline(tmp_path):
    tables = _tables()
    tables["Trad.+3DSiam+SE"] = tables.pop("Trad.+3DSiam")
    cfg = EvaluateConfig(label_fractions=(1.0,), jobs=1)
    first = evaluate(tables, cfg)
    # a stand-in supervised baseline on the same folds: the traditional set's own predictions
    supervised = first.predictions.query("feature_set == 'Trad.'").drop(columns=["feature_set", "y_true"])
    result = evaluate(tables, cfg, predictions={"Supervised": supervised}, folds=first.folds)
    comp = result.comparisons
    headline = comp[(comp["feature_set"] == "Trad.+3DSiam+SE") & (comp["reference"] == "Supervised")]
    assert set(headline["metric"]) >= {"auc", "sensitivity", "specificity", "minor_recall"}
    auc = headline.query("metric == 'auc'").iloc[0]
    ref = comp.query("feature_set == 'Trad.+3DSiam+SE' and reference == 'Trad.' and metric == 'auc'").iloc[0]
    assert auc["difference"] == pytest.approx(ref["difference"]) and auc["p_value"] == pytest.approx(ref["p_value"])
    assert "The paper's headline claim: Trad.+3DSiam+SE against the supervised baseline" in result.summary
    assert "| Trad.+3DSiam+SE | Supervised | 100% | auc |" in result.summary
    write_outputs(result, tmp_path)
    written = pd.read_csv(tmp_path / "comparisons.csv")
    assert ((written["feature_set"] == "Trad.+3DSiam+SE") & (written["reference"] == "Supervised")).any()
    assert "note" in written.columns and HEADLINE == ("Trad.+3DSiam+SE", "Supervised")
    # without the baseline there is no such row
    assert not (first.comparisons["reference"] == "Supervised").any()

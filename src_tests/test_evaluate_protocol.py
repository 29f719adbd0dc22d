"""The paper's evaluation on cases where the answer is known, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

from napari_ssl_radiomics.config import EvaluateConfig
from napari_ssl_radiomics.core.evaluate import (
    C_GRID,
    LinearSVMCV,
    binary_auc,
    evaluate,
    labels_of,
    make_folds,
    splits,
    svm_pipeline,
    write_outputs,
)


def _cohort(n=100, minority=0.25, seed=0, groups=False, classes=("H", "L")):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < minority, classes[1], classes[0])
    if len(classes) == 3:
        y = rng.choice(list(classes), n, p=[0.5, 0.2, 0.3])
    ids = [f"p{i:03d}" for i in range(n)]
    table = pd.DataFrame({"ID": ids, "Label": y})
    if groups:
        table["Group"] = [f"patient{i // 3}" for i in range(n)]  # three scans per patient
    codes = np.searchsorted(sorted(set(y)), y)
    sep = table.assign(**{f"f{j}": rng.normal(size=n) + 4.0 * (codes == j % len(set(y))) for j in range(6)})
    rnd = table[["ID"]].assign(**{f"r{j}": rng.normal(size=n) for j in range(6)})
    return sep, rnd


@pytest.fixture(scope="module")
def binary_result():
    sep, rnd = _cohort(n=100)
    return evaluate({"separable": sep, "random": rnd}, EvaluateConfig(repeats=3, seed=1)), sep


def test_separable_features_give_auc_one_and_random_about_half(binary_result):
    result, _ = binary_result
    auc = result.results[result.results["metric"] == "auc"]
    sep_auc = auc[auc["feature_set"] == "separable"]["value"]
    assert (sep_auc == 1.0).all()
    rnd_mean = auc[auc["feature_set"] == "random"].groupby("repeat")["value"].mean()
    assert len(rnd_mean) == 3
    assert abs(rnd_mean.mean() - 0.5) < 0.12, rnd_mean.tolist()
    assert result.positive == "L"  # the minority class is the positive one
    sens = result.results.query("feature_set == 'separable' and metric == 'sensitivity' and label_fraction == 1.0")[
        "value"
    ]
    assert sens.mean() > 0.9


def test_metrics_equal_scikit_learn_on_the_predictions(binary_result):
    result, _ = binary_result
    preds = result.predictions
    for (name, frac, r, k), g in preds.groupby(["feature_set", "label_fraction", "repeat", "fold"]):
        got = result.results.query("feature_set == @name and label_fraction == @frac and repeat == @r and fold == @k")
        got = dict(zip(got["metric"], got["value"]))
        truth = g["y_true"] == "L"
        assert got["auc"] == pytest.approx(roc_auc_score(truth, g["score"]), abs=1e-12)
        assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(g["y_true"], g["y_pred"]))
        assert got["sensitivity"] == pytest.approx(recall_score(g["y_true"], g["y_pred"], pos_label="L"))
        assert got["specificity"] == pytest.approx(recall_score(g["y_true"], g["y_pred"], pos_label="H"))


def test_binary_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    truth = rng.random(57) < 0.3
    scores = np.round(rng.normal(size=57), 1)  # many ties
    assert binary_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)


def test_folds_are_stratified_grouped_and_shared():
    sep, rnd = _cohort(n=90, groups=True)
    cfg = EvaluateConfig(repeats=2, seed=0)
    folds = make_folds(sep, cfg)
    assert set(folds.columns) == {"ID", "repeat", "fold"} and len(folds) == 2 * 90
    merged = folds.merge(sep[["ID", "Label", "Group"]], on="ID")
    for r, g in merged.groupby("repeat"):
        assert g.groupby("Group")["fold"].nunique().max() == 1  # a patient is never on both sides
        share = pd.crosstab(g["fold"], g["Label"], normalize="columns")
        assert (share.sub(1 / 5).abs() < 0.12).all().all()  # each fold holds ~1/5 of each class
    a, b = (folds[folds.repeat == r].set_index("ID")["fold"] for r in (0, 1))
    assert (a != b).any()  # another repeat, other folds
    result = evaluate({"sep": sep, "rnd": rnd}, cfg)
    pd.testing.assert_frame_equal(result.folds, folds)
    for name in ("sep", "rnd"):
        p = result.predictions[result.predictions.feature_set == name]
        assert (p.merge(folds, on=["ID", "repeat"], suffixes=("", "_f")).eval("fold == fold_f")).all()


def test_half_of_the_labels_is_a_stratified_subset_with_the_same_test_folds():
    sep, rnd = _cohort(n=100)
    cfg = EvaluateConfig(seed=2)
    labels = labels_of({"sep": sep}, cfg)
    folds = make_folds(labels, cfg)
    by_key = {(s.fold, s.fraction): s for s in splits(folds, labels, (1.0, 0.5), cfg.seed)}
    for k in range(5):
        full, half = by_key[(k, 1.0)], by_key[(k, 0.5)]
        assert full.test == half.test
        assert set(half.train) < set(full.train)
        assert abs(len(half.train) - len(full.train) / 2) <= 1
        y = labels.y
        assert abs((y[half.train] == "L").mean() - (y[full.train] == "L").mean()) < 0.03
    again = {(s.fold, s.fraction): s.train for s in splits(folds, labels, (1.0, 0.5), cfg.seed)}
    assert all(again[key] == by_key[key].train for key in by_key)  # the same for every feature set
    result = evaluate({"sep": sep, "rnd": rnd}, cfg)
    p = result.predictions
    assert (
        p[p.label_fraction == 1.0].sort_values(["feature_set", "ID"])["fold"].to_numpy()
        == p[p.label_fraction == 0.5].sort_values(["feature_set", "ID"])["fold"].to_numpy()
    ).all()


def test_linear_svm_cv_picks_c_from_the_grid_and_refits_on_everything():
    sep, _ = _cohort(n=80)
    X, y = sep.filter(like="f").to_numpy(), sep["Label"].to_numpy()
    model = LinearSVMCV(random_state=0).fit(X, y)
    assert model.C_ in C_GRID
    ref = svm_pipeline(model.C_).fit(X, y)
    np.testing.assert_allclose(model.decision_function(X), ref.decision_function(X), rtol=1e-6, atol=1e-8)


def test_multiclass_metrics_and_external_predictions(tmp_path):
    sep, rnd = _cohort(n=120, classes=("I", "II", "III"))
    cfg = EvaluateConfig(label_fractions=(1.0,), seed=0)
    result = evaluate({"sep": sep}, cfg)
    assert result.positive == "II"  # the minor class
    preds = result.predictions
    for (_, k), g in preds.groupby(["repeat", "fold"]):
        got = result.results.query("fold == @k").set_index("metric")["value"]
        assert got["overall_accuracy"] == pytest.approx(accuracy_score(g["y_true"], g["y_pred"]))
        assert got["minor_accuracy"] == pytest.approx(
            recall_score(g["y_true"], g["y_pred"], labels=["II"], average="macro")
        )
        ovr = np.mean([roc_auc_score(g["y_true"] == c, g[f"score_{c}"]) for c in ("I", "II", "III")])
        assert got["auc"] == pytest.approx(ovr)
    assert result.results.query("metric == 'overall_accuracy'")["value"].mean() > 0.9
    # the same predictions, given as an external feature set, score the same
    ext = preds.drop(columns=["feature_set", "y_true"])
    again = evaluate({"rnd": rnd.assign(Label=sep["Label"])}, cfg, predictions={"copy": ext})
    a = result.results.drop(columns="feature_set").reset_index(drop=True)
    b = again.results[again.results.feature_set == "copy"].drop(columns="feature_set").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="folds"):
        evaluate({"sep": sep}, EvaluateConfig(label_fractions=(1.0,), seed=5), predictions={"copy": ext})
    paths = write_outputs(again, tmp_path / "out")
    assert {p.name for p in paths} >= {"results.csv", "predictions.csv", "summary.md", "roc_100pct.png", "metrics.png"}


def test_outputs_are_written_and_summary_is_laid_out_like_table_2(binary_result, tmp_path):
    result, _ = binary_result
    paths = write_outputs(result, tmp_path / "ev")
    names = {p.name for p in paths}
    assert {
        "results.csv",
        "predictions.csv",
        "folds.csv",
        "summary.md",
        "evaluate.json",
        "roc_100pct.png",
        "roc_50pct.png",
        "metrics.png",
    } <= names
    assert all(p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "ev" / "roc_100pct.png").read_bytes()[:4] == b"\x89PNG"
    tidy = pd.read_csv(tmp_path / "ev" / "results.csv")
    assert list(tidy.columns) == ["feature_set", "label_fraction", "repeat", "fold", "metric", "value"]
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert list(pred.columns[:8]) == [
        "ID",
        "feature_set",
        "label_fraction",
        "repeat",
        "fold",
        "y_true",
        "y_pred",
        "score",
    ]
    summary = (tmp_path / "ev" / "summary.md").read_text(encoding="utf-8")
    row = next(line for line in summary.splitlines() if line.startswith("| separable |"))
    assert row.count("/") == 2 and row.count("±") == 4  # sens/spec at 100% and 50% labels
    assert "100% labels | 50% labels" in summary and "### AUC" in summary


def test_paper_convention_takes_the_majority_as_positive_and_names_both_recalls():
    sep, _ = _cohort(n=100)
    noisy = sep.assign(f0=sep["f0"] + np.random.default_rng(5).normal(scale=4.0, size=len(sep)))
    noisy = noisy[["ID", "Label", "f0"]]
    cfg = EvaluateConfig(label_fractions=(1.0,), jobs=1)
    minority = evaluate({"t": noisy}, cfg)
    majority = evaluate({"t": noisy}, EvaluateConfig(label_fractions=(1.0,), convention="majority", jobs=1))
    assert (minority.positive, minority.minor, minority.major) == ("L", "L", "H")
    assert (majority.positive, majority.minor, majority.major) == ("H", "L", "H")
    a = minority.results.pivot_table(index="fold", columns="metric", values="value")
    b = majority.results.pivot_table(index="fold", columns="metric", values="value")
    # the paper's "specificity" is the minor-class recall; the recalls do not depend on the convention
    np.testing.assert_allclose(b["specificity"], a["sensitivity"])
    np.testing.assert_allclose(b["sensitivity"], a["specificity"])
    np.testing.assert_allclose(a["minor_recall"], a["sensitivity"])
    np.testing.assert_allclose(b["minor_recall"], a["minor_recall"])
    np.testing.assert_allclose(b["auc"], a["auc"])
    assert "positive class: H, the majority class" in majority.summary
    assert "Minor-class recall (L) / major-class recall (H)" in majority.summary
    # with the minority positive the recalls are sensitivity / specificity: no second, identical table
    assert "Minor-class recall" not in minority.summary and "positive class: L" in minority.summary
    # one repeat: a pooled row is one value, printed without a spread
    pooled = minority.summary.split("### Pooled")[1].splitlines()
    row = next(line for line in pooled if line.startswith("| t |"))
    assert "±" not in row, row


def test_pooled_metrics_score_all_test_samples_of_a_repeat_together(binary_result):
    result, _ = binary_result
    pooled = result.pooled
    assert set(pooled.columns) == {"feature_set", "label_fraction", "repeat", "metric", "value"}
    preds = result.predictions
    for (name, frac, r), g in preds.groupby(["feature_set", "label_fraction", "repeat"]):
        got = pooled.query("feature_set == @name and label_fraction == @frac and repeat == @r")
        got = dict(zip(got["metric"], got["value"]))
        assert got["auc"] == pytest.approx(roc_auc_score(g["y_true"] == "L", g["score"]))
        assert got["minor_recall"] == pytest.approx(recall_score(g["y_true"], g["y_pred"], pos_label="L"))
        assert got["major_recall"] == pytest.approx(recall_score(g["y_true"], g["y_pred"], pos_label="H"))
    assert "fold mean ± sd over 5 folds × 3 repeat(s)" in result.summary
    assert "### Pooled over all test samples" in result.summary


def test_c_search_stops_where_the_validation_score_flattens_and_picks_the_full_grid_s_c():
    sep, rnd = _cohort(n=100, seed=4)
    y = sep["Label"].to_numpy()
    for table in (sep, rnd):
        X = table.filter(regex="^[fr][0-9]").to_numpy()
        full = LinearSVMCV(random_state=0, patience=0).fit(X, y)
        fast = LinearSVMCV(random_state=0).fit(X, y)
        assert len(full.tried_) == len(C_GRID)
        best = max(range(len(full.tried_)), key=lambda i: full.tried_[i][1])
        # it stops two values after its best, and finds the full grid's C on these cohorts
        assert len(fast.tried_) <= min(len(C_GRID), best + 3)
        assert fast.C_ == full.C_


def test_the_summary_says_how_the_folds_were_grouped():
    sep, _ = _cohort(n=60, groups=True)
    grouped = evaluate({"sep": sep}, EvaluateConfig(label_fractions=(1.0,)))
    assert "stratified 5-fold cross-validation, grouped by 'Group' (20 groups, each kept whole in one test fold)" in (
        grouped.summary
    )
    plain = evaluate({"sep": sep.drop(columns="Group")}, EvaluateConfig(label_fractions=(1.0,)))
    assert "stratified 5-fold cross-validation, not grouped (no 'Group' column" in plain.summary
    off = evaluate({"sep": sep}, EvaluateConfig(label_fractions=(1.0,), group=""))
    assert "stratified 5-fold cross-validation, not grouped;" in off.summary  # asked for: nothing to explain


def test_the_validation_part_never_splits_a_group_even_with_fewer_groups_than_its_splits():
    """With 4 groups in a training part (fewer than the 5 validation splits), C was picked on an ungrouped
    split: a patient's scans on both sides of it. Now the validation part is whole groups."""
    sep, _ = _cohort(n=48, seed=2)
    X, y = sep.filter(like="f").to_numpy(), sep["Label"].to_numpy()
    groups = np.array([f"patient{i % 4}" for i in range(len(y))])
    for seed in range(5):
        model = LinearSVMCV(random_state=seed).fit(X, y, groups)
        val = model.validation_
        assert len(val) and model.C_ in C_GRID
        train = np.setdiff1d(np.arange(len(y)), val)
        assert not set(groups[val]) & set(groups[train]), seed
    # one group only: nothing can be held out without splitting it, so the middle of the grid
    one = LinearSVMCV(random_state=0).fit(X, y, np.array(["p"] * len(y)))
    assert len(one.validation_) == 0 and one.C_ == sorted(C_GRID)[len(C_GRID) // 2] and not one.tried_

"""Bad input to the evaluation: each problem gets a message that says what to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_ssl_radiomics.config import EvaluateConfig
from napari_ssl_radiomics.core.evaluate import EvaluationWarning, evaluate, make_folds
from napari_ssl_radiomics.core.tables import FeatureWarning

CFG = EvaluateConfig(label_fractions=(1.0,))


def _table(labels, seed=0, n_feat=4):
    rng = np.random.default_rng(seed)
    n = len(labels)
    return pd.DataFrame(
        {"ID": [f"c{i}" for i in range(n)], "Label": labels, **{f"f{j}": rng.normal(size=n) for j in range(n_feat)}}
    )


def test_no_label_column():
    with pytest.raises(ValueError, match=r"no 'Label' column.*--manifest"):
        evaluate({"t": _table(["a", "b"] * 10).drop(columns="Label")}, CFG)


def test_one_class_only():
    with pytest.raises(ValueError, match="one class only.*at least two classes"):
        evaluate({"t": _table(["a"] * 20)}, CFG)


def test_minor_class_with_a_single_case():
    with pytest.raises(ValueError, match=r"\['b'\].*fewer than 2 cases"):
        evaluate({"t": _table(["a"] * 19 + ["b"])}, CFG)


def test_minor_class_smaller_than_the_folds_uses_fewer_folds():
    with pytest.warns(EvaluationWarning, match="3 cases, fewer than 5 folds: using 3 folds"):
        result = evaluate({"t": _table(["a"] * 17 + ["b"] * 3)}, CFG)
    assert result.folds["fold"].nunique() == 3
    assert "using 3 folds" in result.summary


def test_bad_columns_are_dropped_with_warnings_listing_them():
    t = _table(["a", "b"] * 15).assign(text="x", empty=np.nan, same=7.0)
    with pytest.warns(FeatureWarning) as record:
        result = evaluate({"t": t}, CFG)
    messages = " ".join(str(w.message) for w in record)
    assert "non-numeric column(s): text" in messages
    assert "all-empty (NaN or infinite) column(s): empty" in messages
    assert "constant column(s): same" in messages
    assert result.feature_sets["t"] == ["f0", "f1", "f2", "f3"]


def test_infinite_values_get_their_own_message_not_constant():
    t = _table(["a", "b"] * 15)
    t["spiky"] = np.where(np.arange(30) == 4, np.inf, t["f0"] * 2)  # informative, one inf (case c4)
    t["flat"] = np.where(np.arange(30) == 7, -np.inf, 3.0)  # one value apart from its inf
    with pytest.warns(FeatureWarning) as record:
        result = evaluate({"t": t}, CFG)
    messages = [str(w.message) for w in record]
    assert any("1 column(s) hold infinite values: spiky (first: spiky of case c4)" in m for m in messages), messages
    assert any("infinite-valued column(s): flat" in m for m in messages), messages
    assert not any("constant column(s)" in m for m in messages), messages
    assert "spiky" in result.feature_sets["t"] and "flat" not in result.feature_sets["t"]


def test_labels_that_differ_only_in_case_are_refused_naming_both():
    labels = ["No"] * 10 + ["no"] * 4 + ["yes"] * 14
    with pytest.raises(ValueError, match=r"differ only in case or spaces: 'No' \(10 cases\) and 'no' \(4 cases\)"):
        evaluate({"t": _table(labels)}, CFG)


def test_no_usable_feature():
    t = _table(["a", "b"] * 10, n_feat=0).assign(same=1.0)
    with pytest.raises(ValueError, match="no numeric feature column"):
        with pytest.warns(FeatureWarning):
            evaluate({"t": t}, CFG)


def test_ids_that_do_not_match_between_tables():
    a = _table(["a", "b"] * 10)
    b = a.copy()
    b.loc[:2, "ID"] = ["x1", "x2", "x3"]
    with pytest.raises(ValueError, match=r"a lacks 3 of 23 IDs \(x1, x2, x3\).*b lacks 3 of 23 IDs \(c0, c1, c2\)"):
        evaluate({"a": a, "b": b}, CFG)


def test_labels_that_disagree_between_tables():
    a = _table(["a", "b"] * 10)
    b = a.assign(Label=["b", "a"] * 10)
    with pytest.raises(ValueError, match="'Label' differs between the tables for 20 case"):
        evaluate({"a": a, "b": b}, CFG)


def test_unknown_positive_class():
    with pytest.raises(ValueError, match="positive class 'z' is not among"):
        evaluate({"t": _table(["a", "b"] * 10)}, EvaluateConfig(positive="z"))


def test_minority_class_in_a_single_group_names_the_class_the_group_and_the_way_out():
    t = _table(["a"] * 16 + ["b"] * 4).assign(Group=[f"g{i % 4}" for i in range(16)] + ["g9"] * 4)
    with pytest.raises(ValueError, match=r"class 'b' of 'Label' lies in a single group of 'Group' \('g9'.*--group ''"):
        evaluate({"t": t}, CFG)


def _grouped(n_groups: int, column: str = "Group"):
    """24 cases (16 a, 8 b) in ``n_groups`` groups, each group holding both classes."""
    return _table(["a", "b", "a"] * 8).assign(**{column: [f"site{(i // 3) % n_groups}" for i in range(24)]})


def test_fewer_groups_than_folds_is_refused_naming_the_column_the_count_and_the_way_out():
    """Three centres as groups made 3-fold leave-centre-out CV, with only a warning (issue 17)."""
    message = r"'Group' holds only 3 groups, fewer than the 5 folds.*--folds 3;.*--group ''"
    with pytest.raises(ValueError, match=message):
        evaluate({"t": _grouped(3)}, CFG)
    with pytest.raises(ValueError, match=message):  # the folds the pipeline fixes first refuse alike
        make_folds(_grouped(3), CFG)
    with pytest.raises(ValueError, match=r"'Site' holds only 4 groups, fewer than the 5 folds.*--folds 4"):
        evaluate({"t": _grouped(4, "Site")}, EvaluateConfig(label_fractions=(1.0,), group="Site"))
    # the ways out named in the message work: fewer folds (leave-one-group-out), or no grouping
    assert evaluate({"t": _grouped(3)}, EvaluateConfig(label_fractions=(1.0,), folds=3)).n_folds == 3
    assert evaluate({"t": _grouped(3)}, EvaluateConfig(label_fractions=(1.0,), group="")).n_folds == 5
    assert evaluate({"t": _grouped(5)}, CFG).n_folds == 5  # as many groups as folds: run as asked

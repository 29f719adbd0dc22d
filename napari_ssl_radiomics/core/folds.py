"""Labels, folds, splits and label subsampling of the evaluation (shared with the supervised baseline).

The evaluated cases' classes and groups (:func:`labels_of`, with its refusals), the test
folds of every repeat (:func:`make_folds`), the (repeat, fold, label fraction) splits that
every feature set and the supervised baseline share (:func:`splits`) and the stratified
subsample of a training fold's labels (:func:`subsample`). The choices behind them are in
:mod:`.evaluate`'s docstring.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from ..config import EvaluateConfig
from .tables import ID, _some


class EvaluationWarning(UserWarning):
    """The evaluation changed something to go on (fewer folds, dropped cases)."""


@dataclass
class Labels:
    """Class, group and class roles of the evaluated cases (index: ID)."""

    y: pd.Series
    groups: pd.Series | None
    classes: list[str]
    positive: str  # binary: the positive class; multi-class: the minor class
    folds: int
    warnings: list[str] = field(default_factory=list)
    minor: str = ""  # the least frequent class
    major: str = ""  # the most frequent class

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2


def _check_spellings(counts: pd.Series, label: str) -> None:
    """Refuse classes that differ only in case or surrounding spaces ('No' and 'no'): they are
    almost always one class written two ways, and would be evaluated as two."""
    spellings: dict[str, list[str]] = {}
    for cls in sorted(counts.index, key=str):
        spellings.setdefault(str(cls).strip().casefold(), []).append(str(cls))
    for names in spellings.values():
        if len(names) > 1:
            both = " and ".join(f"{n!r} ({counts[n]} cases)" for n in names)
            raise ValueError(
                f"'{label}' holds classes that differ only in case or spaces: {both}; they would be evaluated as "
                "separate classes. Write each class one way in the labels (the manifest or the table) and run again"
            )


def labels_of(tables: dict[str, pd.DataFrame], cfg: EvaluateConfig) -> Labels:
    """Collect labels (and groups) from the tables and check they allow the evaluation.

    Raises
    ------
    ValueError
        No label column, one class only, a class with fewer than 2 cases, fewer groups than
        folds, a class in one group only, or tables that disagree (each message says what
        to do).
    """
    label, group = cfg.label, cfg.group
    y = _column(tables, label)
    if y is None:
        raise ValueError(
            f"no '{label}' column in any feature table ({', '.join(tables)}); add the classes with "
            "`ssl-radiomics combine TABLE --manifest MANIFEST --out features.csv`, or name the column with --label"
        )
    notes = []
    unlabelled = y.index[y.str.strip() == ""].tolist()
    if unlabelled:
        notes.append(f"{len(unlabelled)} case(s) without a {label} were left out ({_some(unlabelled, 5)})")
        y = y.drop(unlabelled)
    counts = y.value_counts()
    _check_spellings(counts, label)
    if len(counts) < 2:
        raise ValueError(
            f"'{label}' holds one class only ({counts.index[0] if len(counts) else 'none'}, {len(y)} cases); "
            "the evaluation needs at least two classes"
        )
    if counts.min() < 2:
        small = counts[counts < 2].index.tolist()
        raise ValueError(
            f"class(es) {small} of '{label}' have fewer than 2 cases; cross-validation needs at least 2 per class "
            "(add cases or merge the class with another)"
        )
    groups = _column(tables, group) if group else None
    if groups is not None:
        groups = groups.reindex(y.index)
        if (groups.str.strip() == "").all():
            groups = None
        else:
            # A case without a group is its own group.
            groups = groups.where(groups.str.strip() != "", "__case__" + groups.index.to_series())
    if groups is not None:
        _check_groups(y, groups, label, group)
    folds = cfg.folds
    if counts.min() < folds:
        notes.append(
            f"the smallest class ({counts.idxmin()}) has {counts.min()} cases, fewer than {folds} folds: "
            f"using {counts.min()} folds instead (add cases for {folds}-fold cross-validation)"
        )
        folds = int(counts.min())
    if groups is not None and groups.nunique() < folds:
        raise ValueError(too_few_groups(group, int(groups.nunique()), folds))
    classes = sorted(counts.index.tolist())
    # A tie goes to the first class in sorted order.
    minor = str(counts.sort_index().idxmin())
    major = next(c for c in classes if c != minor) if len(classes) == 2 else str(counts.sort_index().idxmax())
    if cfg.positive:
        if cfg.positive not in classes:
            raise ValueError(
                f"positive class {cfg.positive!r} is not among the classes {classes}; set EvaluateConfig.positive to one of them"
            )
        positive = cfg.positive
    else:
        positive = minor if cfg.convention == "minority" or len(classes) > 2 else major
    for n in notes:
        warnings.warn(n, EvaluationWarning, stacklevel=3)
    return Labels(y, groups, classes, positive, folds, notes, minor=minor, major=major)


def too_few_groups(group: str, n_groups: int, folds: int) -> str:
    """The refusal of grouped cross-validation with fewer groups than folds: what, why, and the way out."""
    what = "a single group" if n_groups == 1 else f"only {n_groups} groups"
    independent = (
        f"if the cases are independent ('{group}' is a site or a centre, not the patient), evaluate without "
        "grouping (--group ''; in a config file, evaluate.folds and evaluate.group)"
    )
    way_out = (
        f"Use {n_groups} folds or fewer (--folds {n_groups}; {n_groups} folds is leave-one-group-out, another "
        f"question than {folds}-fold CV), or, {independent}"
        if n_groups > 1
        else independent[0].upper() + independent[1:]
    )
    return (
        f"'{group}' holds {what}, fewer than the {folds} folds: grouped folds keep each group whole, so they cannot "
        f"make {folds} folds. {way_out}"
    )


def _check_groups(y: pd.Series, groups: pd.Series, label: str, group: str) -> None:
    """Raise when a class lies in one group only: grouped folds could never train on it."""
    per_class = groups.groupby(y).nunique()
    single = per_class[per_class < 2]
    if len(single):
        cls = single.index[0]
        where = groups[y == cls].iloc[0]
        raise ValueError(
            f"class {cls!r} of '{label}' lies in a single group of '{group}' ({where!r}, {int((y == cls).sum())} "
            f"cases): grouped folds keep a group on one side, so no training part would hold class {cls!r}. "
            f"Add cases of {cls!r} from other groups, or, if the cases are independent, evaluate without "
            f"grouping (--group '' or EvaluateConfig.group = '')"
        )


def _column(tables: dict[str, pd.DataFrame], col: str) -> pd.Series | None:
    out = None
    for t in tables.values():
        if col not in t.columns:
            continue
        s = t.set_index(t[ID].astype(str))[col].fillna("").astype(str)
        if out is None:
            out = s
            continue
        other = out.reindex(s.index)
        differ = s.index[(s != other) & (s != "") & (other != "")].tolist()
        if differ:
            raise ValueError(
                f"'{col}' differs between the tables for {len(differ)} case(s) ({_some(differ, 5)}); fix the tables"
            )
    return out


def make_folds(labels: Labels | pd.DataFrame, cfg: EvaluateConfig) -> pd.DataFrame:
    """Test-fold assignment of every case, once per repeat.

    Parameters
    ----------
    labels : :class:`Labels`, or a table with ``ID`` and the label (and group) columns
    cfg : folds, repeats, seed (repeat r uses seed + r)

    Returns
    -------
    DataFrame with columns ``ID, repeat, fold`` (one row per case and repeat, IDs sorted).
    """
    if isinstance(labels, pd.DataFrame):
        labels = labels_of({"labels": labels}, cfg)
    # Sorted by ID, so that tables listing the same cases in another order (a manifest, a
    # prepared cache) get the same folds.
    y_sorted = labels.y.sort_index()
    ids = y_sorted.index.to_numpy()
    y = y_sorted.to_numpy()
    groups = labels.groups.loc[ids] if labels.groups is not None else None
    rows = []
    for r in range(cfg.repeats):
        seed = cfg.seed + r
        if groups is not None:
            cv = StratifiedGroupKFold(labels.folds, shuffle=True, random_state=seed)
            parts = cv.split(ids, y, groups.to_numpy())
        else:
            parts = StratifiedKFold(labels.folds, shuffle=True, random_state=seed).split(ids, y)
        fold = np.empty(len(ids), dtype=int)
        for k, (_, test) in enumerate(parts):
            fold[test] = k
        rows.append(pd.DataFrame({ID: ids, "repeat": r, "fold": fold}))
    return pd.concat(rows, ignore_index=True)


@dataclass
class Split:
    """One training/test split: the training IDs already reduced to the label fraction."""

    repeat: int
    fold: int
    fraction: float
    train: list[str]
    test: list[str]


def splits(folds: pd.DataFrame, labels: Labels, fractions: tuple[float, ...], seed: int) -> Iterator[Split]:
    """Every (repeat, fold, label fraction) split, identical for all feature sets."""
    for (r, k), _ in folds.groupby(["repeat", "fold"], sort=True):
        in_repeat = folds[folds["repeat"] == r]
        test = in_repeat.loc[in_repeat["fold"] == k, ID].tolist()
        train_all = in_repeat.loc[in_repeat["fold"] != k, ID].tolist()
        for frac in fractions:
            yield Split(
                int(r), int(k), float(frac), subsample(train_all, labels.y, frac, (seed, int(r), int(k), frac)), test
            )


def subsample(ids: list[str], y: pd.Series, fraction: float, key: tuple) -> list[str]:
    """A stratified ``fraction`` of ``ids`` (at least one case per class), reproducible from ``key``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction {fraction} must be in (0, 1]")
    if fraction >= 1:
        return list(ids)
    seed = int(
        np.random.SeedSequence([int(key[0]), int(key[1]), int(key[2]), int(round(key[3] * 1e6))]).generate_state(1)[0]
    )
    labels = y.loc[ids].to_numpy()
    n_classes = len(np.unique(labels))
    keep = max(int(round(fraction * len(ids))), n_classes)
    if keep >= len(ids):
        return list(ids)
    kept, _ = train_test_split(np.asarray(ids), train_size=keep, stratify=labels, random_state=seed % (2**32))
    return sorted(kept.tolist(), key=list(ids).index)

"""Feature tables: reading, checking and combining them (f = [f_trad, f_SSL], paper section 3).

A feature table has one row per case: ``ID``, optionally ``Label`` and ``Group``, then
numeric feature columns (``original_*`` from pyradiomics, ``ssl_*`` from the encoder).
Tables are written as plain CSV that a statistician opens as it is, with a JSON sidecar
(``<name>.json``) that records how they were made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .utils import provenance, write_csv, write_json

ID = "ID"
META = ("ID", "Label", "Group")


class FeatureWarning(UserWarning):
    """A column was dropped from a feature table (the message lists them)."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a feature table CSV; ``ID``, ``Label`` and ``Group`` are read as text.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file, or one without an ``ID`` column (the columns found are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature table {path} not found")
    table = pd.read_csv(path, dtype={c: str for c in META}, keep_default_na=False, na_values={})
    table = _numeric(table)
    if ID not in table.columns:
        raise ValueError(
            f"{path}: no ID column (found {list(table.columns)[:8]}...); a feature table needs one row per case with an ID"
        )
    table.attrs["source"] = str(path)
    return table


def _numeric(table: pd.DataFrame) -> pd.DataFrame:
    """Turn text feature columns that hold numbers (and empty cells) into floats."""
    out = table.copy()
    for col in out.columns:
        if col in META or pd.api.types.is_numeric_dtype(out[col]):
            continue
        values = pd.to_numeric(out[col].replace("", np.nan), errors="coerce")
        if values.notna().sum() == out[col].replace("", np.nan).notna().sum():
            out[col] = values.astype(float)
    return out


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Every column that is not ID, Label or Group (numeric or not)."""
    return [c for c in table.columns if c not in META]


def clean_features(table: pd.DataFrame, name: str = "table") -> tuple[pd.DataFrame, list[str]]:
    """Drop feature columns a classifier cannot use, with one warning per kind.

    Non-numeric columns, all-NaN columns and constant columns (one distinct value) are
    dropped. Returns the cleaned table and the warning messages (also emitted as
    :class:`FeatureWarning`).
    """
    feats = feature_columns(table)
    bad_type = [c for c in feats if not pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])]
    numeric = [c for c in feats if c not in bad_type]
    # pyradiomics can yield inf on degenerate ROIs; the imputer treats it as missing.
    finite = table[numeric].replace([np.inf, -np.inf], np.nan)
    infinite = [c for c in numeric if finite[c].isna().sum() > table[c].isna().sum()]
    all_nan = [c for c in numeric if finite[c].isna().all()]
    flat = [c for c in numeric if c not in all_nan and finite[c].nunique(dropna=True) <= 1]
    constant = [c for c in flat if c not in infinite]
    flat_inf = [c for c in flat if c in infinite]
    messages = []
    for cols, what, fix in (
        (bad_type, "non-numeric", "convert them to numbers or remove them"),
        (all_nan, "all-empty (NaN or infinite)", "check the extraction that made them"),
        (constant, "constant", "they carry no information"),
        (flat_inf, "infinite-valued", "apart from their inf values they are constant; check the extraction"),
    ):
        if cols:
            msg = f"{name}: dropped {len(cols)} {what} column(s): {_some(cols)} ({fix})"
            messages.append(msg)
            warnings.warn(msg, FeatureWarning, stacklevel=2)
    drop = set(bad_type) | set(all_nan) | set(flat)
    kept_inf = [c for c in infinite if c not in drop]
    if kept_inf:
        first = (
            table[ID].iloc[int(np.flatnonzero(np.isinf(table[kept_inf[0]].to_numpy(float)))[0])] if ID in table else "?"
        )
        msg = (
            f"{name}: {len(kept_inf)} column(s) hold infinite values: {_some(kept_inf)} (first: {kept_inf[0]} of case "
            f"{first}); each inf is treated as a missing value and imputed (check the extraction that made them)"
        )
        messages.append(msg)
        warnings.warn(msg, FeatureWarning, stacklevel=2)
    out = table[[c for c in table.columns if c not in drop]].copy()
    keep = [c for c in numeric if c not in drop]
    out[keep] = finite[keep]
    return out, messages


def _some(items: Sequence[Any], most: int = 8) -> str:
    items = [str(i) for i in items]
    more = f" ... and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def check_ids(tables: dict[str, pd.DataFrame]) -> None:
    """Raise ValueError unless every table holds exactly the same, unique IDs.

    The message names each table's unmatched IDs (a few) and their counts.
    """
    for name, t in tables.items():
        if ID not in t.columns:
            raise ValueError(f"{name}: no ID column; every feature table needs one")
        dup = t[ID][t[ID].duplicated()].unique().tolist()
        if dup:
            raise ValueError(f"{name}: {len(dup)} ID(s) appear more than once ({_some(dup)}); keep one row per case")
    sets = {name: set(map(str, t[ID])) for name, t in tables.items()}
    union = set().union(*sets.values())
    problems = []
    for name, ids in sets.items():
        missing = sorted(union - ids)
        if missing:
            problems.append(f"{name} lacks {len(missing)} of {len(union)} IDs ({_some(missing, 5)})")
    if problems:
        raise ValueError(
            "the tables do not hold the same cases: "
            + "; ".join(problems)
            + ". Use tables made from the same cohort (a failed case must be left out of every table, or re-run)."
        )


def combine(
    tables: Sequence[pd.DataFrame] | dict[str, pd.DataFrame], labels: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Join feature tables on ID: one row per case, ``ID, Label, Group`` then the features.

    Parameters
    ----------
    tables : feature tables (a list, or a dict name -> table for clearer messages)
    labels : optional table with ``ID`` and ``Label``/``Group`` (e.g. from a manifest); it
        takes precedence over the tables' own columns.

    Label and Group come from whichever table holds them; two tables that disagree raise
    ValueError. Feature columns present in two tables raise ValueError.
    """
    named = dict(tables) if isinstance(tables, dict) else {f"table {i + 1}": t for i, t in enumerate(tables)}
    if not named:
        raise ValueError("combine needs at least one table")
    named = {k: _with_str_ids(v) for k, v in named.items()}
    check_ids(named)
    order = list(next(iter(named.values()))[ID])
    meta = pd.DataFrame({ID: order})
    for col in ("Label", "Group"):
        source = _meta_column(named, col, labels)
        if source is not None:
            meta[col] = meta[ID].map(source)
    seen: dict[str, str] = {}
    parts = [meta.set_index(ID)]
    for name, t in named.items():
        feats = feature_columns(t)
        clash = [c for c in feats if c in seen]
        if clash:
            raise ValueError(
                f"{name} and {seen[clash[0]]} both hold column(s) {_some(clash)}; rename them or combine other tables"
            )
        seen.update({c: name for c in feats})
        parts.append(t.set_index(ID)[feats])
    out = pd.concat(parts, axis=1).loc[order].reset_index().rename(columns={"index": ID})
    return out


def _with_str_ids(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    if ID in t.columns:
        t[ID] = t[ID].astype(str)
    return t


def _meta_column(named: dict[str, pd.DataFrame], col: str, labels: pd.DataFrame | None) -> pd.Series | None:
    if labels is not None and col in labels.columns:
        lab = _with_str_ids(labels).set_index(ID)[col].astype(str)
        missing = sorted(set(next(iter(named.values()))[ID]) - set(lab.index))
        if missing:
            raise ValueError(
                f"the label table lacks {len(missing)} case(s) ({_some(missing, 5)}); give a manifest that lists every case"
            )
        return lab
    found = None
    for name, t in named.items():
        if col not in t.columns:
            continue
        values = t.set_index(ID)[col].fillna("").astype(str)
        if found is None:
            found = (name, values)
            continue
        other = found[1].reindex(values.index)
        differ = values.index[(values != other) & (values != "") & (other != "")].tolist()
        if differ:
            raise ValueError(
                f"{col} differs between {found[0]} and {name} for {len(differ)} case(s) ({_some(differ, 5)}); fix one of them"
            )
        found = (found[0], found[1].where(found[1] != "", other=values.reindex(found[1].index)))
    return None if found is None else found[1]


def labels_from_cohort(cohort: Any) -> pd.DataFrame:
    """``ID, Label, Group`` of a cohort (a Cohort or a manifest path)."""
    if isinstance(cohort, (str, Path)):
        from .cohort import load_cohort

        cohort = load_cohort(cohort)
    return pd.DataFrame(
        {
            ID: [str(c.id) for c in cohort.cases],
            "Label": [c.label for c in cohort.cases],
            "Group": [c.group for c in cohort.cases],
        }
    )


def label_columns(cases: pd.DataFrame) -> pd.DataFrame:
    """``ID`` plus ``Label`` and ``Group`` where they are not empty: what a feature set carries of its cases.

    ``cases`` is e.g. a prepared cache's ``cases.csv`` (the ``ok`` rows) or :func:`labels_from_cohort`.
    A column that is missing, or blank in every row, is left out.
    """
    meta = [c for c in ("Label", "Group") if c in cases and (cases[c].astype(str).str.strip() != "").any()]
    return cases[[ID, *meta]].reset_index(drop=True)


def feature_sets(
    cases: pd.DataFrame, trad: pd.DataFrame | None, ssl: dict[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The feature sets to evaluate (:func:`table2_sets`) of the cases every table holds.

    Parameters
    ----------
    cases : ``ID`` with ``Label`` (and ``Group``) of the cases (:func:`label_columns` keeps the non-empty ones)
    trad : pyradiomics' features, or None
    ssl : method name (e.g. ``3DSiam+SE``) -> its SSL feature table

    Returns
    -------
    The sets (``Trad.``, each SSL method, then ``Trad.+<method>``), and the IDs left out
    because some table lacks them.
    """
    tables = {"labels": label_columns(cases), **({"trad": trad} if trad is not None else {})}
    tables.update({f"ssl:{name}": t for name, t in ssl.items()})
    tables, dropped = common_cases(tables)
    kept = {name: tables[f"ssl:{name}"] for name in ssl}
    return table2_sets(tables["labels"], tables.get("trad"), kept), dropped


def write_table(table: pd.DataFrame, path: str | Path, config: Any = None, **extra: Any) -> tuple[Path, Path]:
    """Write a feature table as CSV and its provenance as ``<name>.json``, each whole or not at all.

    ``extra`` goes into the sidecar (e.g. ``checkpoint_sha256=...``, ``sources=[...]``).
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    write_csv(path, table)
    info = {"rows": int(len(table)), "columns": int(table.shape[1]), "features": len(feature_columns(table))}
    write_json(sidecar, provenance(config, table=info, **extra))
    return path, sidecar


TRAD = "Trad."


def common_cases(tables: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Restrict every table to the IDs all of them hold; return the tables and the IDs dropped."""
    ids = [set(t[ID].astype(str)) for t in tables.values()]
    keep = set.intersection(*ids)
    dropped = sorted(set.union(*ids) - keep)
    return {k: t[t[ID].astype(str).isin(keep)].reset_index(drop=True) for k, t in tables.items()}, dropped


def table2_sets(
    labels: pd.DataFrame, trad: pd.DataFrame | None, ssl: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """The rows of the paper's Table 2 that the tables allow, each joined with ``labels``.

    Parameters
    ----------
    labels : ``ID`` with ``Label`` (and ``Group``)
    trad : pyradiomics' features, or None
    ssl : method name (e.g. ``3DSiam+SE``) -> its SSL feature table

    Returns
    -------
    ``Trad.``, each SSL method, then ``Trad.+<method>`` for each, in that order.
    """
    sets: dict[str, pd.DataFrame] = {}
    if trad is not None:
        sets[TRAD] = combine([labels, trad])
    for name, table in ssl.items():
        sets[name] = combine([labels, table])
    if trad is not None:
        for name, table in ssl.items():
            sets[f"{TRAD}+{name}"] = combine([labels, trad, table])
    return sets

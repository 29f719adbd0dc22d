"""Subcommands `radiomics`, `combine` and `evaluate` of `ssl-radiomics`.

::

    ssl-radiomics radiomics MANIFEST --out trad.csv [--params P.yaml] [--jobs N]
    ssl-radiomics combine trad.csv ssl.csv --out features.csv [--manifest M]
    ssl-radiomics evaluate trad=trad.csv ssl=ssl.csv trad+ssl=trad.csv+ssl.csv --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ClusterConfig, EvaluateConfig, PrepareConfig, RadiomicsConfig, add_arguments, from_arguments
from . import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the parser."""
    p = sub.add_parser(
        "radiomics",
        help="extract pyradiomics features of every case of a manifest",
        description="Traditional radiomics with pyradiomics (107 default 3D features, or a parameter YAML), "
        "in parallel, cached per case; failed cases are listed and written to <out>_failures.csv.",
    )
    p.add_argument("manifest", help="manifest CSV (Image, Mask[, ID, Label, Group, MaskLabel]) or a folder of pairs")
    p.add_argument(
        "--out", required=True, help="feature table CSV to write (a <name>.json sidecar holds the provenance)"
    )
    p.add_argument("--cache", default=None, help="cache folder (default: .radiomics_cache beside --out)")
    p.add_argument("--no-cache", action="store_true", help="compute every case again and cache nothing")
    add_arguments(p, RadiomicsConfig)
    add_arguments(p, ClusterConfig)
    # The case checks that prepare uses, so that both accept and refuse the same cases.
    add_arguments(p, PrepareConfig, only=["mask_label", "resample_mask", "tolerance"])
    p.set_defaults(func=run_radiomics)

    p = sub.add_parser(
        "combine",
        help="join feature tables on ID (f = [f_trad, f_SSL])",
        description="One row per case: ID, Label, Group, then every table's features. Label/Group come from "
        "--manifest, else from whichever table holds them.",
    )
    p.add_argument("tables", nargs="+", help="feature table CSVs")
    p.add_argument("--out", required=True, help="combined CSV to write (with a <name>.json sidecar)")
    p.add_argument("--manifest", default=None, help="manifest whose Label and Group columns to use")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="the SSL checkpoint the ssl_* features came from (its SHA-256 goes into the sidecar)",
    )
    p.set_defaults(func=run_combine)

    p = sub.add_parser(
        "evaluate",
        help="compare feature sets with a linear SVM under stratified 5-fold CV (the paper's Table 2)",
        description="Each TABLE is a feature set: PATH, NAME=PATH, or a combination A.csv+B.csv (NAME=A.csv+B.csv). "
        "Labels (and groups) come from the tables. Writes results.csv, predictions.csv, folds.csv, summary.md, "
        "evaluate.json and PNG plots to --out.",
    )
    p.add_argument("tables", nargs="+", metavar="TABLE", help="feature set: [NAME=]PATH[+PATH...]")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--predictions",
        nargs="*",
        default=[],
        metavar="NAME=CSV",
        help="external out-of-fold predictions to score as a feature set (e.g. supervised=predictions.csv)",
    )
    p.add_argument(
        "--manifest",
        default=None,
        help="manifest whose Label and Group columns to use (Group: the patient, or whatever must stay in one fold)",
    )
    add_arguments(p, EvaluateConfig)
    p.set_defaults(func=run_evaluate)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="case", dynamic_ncols=True)


def run_radiomics(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..core import radiomics as rad
    from ..core.cohort import load_cohort
    from ..core.events import drive
    from ..core.tables import label_columns, labels_from_cohort, write_table
    from ..core.utils import check_output_file, write_csv

    cfg = from_arguments(RadiomicsConfig(), args)
    checks = from_arguments(PrepareConfig(), args)
    out = check_output_file(args.out)  # before hours of work, not after
    cache = None if args.no_cache else Path(args.cache) if args.cache else out.parent / rad.CACHE_DIR
    cohort = load_cohort(args.manifest)
    if not cohort.cases:
        raise CommandError(
            f"{args.manifest}: no usable case ({len(cohort.problems)} rejected rows); see the messages above"
        )
    counts = {"ok": 0, "cached": 0, "failed": 0}
    with _progress(len(cohort.cases), "radiomics") as bar:

        def show(event) -> None:
            counts[event.status] = counts.get(event.status, 0) + 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
            if event.status == "failed":
                bar.write(f"case {event.case_id}: {event.reason}")

        cluster = from_arguments(ClusterConfig(), args)
        features, failures = drive(rad.extract(cohort, cfg, cache, cluster, checks=checks), show)
    labels = label_columns(labels_from_cohort(cohort))
    table = labels.merge(features, on="ID", how="inner") if labels.shape[1] > 1 and not features.empty else features
    failures_path = out.with_name(out.stem + "_failures.csv")
    if not failures.empty:
        write_csv(failures_path, failures)
    elif failures_path.exists():
        failures_path.unlink()  # a stale list from an earlier run would mislead
    diagnostics = features.attrs.get("diagnostics")
    if isinstance(diagnostics, pd.DataFrame) and not diagnostics.empty:
        write_csv(out.with_name(out.stem + "_diagnostics.csv"), diagnostics)
    if features.empty:
        raise CommandError(f"no case could be extracted ({len(failures)} failed); the reasons are in {failures_path}")
    write_table(table, out, cfg, settings=rad.load_spec(cfg), manifest=str(args.manifest), failures=len(failures))
    listed = f", listed in {failures_path}" if len(failures) else ""
    print(
        f"wrote {out}: {len(table)} cases x {features.shape[1] - 1} features ({counts['ok']} computed, "
        f"{counts['cached']} from the cache, {len(failures)} failed{listed})"
    )
    return 0


def _read(path: str):
    from ..core.tables import read_table

    return read_table(path)


def parse_table_arg(text: str) -> tuple[str, list[str]]:
    """``[NAME=]PATH[+PATH...]`` -> (name, paths); the default name joins the file stems with '+'."""
    name, _, spec = text.rpartition("=")
    paths = [p for p in spec.split("+") if p]
    if not paths:
        raise CommandError(f"{text!r}: give a table as PATH, NAME=PATH or NAME=A.csv+B.csv")
    return (name or "+".join(Path(p).stem for p in paths)), paths


def load_feature_set(text: str, labels=None):
    """Read (and combine) the tables of one feature-set argument."""
    from ..core.tables import combine

    name, paths = parse_table_arg(text)
    tables = {p: _read(p) for p in paths}
    if len(tables) == 1 and labels is None:
        return name, next(iter(tables.values()))
    return name, combine(tables, labels=labels)


def run_combine(args: argparse.Namespace) -> int:
    from ..core.tables import combine, labels_from_cohort, write_table
    from ..core.utils import check_output_file, sha256

    check_output_file(args.out)
    labels = labels_from_cohort(args.manifest) if args.manifest else None
    tables = {p: _read(p) for p in args.tables}
    table = combine(tables, labels=labels)
    extra = {"checkpoint": args.checkpoint, "checkpoint_sha256": sha256(args.checkpoint)} if args.checkpoint else {}
    write_table(table, args.out, None, sources=list(args.tables), manifest=args.manifest, **extra)
    print(f"wrote {args.out}: {len(table)} cases, {table.shape[1]} columns")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:

    import warnings

    from tqdm import tqdm

    from ..core.evaluate import evaluate_iter
    from ..core.events import drive
    from ..core.folds import labels_of
    from ..core.summary import write_outputs
    from ..core.tables import labels_from_cohort
    from ..core.utils import check_output_folder, read_table_csv

    cfg = from_arguments(EvaluateConfig(), args)
    check_output_folder(args.out)
    labels = labels_from_cohort(args.manifest) if args.manifest else None
    sets = {}
    for text in args.tables:
        name, table = load_feature_set(text, labels)
        if name in sets:
            raise CommandError(f"two feature sets are named {name!r}; name them with NAME=PATH")
        sets[name] = table
    predictions = {}
    for text in args.predictions:
        name, _, path = text.rpartition("=")
        if not name:
            raise CommandError(f"--predictions {text!r}: give NAME=CSV")
        predictions[name] = read_table_csv(path, text=("ID", "y_true", "y_pred"))
    # Labels and groups the evaluation refuses (e.g. fewer groups than folds) stop it here, before the bar.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes come again, from the evaluation itself
        labels_of(sets, cfg)
    # One bar step per SVM fit (feature set, label fraction, repeat, fold), with an ETA.
    with tqdm(desc="evaluate", unit="fit", dynamic_ncols=True) as bar:

        def show(event) -> None:
            bar.total = event.total
            bar.set_postfix_str(event.message, refresh=False)
            bar.update(event.index - bar.n)

        result = drive(evaluate_iter(sets, cfg, predictions=predictions or None), show)
    paths = write_outputs(result, args.out, sources={k: v for k, v in (parse_table_arg(t) for t in args.tables)})
    print(result.summary)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0

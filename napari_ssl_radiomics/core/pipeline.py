"""The paper's experiment as one resumable pipeline.

Stages, each cached under the output folder and skipped when its settings and inputs are
unchanged (so a killed run continues where it stopped)::

    cohort     the user's manifest/folder, or the built-in sample cohort   -> sample/
    prepare    resample, crop, rescale                                      -> cache/
    train:M    3DSiam for each mode M in ``modes`` (resumes a checkpoint)   -> runs/M/
               (M = rubik: the Rubik's-cube baseline, method rubik, mode none)
    embed:M    256-d representation of every case                           -> features/ssl_M.csv
    radiomics  pyradiomics' traditional features                            -> features/trad.csv
    supervised the same encoder trained with labels, per fold               -> features/supervised_predictions.csv
    evaluate   linear SVM, stratified 5-fold CV, Table 2's rows             -> evaluation/
    report     report.md and a self-contained report.html                   -> report.md, report.html

The output folder also holds the config it ran with (``config.yaml``) and the versions of
every library (``versions.json``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import PipelineConfig, TrainConfig, commented_yaml, key_dict, to_dict
from .events import Level
from .lock import folder_lock
from .runs import MODE_NAMES, RUNS_DIR, RunFolder
from .utils import check_output_folder, config_hash, provenance, read_table_csv, sha256, write_json, write_text

STATE_JSON = "pipeline_state.json"


@dataclass
class StageEvent:
    """Progress of one pipeline stage.

    ``status`` is ``start``, ``progress``, ``done``, ``cached`` (skipped: unchanged) or
    ``warning``; ``index``/``total`` count the stage's own units (cases, steps, folds).
    """

    stage: str
    status: str
    index: int = 0
    total: int = 0
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> Level:
        return "warning" if self.status == "warning" else "info"


@dataclass
class PipelineResult:
    """Where everything went."""

    out: Path
    report: Path | None
    results: pd.DataFrame | None
    paths: dict[str, Path] = field(default_factory=dict)


def demo_config(out: str | Path = "results", full: bool = False) -> PipelineConfig:
    """The demo's settings: minutes on 2 CPU cores, or the paper's sizes with ``full``.

    On a CPU one 3DSiam step at 28³ with batch 6 costs about 1.5 s, so the default demo
    is a demonstration of the whole pipeline, not of the method's accuracy: 48 synthetic
    cases, 28³ crops, 50 steps per mode (the first vanilla epoch is 8 of them), an SE pool
    of 18 (k × 6 instead of the paper's k × 10), 10 supervised steps per fold. ``full``
    uses the paper's 96³ crops, 2000 iterations and pool k × 10 (a GPU).
    """
    cfg = PipelineConfig(out=str(out))
    # The sample cohort has no Group column (its cases are independent; the site is its Centre
    # column, a covariate), so the folds are the paper's: stratified 5-fold, not grouped.
    if full:
        cfg.sample = dataclasses.replace(cfg.sample, cases=200, size=112)
        cfg.prepare = dataclasses.replace(cfg.prepare, size=96)
        return cfg
    cfg.sample = dataclasses.replace(cfg.sample, cases=48, size=36)
    cfg.prepare = dataclasses.replace(cfg.prepare, size=28)
    cfg.train = dataclasses.replace(cfg.train, iterations=50, checkpoint_every=25, pool=18)
    cfg.supervised_iterations = 10
    return cfg


# --- stage bookkeeping ------------------------------------------------------------------


class StageState:
    """The keys of finished stages, kept in ``pipeline_state.json`` (written atomically)."""

    def __init__(self, out: Path):
        self.path = out / STATE_JSON
        self.data: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}

    def fresh(self, stage: str, key: str, *outputs: Path) -> bool:
        return self.data.get(stage) == key and all(p.exists() for p in outputs)

    def mark(self, stage: str, key: str) -> None:
        self.data[stage] = key
        write_json(self.path, self.data)


def _file_key(*paths: Path) -> str:
    return config_hash([sha256(p) if p.exists() else "" for p in paths])


# --- the pipeline -----------------------------------------------------------------------


def run(cfg: PipelineConfig) -> Generator[StageEvent, None, PipelineResult]:
    """Run every stage, yielding progress; returns where the outputs are.

    Parameters
    ----------
    cfg : the whole configuration; ``cfg.out`` is the output folder.
    """
    out = check_output_folder(cfg.out, "out")
    # One pipeline per output folder; the prepare and train stages lock their own folders too.
    with folder_lock(out):
        return (yield from _run_locked(cfg, out))


def _run_locked(cfg: PipelineConfig, out: Path) -> Generator[StageEvent, None, PipelineResult]:
    write_text(out / "config.yaml", commented_yaml(cfg))
    write_json(out / "versions.json", provenance())
    state = StageState(out)
    paths: dict[str, Path] = {}

    _check_columns(cfg)
    if cfg.train.method != "siam":  # each row of `modes` says its method: a second place would contradict it
        raise ValueError(
            f"train.method is {cfg.train.method!r}, but `run` trains one run per entry of `modes`; "
            "leave train.method at 'siam' and add 'rubik' to modes for the Rubik's-cube row"
        )
    manifest = yield from _cohort_stage(cfg, out, state)
    cache = yield from _prepare_stage(cfg, manifest, out, state)
    _check_labels(cfg, out)  # before hours of training, not after
    ssl_tables: dict[str, Path] = {}
    for mode in cfg.modes:
        train_cfg = mode_settings(cfg.train, mode)
        run_dir = yield from train_stage(train_cfg, cfg, cache, out / RUNS_DIR / mode, state, f"train:{mode}")
        ssl_tables[mode] = yield from embed_stage(
            cfg, run_dir, cache, out / "features" / f"ssl_{mode}.csv", state, f"embed:{mode}"
        )
        paths[f"run_{mode}"] = run_dir
    trad = yield from _radiomics_stage(cfg, manifest, out, state)
    ids, missing = common_ids(out, cfg, [trad, *ssl_tables.values()])
    if missing:
        yield StageEvent(
            "evaluate",
            "warning",
            message=f"{len(missing)} prepared case(s) lack a feature row and are left out: {missing[:8]}",
        )
    folds = _folds_stage(cfg, out, ids)
    supervised = None
    if cfg.supervised:
        supervised = yield from _supervised_stage(cfg, cache, folds, out, state)
    results = yield from _evaluate_stage(cfg, trad, ssl_tables, supervised, folds, out, state)
    report = yield from _report_stage(cfg, out)
    paths.update(manifest=manifest, cache=cache, trad=trad, evaluation=out / "evaluation")
    return PipelineResult(out=out, report=report, results=results, paths=paths)


def mode_settings(train: TrainConfig, mode: str) -> TrainConfig:
    """The training settings of the row ``mode`` of ``modes``: 3DSiam with that imbalance mode,
    or for "rubik" the Rubik's-cube baseline without the imbalance module (Table 2's row)."""
    if mode == "rubik":
        return dataclasses.replace(train, method="rubik", mode="none")
    return dataclasses.replace(train, method="siam", mode=mode)


def _train_key(train_cfg: TrainConfig) -> dict[str, Any]:
    """The settings that shape a run, for its stage key. A 3DSiam run's leaves out the Rubik
    settings: they do not change it, and runs recorded before they existed stay fresh."""
    settings = key_dict(train_cfg)
    if train_cfg.method == "siam":
        for name in ("rubik_permutations", "rubik_gap"):
            settings.pop(name, None)
    return settings


def _check_columns(cfg: PipelineConfig) -> None:
    """Refuse label or group column names that ``run`` cannot honour.

    The prepared cache carries a case's class and group from the manifest's ``Label`` and
    ``Group`` columns only, so another name would be ignored without a word (another group
    column: folds not grouped at all).
    """
    for what, name, column in (("label", cfg.evaluate.label, "Label"), ("group", cfg.evaluate.group, "Group")):
        if name not in (column, "") or (what == "label" and not name):
            raise ValueError(
                f"evaluate.{what} is {name!r}, but `run` reads each case's {what} from the manifest's {column!r} "
                f"column; set evaluate.{what} to {column!r}"
                + (" (or '' for folds that are not grouped)" if what == "group" else "")
                + f" and put the {'class' if what == 'label' else 'patient'} in the manifest's {column!r} column"
            )


def _check_labels(cfg: PipelineConfig, out: Path) -> None:
    """Check the prepared cases' classes and groups as the evaluation will, so that a cohort it
    would refuse (e.g. fewer groups than folds) stops the run before training."""
    import warnings

    from .folds import labels_of

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes come again, with the evaluation's results
        labels_of({"cases": case_labels(out, cfg)}, cfg.evaluate)


def forward(stage: str, gen: Generator) -> Generator[StageEvent, None, Any]:
    """Re-yield a core generator's events (the :mod:`.events` protocol) as StageEvents."""
    try:
        while True:
            event = next(gen)
            status = "warning" if event.level == "warning" else "progress"
            yield StageEvent(stage, status, event.index, event.total, event.message, {"event": event})
    except StopIteration as stop:
        return stop.value


def _cohort_stage(cfg: PipelineConfig, out: Path, state: StageState) -> Generator[StageEvent, None, Path]:
    if cfg.cohort:
        source = Path(cfg.cohort)
        if not source.exists():
            raise FileNotFoundError(
                f"cohort {source} does not exist; give a manifest CSV or a folder of <id>_image/<id>_mask pairs"
            )
        return source
    from .sample import SAMPLE_VERSION, write_sample_cohort

    folder = out / "sample"
    manifest = folder / "manifest.csv"
    key = config_hash([to_dict(cfg.sample), SAMPLE_VERSION])
    if state.fresh("cohort", key, manifest):
        yield StageEvent("cohort", "cached", message=str(manifest))
        return manifest
    yield StageEvent("cohort", "start", total=cfg.sample.cases, message="writing the built-in sample cohort")
    manifest = Path(write_sample_cohort(folder, cfg.sample))
    state.mark("cohort", key)
    yield StageEvent("cohort", "done", cfg.sample.cases, cfg.sample.cases, str(manifest))
    return manifest


def _prepare_stage(
    cfg: PipelineConfig, manifest: Path, out: Path, state: StageState
) -> Generator[StageEvent, None, Path]:
    from .cache import CASES_CSV
    from .preprocess import prepare

    cache = out / "cache"
    # The preparation itself skips unchanged cases; the key only spares re-reading them.
    key = config_hash([to_dict(cfg.prepare), _file_key(manifest) if manifest.is_file() else str(manifest)])
    if state.fresh("prepare", key, cache / CASES_CSV):
        yield StageEvent("prepare", "cached", message=str(cache))
        return cache
    yield StageEvent("prepare", "start")
    table = yield from forward("prepare", prepare(manifest, cfg.prepare, cache, cfg.cluster))
    ok = int((table["status"] == "ok").sum())
    if ok == 0:
        raise ValueError(f"no case of {manifest} could be prepared; see {cache / CASES_CSV} for each case's reason")
    state.mark("prepare", key)
    yield StageEvent("prepare", "done", ok, len(table), f"{ok} of {len(table)} cases ready")
    return cache


def train_stage(
    train_cfg: TrainConfig, cfg: PipelineConfig, cache: Path, run_dir: Path, state: StageState, stage: str
) -> Generator[StageEvent, None, Path]:
    """Train one run into ``run_dir`` (reused when ``state`` says it is fresh, resumed when it was cut short).

    Used by :func:`run` (one per mode) and by :mod:`.sweep` (one per swept value); returns ``run_dir``.
    """
    from .train import train

    key = config_hash([_train_key(train_cfg), key_dict(cfg.augment), _file_key(cache / "cases.csv")])
    checkpoint = RunFolder(run_dir).checkpoint
    if state.fresh(stage, key, checkpoint):
        yield StageEvent(stage, "cached", message=str(run_dir))
        return run_dir
    resume = checkpoint.exists() and state.data.get(stage + ":started") == key
    if checkpoint.exists() and not resume:
        raise ValueError(
            f"{run_dir} holds a run trained with other settings or another cache (the config changed since); "
            f"delete {run_dir} to train it again with the new settings, or restore the earlier settings to reuse it"
        )
    state.mark(stage + ":started", key)
    yield StageEvent(stage, "start", total=train_cfg.iterations, message="resuming" if resume else "")
    result = yield from forward(stage, train(cache, run_dir, train_cfg, cfg.augment, resume=resume))
    if getattr(result, "stopped", False):
        raise RuntimeError(f"{stage} stopped before the end; run again to resume from {checkpoint}")
    state.mark(stage, key)
    yield StageEvent(stage, "done", train_cfg.iterations, train_cfg.iterations, str(run_dir))
    return run_dir


def embed_stage(
    cfg: PipelineConfig, run_dir: Path, cache: Path, path: Path, state: StageState, stage: str
) -> Generator[StageEvent, None, Path]:
    """Write the run's representation of every prepared case to ``path`` (reused when fresh); returns ``path``."""
    from .embed import embed_iter, write_embedding

    key = config_hash([_file_key(RunFolder(run_dir).checkpoint, cache / "cases.csv")])
    if state.fresh(stage, key, path):
        yield StageEvent(stage, "cached", message=str(path))
        return path
    yield StageEvent(stage, "start")
    table = yield from forward(
        stage, embed_iter(run_dir, cache, device=cfg.train.device, batch_size=cfg.train.embed_batch_size)
    )
    write_embedding(table, path, run_dir, cache)
    state.mark(stage, key)
    yield StageEvent(stage, "done", len(table), len(table), str(path))
    return path


def _radiomics_stage(
    cfg: PipelineConfig, manifest: Path, out: Path, state: StageState
) -> Generator[StageEvent, None, Path]:
    from .radiomics import extract
    from .utils import write_csv

    path = out / "features" / "trad.csv"
    source = _file_key(manifest) if manifest.is_file() else str(manifest)
    key = config_hash([to_dict(cfg.radiomics), source, cfg.prepare.mask_label, cfg.prepare.resample_mask])
    if state.fresh("radiomics", key, path):
        yield StageEvent("radiomics", "cached", message=str(path))
        return path
    yield StageEvent("radiomics", "start")
    features, failures = yield from forward(
        "radiomics", extract(manifest, cfg.radiomics, out / "radiomics_cache", cfg.cluster, checks=cfg.prepare)
    )
    write_csv(path, features)
    write_csv(out / "features" / "trad_failures.csv", failures)
    for row in failures.itertuples():
        yield StageEvent("radiomics", "warning", message=f"case {row.ID}: {row.reason}")
    state.mark("radiomics", key)
    yield StageEvent("radiomics", "done", len(features), len(features) + len(failures), str(path))
    return path


def _folds_stage(cfg: PipelineConfig, out: Path, ids: list[str]) -> Path:
    """Fix the cross-validation folds once, so the SVMs and the supervised baseline share them."""
    from .folds import make_folds
    from .utils import write_csv

    labels = case_labels(out, cfg)
    labels = labels[labels["ID"].isin(ids)]
    path = out / "evaluation" / "folds.csv"
    write_csv(path, make_folds(labels, cfg.evaluate))
    return path


def _supervised_stage(
    cfg: PipelineConfig, cache: Path, folds: Path, out: Path, state: StageState
) -> Generator[StageEvent, None, Path]:
    from . import supervised
    from .utils import write_csv

    path = out / "features" / "supervised_predictions.csv"
    train_cfg = dataclasses.replace(
        cfg.train, iterations=cfg.supervised_iterations, optimizer="adam", lr=cfg.supervised_lr
    )
    key = config_hash([key_dict(train_cfg), key_dict(cfg.augment), _file_key(cache / "cases.csv", folds)])
    if state.fresh("supervised", key, path):
        yield StageEvent("supervised", "cached", message=str(path))
        return path
    yield StageEvent("supervised", "start")
    fold_table = read_table_csv(folds)
    fit = yield from forward(
        "supervised", supervised.cross_validate(cache, fold_table, cfg.evaluate, train_cfg, cfg.augment)
    )
    # Loss per step and the per-split convergence checks, beside the predictions.
    write_csv(out / "features" / "supervised_history.csv", fit.history)
    write_csv(out / "features" / "supervised_diagnostics.csv", fit.diagnostics)
    write_csv(path, fit.predictions)
    state.mark("supervised", key)
    yield StageEvent("supervised", "done", message=str(path))
    return path


def _read(path: Path) -> pd.DataFrame:
    # IDs stay text: a case named NA or nan is a case, not a missing value.
    return read_table_csv(path)


def common_ids(out: Path, cfg: PipelineConfig, tables: list[Path]) -> tuple[list[str], list[str]]:
    """IDs every table holds (prepared cases first), and the prepared IDs some table lacks."""
    ids = list(case_labels(out, cfg)["ID"])
    keep = set(ids)
    for path in tables:
        keep &= set(_read(path)["ID"])
    return [i for i in ids if i in keep], [i for i in ids if i not in keep]


def _evaluate_stage(
    cfg: PipelineConfig,
    trad: Path,
    ssl_tables: dict[str, Path],
    supervised: Path | None,
    folds: Path,
    out: Path,
    state: StageState,
) -> Generator[StageEvent, None, pd.DataFrame]:
    from .evaluate import evaluate_iter
    from .summary import write_outputs
    from .tables import combine, feature_sets
    from .utils import write_csv

    folder = out / "evaluation"
    inputs = [trad, *ssl_tables.values(), folds] + ([supervised] if supervised else [])
    # The number of processes does not change the results: leave it out of the key.
    key = config_hash([to_dict(dataclasses.replace(cfg.evaluate, jobs=0)), _file_key(*inputs)])
    if state.fresh("evaluate", key, folder / "results.csv"):
        yield StageEvent("evaluate", "cached", message=str(folder))
        return read_table_csv(folder / "results.csv")
    yield StageEvent("evaluate", "start")
    fold_table = read_table_csv(folds)
    ids = set(fold_table["ID"])
    labels = case_labels(out, cfg)
    labels = labels[labels["ID"].isin(ids)]
    trad_table = _read(trad)[lambda t: t["ID"].isin(ids)]
    ssl = {mode: _read(p)[lambda t: t["ID"].isin(ids)] for mode, p in ssl_tables.items()}
    tables, _ = feature_sets(labels, trad_table, {MODE_NAMES.get(m, m): t for m, t in ssl.items()})
    # One table with every mode: each mode's columns get its name (ssl_se_000, ...).
    renamed = [
        t.rename(columns=lambda c, m=m: c.replace("ssl_", f"ssl_{m}_", 1) if c.startswith("ssl_") else c)
        for m, t in ssl.items()
    ]
    write_csv(out / "features" / "features.csv", combine([labels, trad_table, *renamed]))
    external = {"Supervised": _read(supervised)} if supervised else None
    result = yield from forward("evaluate", evaluate_iter(tables, cfg.evaluate, predictions=external, folds=fold_table))
    for note in result.warnings:
        yield StageEvent("evaluate", "warning", message=note)
    write_outputs(result, folder)
    state.mark("evaluate", key)
    yield StageEvent("evaluate", "done", len(tables), len(tables), str(folder))
    return result.results


def case_labels(out: Path, cfg: PipelineConfig) -> pd.DataFrame:
    """ID, Label, Group of every prepared case (from the cache's cases.csv)."""
    from .cache import read_cases
    from .tables import label_columns

    cases = read_cases(out / "cache")
    cases = cases[cases["status"] == "ok"]
    return label_columns(cases)


def _report_stage(cfg: PipelineConfig, out: Path) -> Generator[StageEvent, None, Path]:
    # Always rewritten: it is cheap next to training, and it reads what every stage left.
    from .report import write_report

    yield StageEvent("report", "start")
    path = write_report(out, cfg)
    yield StageEvent("report", "done", message=str(path))
    return path


def run_all(cfg: PipelineConfig) -> PipelineResult:
    """Run the pipeline without watching its progress."""
    from .events import drive

    return drive(run(cfg))

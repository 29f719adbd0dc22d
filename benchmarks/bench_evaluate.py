"""Time the evaluation on a cohort of the real size, with Table 2's full layout.

A synthetic table shaped like the issue's real cohort (1000 cases, 22% minority; 107
radiomics-like features with wide scales and correlated blocks, three 256-d SSL tables
with a weaker planted signal) goes through :func:`core.evaluate.evaluate` with Table 2's
rows: Trad., 3DSiam, 3DSiam+RE, 3DSiam+SE, Trad.+each, and the supervised baseline as
external predictions (8 sets) x 2 label fractions x 3 repeats x 5 folds.

Rows of the printed table:

- ``full layout``: the whole evaluation (7 SVM sets + Supervised), ``--jobs`` processes.
- ``one set, ours``: the widest set (Trad.+3DSiam+SE, 363 features), one process.
- ``one set, plain sklearn``: the same protocol written as a plain scikit-learn loop (the
  same splits and validation parts; ``Pipeline(SimpleImputer, StandardScaler,
  LinearSVC(C))`` with scikit-learn's defaults, every C of the grid), timed in the same run.
- ``one set, ours before``: the protocol as this project ran it before the faster C search
  (every C, ``dual='auto'``, ``max_iter=20000``), with ``--before``.

It also prints, for the one set, how often the chosen C and the fold AUC agree with the
plain loop's.

Columns: wall seconds, and CPU seconds of this process and its worker processes together
(user + system, from ``getrusage``; the workers are shut down and reaped after each run
so that their time is counted). On a shared machine the wall time grows with the other
jobs' load; the CPU time hardly does, and CPU s / processes is what an idle machine of as
many cores needs.

    python benchmarks/bench_evaluate.py [--cases 1000] [--jobs 2] [--repeats 3] [--before]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import pandas as pd

from napari_ssl_radiomics.config import EvaluateConfig
from napari_ssl_radiomics.core import evaluate as ev
from napari_ssl_radiomics.core.tables import table2_sets

WIDE = "Trad.+3DSiam+SE"


def synthetic_cohort(n: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Labels (ID, Label), a 107-feature radiomics-like table and three 256-d SSL tables."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.22).astype(int)
    ids = [f"case{i:04d}" for i in range(n)]
    labels = pd.DataFrame({"ID": ids, "Label": np.where(y == 1, "LGG", "HGG")})
    # Radiomics: 12 latent factors behind 107 correlated features, scales from 1e-2 to 1e5.
    trad = rng.normal(size=(n, 12)) @ rng.normal(size=(12, 107)) + rng.normal(size=(n, 107))
    trad[:, :10] += 0.8 * y[:, None]
    trad *= 10 ** rng.uniform(-2, 5, 107)
    trad_table = pd.DataFrame(trad, columns=[f"original_f{j:03d}" for j in range(107)]).assign(ID=ids)
    ssl = {}
    for name, signal in (("3DSiam", 0.3), ("3DSiam+RE", 0.4), ("3DSiam+SE", 0.45)):
        z = rng.normal(size=(n, 8)) @ rng.normal(size=(8, 256)) + 0.5 * rng.normal(size=(n, 256))
        z[:, :20] += signal * y[:, None]
        ssl[name] = pd.DataFrame(z, columns=[f"ssl_{j:03d}" for j in range(256)]).assign(ID=ids)
    return labels, trad_table, ssl


def supervised_predictions(labels: pd.DataFrame, cfg: EvaluateConfig, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions of a stand-in supervised baseline on the evaluation's splits."""
    rng = np.random.default_rng(seed)
    lab = ev.labels_of({"labels": labels}, cfg)
    rows = []
    for sp in ev.splits(ev.make_folds(lab, cfg), lab, tuple(cfg.label_fractions), cfg.seed):
        truth = (lab.y.loc[sp.test] == lab.positive).to_numpy()
        score = truth + rng.normal(size=len(truth))
        other = next(c for c in lab.classes if c != lab.positive)
        rows.append(
            pd.DataFrame(
                {
                    "ID": sp.test,
                    "label_fraction": sp.fraction,
                    "repeat": sp.repeat,
                    "fold": sp.fold,
                    "y_pred": np.where(score > 0.5, lab.positive, other),
                    "score": score,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def plain_sklearn(table: pd.DataFrame, cfg: EvaluateConfig, before: bool = False) -> tuple[list[float], list[float]]:
    """The protocol as a plain scikit-learn loop; returns the chosen C and the AUC of each split."""
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    def model(C: float):
        svm = LinearSVC(C=C, dual="auto", max_iter=20000) if before else LinearSVC(C=C)
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), svm)

    lab = ev.labels_of({"t": table}, cfg)
    X = table.set_index("ID").loc[lab.y.index].drop(columns="Label").to_numpy(float)
    y = lab.y.to_numpy()
    pos = {cid: i for i, cid in enumerate(lab.y.index)}
    chosen, aucs = [], []
    for sp in ev.splits(ev.make_folds(lab, cfg), lab, tuple(cfg.label_fractions), cfg.seed):
        train = np.array([pos[i] for i in sp.train])
        test = np.array([pos[i] for i in sp.test])
        inner = StratifiedKFold(5, shuffle=True, random_state=cfg.seed + sp.repeat)
        fit_idx, val_idx = next(inner.split(X[train], y[train]))
        best = max(
            ev.C_GRID,
            key=lambda C: roc_auc_score(
                y[train][val_idx] == lab.positive,
                _positive_score(model(C).fit(X[train][fit_idx], y[train][fit_idx]), X[train][val_idx], lab.positive),
            ),
        )
        final = model(best).fit(X[train], y[train])
        chosen.append(best)
        aucs.append(roc_auc_score(y[test] == lab.positive, _positive_score(final, X[test], lab.positive)))
    return chosen, aucs


def _positive_score(model, X: np.ndarray, positive: str) -> np.ndarray:
    score = model.decision_function(X)
    return score if model.classes_[1] == positive else -score


def _row(name: str, jobs: int, n: int, wall: float, cpu: float) -> str:
    return f"| {name} | {jobs} | {n} | {wall:.1f} | {cpu:.1f} | {cpu / n:.2f} | {cpu / jobs:.1f} |"


class Timer:
    """Wall and CPU seconds (this process and its reaped children) of a ``with`` block."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc) -> None:
        from joblib.externals.loky import reusable_executor

        if reusable_executor._executor is not None:  # joblib's pool: reap its workers, so their CPU time counts
            reusable_executor._executor.shutdown(wait=True)
        self.wall, self.cpu = time.perf_counter() - self._wall, _cpu() - self._cpu


def _cpu() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine() -> str:
    import sklearn

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{load}; Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}, {time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", action="store_true", help="also time the protocol as it ran before")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    labels, trad, ssl = synthetic_cohort(args.cases)
    sets = table2_sets(labels, trad, ssl)
    cfg = EvaluateConfig(repeats=args.repeats, group="", jobs=args.jobs)
    external = {"Supervised": supervised_predictions(labels, cfg)}
    one = EvaluateConfig(repeats=args.repeats, group="", jobs=1)
    rows = []
    start = machine()

    with Timer() as t:
        result = ev.evaluate(sets, cfg, predictions=external)
    n_sets = len(sets) + len(external)
    fits = len(sets) * len(cfg.label_fractions) * cfg.repeats * result.n_folds
    rows.append((f"full layout ({n_sets} sets)", args.jobs, fits, t.wall, t.cpu))
    print(_row(*rows[-1]), flush=True)

    with Timer() as t:
        ours = ev.evaluate({WIDE: sets[WIDE]}, one)
    splits_n = len(ours.chosen_C)
    rows.append((f"one set ({WIDE}), ours", 1, splits_n, t.wall, t.cpu))
    print(_row(*rows[-1]), flush=True)

    with Timer() as t:
        plain_C, plain_auc = plain_sklearn(sets[WIDE], one)
    rows.append((f"one set ({WIDE}), plain sklearn", 1, splits_n, t.wall, t.cpu))
    print(_row(*rows[-1]), flush=True)
    if args.before:
        with Timer() as t:
            plain_sklearn(sets[WIDE], one, before=True)
        rows.append((f"one set ({WIDE}), ours before", 1, splits_n, t.wall, t.cpu))

    print(f"\nMachine at the start: {start}\nMachine at the end:   {machine()}")
    print(f"Table: {args.cases} cases x {trad.shape[1] - 1} + 3 x 256 features; {cfg.repeats} repeats, 5 folds\n")
    print("| run | processes | SVM fits (splits) | wall s | CPU s | CPU s per split | CPU s / processes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(_row(*row))
    auc = ours.results.query("metric == 'auc'")["value"].to_numpy()
    same = np.mean(np.asarray(plain_C) == ours.chosen_C["C"].to_numpy())
    print(
        f"\n{WIDE}: same C as the plain loop in {same:.0%} of the splits; fold-mean AUC ours {auc.mean():.4f}, "
        f"plain {np.mean(plain_auc):.4f}; largest difference of a fold's AUC {np.max(np.abs(auc - plain_auc)):.4f}"
    )


if __name__ == "__main__":
    main()

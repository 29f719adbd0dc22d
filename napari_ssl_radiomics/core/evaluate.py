"""The paper's evaluation (section 3, Table 2): a linear SVM under stratified 5-fold CV.

Protocol, as in the paper: stratified five-fold cross-validation; in each fold 20% of the
training part (stratified) picks the SVM's hyper-parameter, then the SVM is refitted on
the whole training part and scored on the test fold; the second scenario keeps only 50%
of each training fold's labels (same test folds).

Choices the paper leaves open, made here:

- Folds are computed once per repeat (:func:`make_folds`) and shared by every feature set,
  label fraction and the supervised baseline. With a ``Group`` column (the patient, or
  whatever must not be split across folds) they are grouped too (``StratifiedGroupKFold``),
  so a patient is never on both sides. A site or centre is not a group: grouping 3 centres
  would be leave-centre-out CV, another question than the paper's.
- Fewer groups than folds is refused (:func:`labels_of` raises, naming the column, the
  count and the way out: fewer folds, or no grouping), instead of running as many folds as
  there are groups, which would answer that other question without saying so.
- The 20% validation part is the first fold of a 5-fold stratified (grouped) split of the
  training part; with fewer than 5 groups in the training part, a split into as many parts
  as it has groups (a group is never split between training and validation either). C is picked from ``C_GRID`` (10^-3 .. 10^2) by the validation AUC
  (binary) or macro one-vs-rest AUC (multi-class); ties go to the higher balanced
  accuracy, then to the smaller C. The grid is walked upwards and stops once
  ``PATIENCE`` values in a row did not beat the best (the score has flattened or falls).
- The classifier is ``SimpleImputer(median) -> StandardScaler -> LinearSVC`` (one-vs-rest
  for several classes); ``EvaluateConfig.class_weight`` gives ``class_weight='balanced'``.
  liblinear solves the primal (Newton) for C <= 1 when there are more cases than
  features, else the dual (coordinate descent): near the hard margin (C >= 10 on
  separable data) the primal needs ~20x longer for the same optimum (:func:`use_dual`).
- A label fraction below 1 is a stratified subsample of each training fold's cases, drawn
  with a seed fixed by (seed, repeat, fold, fraction), so every feature set sees the same
  labelled cases.
- Binary metrics name their positive class: the minority class (the clinical convention)
  unless ``EvaluateConfig.positive`` names one or ``convention='majority'`` (the paper's
  Table 2, where the "specificity" is the minor-class recall). Sensitivity = the positive
  class's recall, specificity = the other's; ``minor_recall`` / ``major_recall`` are given
  whatever the convention. AUC from the decision function. Multi-class: overall accuracy,
  minor-class accuracy (recall of the least frequent class, or of ``positive``), balanced
  accuracy, macro one-vs-rest AUC.
- ``results`` hold one value per test fold; summary cells are the **fold mean** ± sd over
  all (repeat, fold) pairs. ``pooled`` scores all out-of-fold predictions of a repeat
  together (the paper's "all testing samples"), then averages over repeats.
- Feature sets, repeats and folds run in parallel (``EvaluateConfig.jobs`` processes).

This module holds the classifier, the metrics and the fitting. The labels, folds, splits
and label subsampling are :mod:`.folds`' (shared with the supervised baseline); the
summary and the evaluation's files are :mod:`.summary`'s. Their names stay importable from here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import config_context
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ..config import C_GRID, EvaluateConfig
from .events import Level
from .folds import (  # noqa: F401  (EvaluationWarning, too_few_groups, subsample: importable from here too)
    EvaluationWarning,
    Labels,
    Split,
    labels_of,
    make_folds,
    splits,
    subsample,
    too_few_groups,
)
from .summary import aggregate, summary_markdown, write_outputs  # noqa: F401  (the presentation, importable here)
from .tables import ID, check_ids, clean_features, feature_columns

VALIDATION_SPLITS = 5  # one fold of five = the paper's 20% of the training part
# Stop the C search after this many grid values in a row without a better validation score.
PATIENCE = 2
# liblinear's tolerance in the C search. The features are standardised, and liblinear's
# stopping rules are relative (primal: gradient norm against the start; dual: margins), so
# one value fits every table; 1e-3 left the validation AUCs of benchmarks/bench_evaluate.py's
# table unchanged to 4 decimals and cuts the dual's epochs by about a third.
SEARCH_TOL = 1e-3
FINAL_TOL = 1e-4  # liblinear's default, for the model that is scored


# --- the classifier ----------------------------------------------------------------------


def use_dual(n_samples: int, n_features: int, C: float) -> bool:
    """Whether liblinear should solve the dual for this shape and C.

    The dual (coordinate descent) when there are no more cases than features (as
    ``dual='auto'``) or when C > 1: near the hard margin the primal's Newton steps need
    hundreds of iterations (measured on 640 x 363 standardised features: C = 100 took
    6.5 s in the primal, 0.6 s in the dual, for the same validation AUC).
    """
    return n_samples <= n_features or C > 1.0


def svm_pipeline(
    C: float = 1.0,
    class_weight: str | None = None,
    random_state: int = 0,
    dual: bool | str = "auto",
    tol: float = FINAL_TOL,
) -> Pipeline:
    """Median imputation, standardisation and a linear SVM."""
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            (
                "svm",
                LinearSVC(
                    C=C, class_weight=class_weight, dual=dual, tol=tol, max_iter=20000, random_state=random_state
                ),
            ),
        ]
    )


class LinearSVMCV(ClassifierMixin, BaseEstimator):
    """A linear SVM whose C is picked on a stratified 20% validation part, then refitted.

    Parameters
    ----------
    Cs : candidate values of C, tried from the smallest up
    class_weight : None or 'balanced'
    random_state : seed of the validation split
    patience : stop after this many values of C in a row that did not beat the best
        validation score (0: try the whole grid)

    Attributes
    ----------
    C_ : the C picked (the middle of the grid when no validation part could be held out)
    tried_ : (C, validation AUC) of each C tried
    validation_ : indices of the validation part (empty when none was held out)
    """

    def __init__(
        self,
        Cs: tuple[float, ...] = C_GRID,
        class_weight: str | None = None,
        random_state: int = 0,
        patience: int = PATIENCE,
    ):
        self.Cs = Cs
        self.class_weight = class_weight
        self.random_state = random_state
        self.patience = patience

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LinearSVMCV:
        """Pick C on a validation part of (X, y), then fit on all of it. X: (n, d), y: (n,)."""
        y = np.asarray(y)
        X = np.asarray(X, dtype=float)
        self.classes_ = np.unique(y)
        self.tried_ = []
        self.validation_ = np.array([], dtype=int)
        self.C_ = self._select(X, y, groups)
        self.dual_ = use_dual(X.shape[0], X.shape[1], self.C_)
        self.pipeline_ = svm_pipeline(self.C_, self.class_weight, self.random_state, dual=self.dual_).fit(X, y)
        return self

    def _select(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> float:
        smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
        parts = min(VALIDATION_SPLITS, smallest)
        if len(self.Cs) == 1 or parts < 2:
            # Too few cases of a class to hold some out: keep the middle of the grid.
            return float(sorted(self.Cs)[len(self.Cs) // 2])
        if groups is not None:
            # A group is never split between training and validation: with fewer groups than splits, one
            # group (or so) is the validation part; with a single group, nothing can be held out.
            parts = min(parts, len(np.unique(groups)))
            if parts < 2:
                return float(sorted(self.Cs)[len(self.Cs) // 2])
            cv = StratifiedGroupKFold(parts, shuffle=True, random_state=self.random_state)
        else:
            cv = StratifiedKFold(parts, shuffle=True, random_state=self.random_state)
        train, val = next(cv.split(X, y, groups))
        self.validation_ = val
        if len(np.unique(y[train])) < len(self.classes_) or len(np.unique(y[val])) < len(self.classes_):
            return float(sorted(self.Cs)[len(self.Cs) // 2])
        # Imputation and scaling do not depend on C: fit them once per validation split.
        prep = Pipeline(svm_pipeline().steps[:2]).fit(X[train])
        X_train, X_val = prep.transform(X[train]), prep.transform(X[val])
        best: tuple[float, ...] | None = None
        best_C = float(self.Cs[0])
        since_best = 0
        for C in sorted(self.Cs):
            dual = use_dual(X_train.shape[0], X_train.shape[1], C)
            svm = svm_pipeline(C, self.class_weight, self.random_state, dual=dual, tol=SEARCH_TOL).steps[-1][1]
            svm.fit(X_train, y[train])
            scores = svm.decision_function(X_val)
            key = (_auc(y[val], scores, svm.classes_), _balanced_accuracy(y[val], svm.predict(X_val)), -C)
            key = tuple(-np.inf if np.isnan(k) else k for k in key)
            self.tried_.append((float(C), key[0]))
            if best is None or key > best:
                best, best_C, since_best = key, float(C), 0
            else:
                since_best += 1
                if self.patience and since_best >= self.patience:
                    break
        return best_C

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Signed distances: (n,) for two classes (positive: ``classes_[1]``), else (n, k)."""
        return self.pipeline_.decision_function(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict(X)


def binary_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of boolean ``truth`` (n,) from ``scores`` (n,), ties counted half.

    The Mann-Whitney form of ``sklearn.metrics.roc_auc_score`` (equal to it, tested), about
    100x faster on small folds, where the model selection calls it hundreds of times.
    NaN when one class is absent.
    """
    truth = np.asarray(truth, dtype=bool)
    n_pos = int(truth.sum())
    n_neg = len(truth) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auc(y: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> float:
    """AUC (binary, scores for ``classes[1]``) or macro one-vs-rest AUC (scores (n, k))."""
    if len(classes) == 2:
        return binary_auc(y == classes[1], scores)
    aucs = [binary_auc(y == c, scores[:, k]) for k, c in enumerate(classes)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (as sklearn's balanced_accuracy_score)."""
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


# --- metrics -----------------------------------------------------------------------------


def metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray,
    classes: list[str],
    positive: str,
    minor: str | None = None,
    major: str | None = None,
) -> dict[str, float]:
    """The paper's metrics (and AUC, balanced accuracy, each class's recall) of one test fold.

    Parameters
    ----------
    y_true, y_pred : (n,) class names
    scores : (n,) score of ``positive`` (binary) or (n, k) scores in ``classes`` order
    positive : binary: the class whose recall is the sensitivity; multi-class: the minor class
    minor, major : binary: the least and most frequent class (default: ``positive`` is the minor)
    """
    y_true, y_pred = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    out = {"balanced_accuracy": _balanced_accuracy(y_true, y_pred)}
    if len(classes) == 2:
        pos = y_true == positive
        out["sensitivity"] = _recall(y_true, y_pred, positive)
        out["specificity"] = float((y_pred[~pos] != positive).mean()) if (~pos).any() else float("nan")
        out["auc"] = binary_auc(pos, scores)
        minor = minor or positive
        major = major or next(c for c in classes if c != minor)
        out["minor_recall"] = _recall(y_true, y_pred, minor)
        out["major_recall"] = _recall(y_true, y_pred, major)
    else:
        out["overall_accuracy"] = float((y_true == y_pred).mean())
        out["minor_accuracy"] = _recall(y_true, y_pred, positive)
        out["auc"] = _auc(y_true, np.asarray(scores), np.asarray(classes))
    return out


def _recall(y_true: np.ndarray, y_pred: np.ndarray, cls: str) -> float:
    """Share of the cases of ``cls`` predicted as ``cls`` (NaN when there are none)."""
    mine = y_true == cls
    return float((y_pred[mine] == cls).mean()) if mine.any() else float("nan")


# --- the evaluation ----------------------------------------------------------------------


@dataclass
class EvaluateEvent:
    """Progress of :func:`evaluate_iter`: one (feature set, label fraction, repeat, fold) fit done.

    ``index``/``total`` count those fits over all feature sets; ``kind`` is ``fit`` or
    ``warning`` (then ``message`` says what changed).
    """

    index: int
    total: int
    feature_set: str = ""
    label_fraction: float = 1.0
    repeat: int = 0
    fold: int = 0
    folds: int = 0
    repeats: int = 0
    C: float = float("nan")
    elapsed_s: float = 0.0
    kind: Literal["fit", "warning"] = "fit"
    note: str = ""

    @property
    def level(self) -> Level:
        return "warning" if self.kind == "warning" else "info"

    @property
    def message(self) -> str:
        if self.kind == "warning":
            return self.note
        return (
            f"{self.feature_set}: fold {self.fold + 1} of {self.folds}, repeat {self.repeat + 1} of {self.repeats}, "
            f"{self.label_fraction:.0%} labels (C {self.C:g})"
        )


@dataclass
class EvalResult:
    """What :func:`evaluate` found.

    results : tidy, one value per test fold: ``feature_set, label_fraction, repeat, fold,
        metric, value``
    pooled : tidy, all test folds of a repeat scored together: ``feature_set,
        label_fraction, repeat, metric, value``
    comparisons : paired differences on the same folds (:func:`.compare.compare`)
    predictions : out-of-fold ``ID, feature_set, label_fraction, repeat, fold, y_true,
        y_pred, score`` (binary: score of the positive class; multi-class: also
        ``score_<class>`` columns, ``score`` = the predicted class's score)
    folds : ``ID, repeat, fold``
    summary : markdown laid out like the paper's Table 2
    """

    results: pd.DataFrame
    predictions: pd.DataFrame
    folds: pd.DataFrame
    summary: str
    config: EvaluateConfig
    classes: list[str]
    positive: str
    feature_sets: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)
    chosen_C: pd.DataFrame | None = None
    n_folds: int = 5
    grouped: bool = False
    n_groups: int = 0  # groups of the grouped folds (0: not grouped)
    minor: str = ""
    major: str = ""
    pooled: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2


def evaluate(
    tables: dict[str, pd.DataFrame],
    cfg: EvaluateConfig | None = None,
    predictions: dict[str, pd.DataFrame] | None = None,
    folds: pd.DataFrame | None = None,
) -> EvalResult:
    """Run :func:`evaluate_iter` to its end without watching its progress."""
    from .events import drive

    return drive(evaluate_iter(tables, cfg, predictions, folds))


def evaluate_iter(
    tables: dict[str, pd.DataFrame],
    cfg: EvaluateConfig | None = None,
    predictions: dict[str, pd.DataFrame] | None = None,
    folds: pd.DataFrame | None = None,
) -> Generator[EvaluateEvent, None, EvalResult]:
    """Compare feature sets with a linear SVM under the paper's protocol; yield progress.

    Parameters
    ----------
    tables : feature set name -> table (``ID``, the label column, optional group column,
        numeric features); every table must hold the same IDs.
    cfg : EvaluateConfig (``jobs`` processes share the fits)
    predictions : name -> external out-of-fold predictions (``ID, label_fraction, repeat,
        fold, y_pred`` and ``score`` or ``score_<class>``), e.g. the supervised baseline;
        their folds must be the ones of :func:`make_folds`.
    folds : a fold assignment to reuse (default: :func:`make_folds`).

    Yields
    ------
    :class:`EvaluateEvent` after each fit (in the order they finish).

    Returns (as the generator's value)
    ----------------------------------
    :class:`EvalResult`
    """
    from .compare import compare

    cfg = cfg or EvaluateConfig()
    if not tables:
        raise ValueError("evaluate needs at least one feature table")
    tables = {n: t.assign(**{ID: t[ID].astype(str)}) if ID in t.columns else t for n, t in tables.items()}
    check_ids(tables)
    labels = labels_of(tables, cfg)
    notes = list(labels.warnings)
    folds = make_folds(labels, cfg) if folds is None else folds.assign(**{ID: folds[ID].astype(str)})
    X_sets: dict[str, pd.DataFrame] = {}
    for name, t in tables.items():
        clean, msgs = clean_features(t.drop(columns=[c for c in (cfg.label, cfg.group) if c in t.columns]), name)
        notes.extend(msgs)
        cols = feature_columns(clean)
        if not cols:
            raise ValueError(f"{name}: no numeric feature column left to evaluate; check the table")
        X_sets[name] = clean.set_index(ID).loc[labels.y.index, cols]
    fractions = tuple(cfg.label_fractions)
    all_splits = list(splits(folds, labels, fractions, cfg.seed))
    _check_splits(all_splits, labels, cfg)
    fits = yield from _fit_all(X_sets, labels, all_splits, cfg)
    pred_rows, chosen = [], []
    for name in X_sets:
        for s_idx, sp in enumerate(all_splits):
            C, y_pred, scores, model_classes = fits[(name, s_idx)]
            chosen.append((name, sp.fraction, sp.repeat, sp.fold, C, len(sp.train), len(sp.test)))
            pred_rows.append(_prediction_frame(name, sp, labels, y_pred, scores, model_classes))
    for name, ext in (predictions or {}).items():
        pred_rows.append(_external(name, ext, labels, all_splits))
    preds = pd.concat(pred_rows, ignore_index=True)
    results = score_predictions(preds, labels.classes, labels.positive, labels.minor, labels.major)
    result = EvalResult(
        results=results,
        predictions=preds,
        folds=folds,
        summary="",
        config=cfg,
        classes=labels.classes,
        positive=labels.positive,
        feature_sets={n: list(X.columns) for n, X in X_sets.items()},
        warnings=notes,
        chosen_C=pd.DataFrame(
            chosen, columns=["feature_set", "label_fraction", "repeat", "fold", "C", "n_train", "n_test"]
        ),
        n_folds=int(folds["fold"].nunique()),
        grouped=labels.groups is not None,
        n_groups=int(labels.groups.nunique()) if labels.groups is not None else 0,
        minor=labels.minor,
        major=labels.major,
        pooled=pooled_scores(preds, labels.classes, labels.positive, labels.minor, labels.major),
    )
    result.comparisons = compare(result)
    result.summary = summary_markdown(result)
    return result


def _check_splits(all_splits: list[Split], labels: Labels, cfg: EvaluateConfig) -> None:
    """Every training part must hold every class (grouped folds may fail to arrange that)."""
    for sp in all_splits:
        missing = sorted(set(labels.classes) - set(labels.y.loc[sp.train]))
        if missing:
            raise ValueError(
                f"the training part of repeat {sp.repeat}, fold {sp.fold} holds no case of class(es) {missing}: "
                f"their cases lie in too few groups of '{cfg.group}' to be split. Add cases from other groups, "
                "use fewer folds (--folds), or evaluate without grouping (--group '')"
            )


def _jobs(cfg: EvaluateConfig, n_tasks: int) -> int:
    """Processes to use: ``cfg.jobs``, or (0) the cores this process may use (cgroups and affinity)."""
    from joblib import cpu_count

    jobs = cfg.jobs if cfg.jobs > 0 else cpu_count()
    return max(1, min(jobs, n_tasks))


def _fit_all(
    X_sets: dict[str, pd.DataFrame], labels: Labels, all_splits: list[Split], cfg: EvaluateConfig
) -> Generator[EvaluateEvent, None, dict]:
    """Fit every (feature set, split), in ``cfg.jobs`` processes; yield an event per fit."""
    y = labels.y.to_numpy()
    position = {cid: i for i, cid in enumerate(labels.y.index)}
    groups = labels.groups.to_numpy() if labels.groups is not None else None
    arrays = {name: X.to_numpy(float) for name, X in X_sets.items()}
    index = [(np.array([position[i] for i in sp.train]), np.array([position[i] for i in sp.test])) for sp in all_splits]
    class_weight = "balanced" if cfg.class_weight else None
    # Splits first, feature sets inside: the first events already cover every feature set.
    tasks = [(name, s) for s in range(len(all_splits)) for name in X_sets]
    total, jobs = len(tasks), _jobs(cfg, len(tasks))
    repeats = len({sp.repeat for sp in all_splits})
    n_folds = len({sp.fold for sp in all_splits})

    def args(name: str, s: int) -> tuple:
        return (name, s), arrays[name], y, groups, *index[s], class_weight, cfg.seed + all_splits[s].repeat

    if jobs == 1:
        outcomes = (_fit_task(*args(name, s)) for name, s in tasks)
    else:
        from joblib import Parallel, delayed

        # joblib hands each large array to the workers once, as a memory map.
        run = Parallel(n_jobs=jobs, return_as="generator_unordered")
        outcomes = run(delayed(_fit_task)(*args(name, s)) for name, s in tasks)
    fits, t0 = {}, time.perf_counter()
    for done, (key, fit) in enumerate(outcomes, start=1):
        fits[key] = fit
        sp = all_splits[key[1]]
        yield EvaluateEvent(
            done, total, key[0], sp.fraction, sp.repeat, sp.fold, n_folds, repeats, fit[0], time.perf_counter() - t0
        )
    return fits


def _fit_task(key: tuple, *args: Any) -> tuple[tuple, tuple]:
    return key, _fit_split(*args)


def _fit_split(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    train: np.ndarray,
    test: np.ndarray,
    class_weight: str | None,
    seed: int,
) -> tuple[float, np.ndarray, np.ndarray, list]:
    """Pick C and fit on the training rows, score the test rows: (C, y_pred, scores, classes)."""
    model = LinearSVMCV(class_weight=class_weight, random_state=seed)
    with warnings.catch_warnings(), config_context(skip_parameter_validation=True):
        # Unscaled near-separable data makes liblinear stop at max_iter; the fit is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[train], y[train], groups[train] if groups is not None else None)
        scores = model.decision_function(X[test])
        y_pred = model.predict(X[test])
    return model.C_, np.asarray(y_pred, dtype=str), np.asarray(scores, dtype=float), list(model.classes_)


def _prediction_frame(name: str, sp: Split, labels: Labels, y_pred, scores, model_classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            ID: sp.test,
            "feature_set": name,
            "label_fraction": sp.fraction,
            "repeat": sp.repeat,
            "fold": sp.fold,
            "y_true": labels.y.loc[sp.test].to_numpy(),
            "y_pred": np.asarray(y_pred, dtype=str),
        }
    )
    scores = np.asarray(scores, dtype=float)
    if labels.binary:
        # LinearSVC scores favour model_classes[1]; orient them towards the positive class.
        frame["score"] = scores if model_classes[1] == labels.positive else -scores
    else:
        for k, c in enumerate(model_classes):
            frame[f"score_{c}"] = scores[:, k]
        frame["score"] = scores.max(axis=1)
    return frame


def _external(name: str, ext: pd.DataFrame, labels: Labels, all_splits: list[Split]) -> pd.DataFrame:
    """Check external out-of-fold predictions against our folds and put them in our format."""
    need = [ID, "label_fraction", "repeat", "fold", "y_pred"]
    missing = [c for c in need if c not in ext.columns]
    if missing:
        raise ValueError(
            f"predictions '{name}' lack column(s) {missing}; they need {need} and score (or score_<class>)"
        )
    ext = ext.assign(**{ID: ext[ID].astype(str)})
    expected = {(sp.fraction, sp.repeat, sp.fold): set(sp.test) for sp in all_splits}
    got = {(float(f), int(r), int(k)): set(g[ID]) for (f, r, k), g in ext.groupby(["label_fraction", "repeat", "fold"])}
    wrong = [key for key, ids in expected.items() if got.get(key) != ids]
    if wrong:
        raise ValueError(
            f"predictions '{name}' do not use the evaluation's folds (first mismatch at label_fraction, repeat, fold = "
            f"{wrong[0]}); make them with the folds of make_folds() and the same label fractions and repeats"
        )
    keys = [
        (f, r, k)
        for f, r, k in zip(ext["label_fraction"].astype(float), ext["repeat"].astype(int), ext["fold"].astype(int))
    ]
    ext = ext[[k in expected for k in keys]].copy()
    out = ext.assign(feature_set=name, y_true=labels.y.loc[ext[ID]].to_numpy(), y_pred=ext["y_pred"].astype(str))
    if labels.binary and "score" not in out.columns:
        raise ValueError(f"predictions '{name}' lack a score column (the positive class's score)")
    if not labels.binary:
        need_scores = [f"score_{c}" for c in labels.classes if f"score_{c}" not in out.columns]
        if need_scores:
            raise ValueError(f"predictions '{name}' lack score column(s) {need_scores}")
        if "score" not in out.columns:
            out["score"] = out[[f"score_{c}" for c in labels.classes]].max(axis=1)
    cols = [ID, "feature_set", "label_fraction", "repeat", "fold", "y_true", "y_pred", "score"]
    return out[cols + [c for c in out.columns if c.startswith("score_")]]


def score_predictions(
    preds: pd.DataFrame, classes: list[str], positive: str, minor: str | None = None, major: str | None = None
) -> pd.DataFrame:
    """Per-fold metrics of out-of-fold predictions, as a tidy table."""
    rows = []
    for (name, frac, r, k), g in preds.groupby(["feature_set", "label_fraction", "repeat", "fold"], sort=False):
        for metric, value in _score(g, classes, positive, minor, major).items():
            rows.append((name, float(frac), int(r), int(k), metric, value))
    return pd.DataFrame(rows, columns=["feature_set", "label_fraction", "repeat", "fold", "metric", "value"])


def pooled_scores(
    preds: pd.DataFrame, classes: list[str], positive: str, minor: str | None = None, major: str | None = None
) -> pd.DataFrame:
    """Metrics of all test folds of a repeat together (every case once), as a tidy table.

    The paper's Table 2 reports metrics over "all testing samples"; with repeats, each
    repeat gives one value.
    """
    rows = []
    for (name, frac, r), g in preds.groupby(["feature_set", "label_fraction", "repeat"], sort=False):
        for metric, value in _score(g, classes, positive, minor, major).items():
            rows.append((name, float(frac), int(r), metric, value))
    return pd.DataFrame(rows, columns=["feature_set", "label_fraction", "repeat", "metric", "value"])


def _score(g: pd.DataFrame, classes: list[str], positive: str, minor: str | None, major: str | None) -> dict:
    scores = g["score"].to_numpy(float) if len(classes) == 2 else g[[f"score_{c}" for c in classes]].to_numpy(float)
    return metrics(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), scores, classes, positive, minor, major)

"""Is the learnt representation alive? Figures of a set of embeddings, and a monitor.

SimSiam's train-mode std of the normalised output (``model.collapse_metric``) sees only
*complete* collapse. The common failure here is *dimensional* collapse: every case varies
along one or a few directions (Jing et al., ICLR 2022). So the training engine embeds a
fixed, seeded probe set (up to ``TrainConfig.health_cases`` cases) in eval mode at step 0
(the untrained encoder), at every checkpoint and at the end, and records:

- ``effective_rank``: exp of the entropy of the normalised singular values of the centred
  embeddings (Roy & Vetterli 2007); 1 for a line, up to min(n, d);
- ``top_pc_share``: share of the variance on the first principal direction, in [0, 1];
- ``norm_std``: std over cases of the L2-normalised embeddings, mean over dimensions
  (about 1/sqrt(d) = 0.0625 when spread out, 0 when constant);
- with labels, ``probe_auc`` and ``probe_balanced_accuracy``: a linear probe
  (standardised features, L2 logistic regression, stratified 5-fold cross-validation, out-of-fold
  scores). The labels come from the cache's ``Label`` column and serve **only to monitor**
  the run; they never reach the training loss, the sampling or the RE/SE module.

:class:`HealthMonitor` keeps the step-0 figures and warns, in plain words, when the
representation collapses for ``PATIENCE`` checks in a row: the rank stays low, the first
principal direction takes nearly all the variance, or the spread falls to a fraction of the
untrained encoder's. Only these label-free figures can warn. The probe is recorded
(the health table, the progress bar, the widget, the report) but never triggers a warning: it
uses every case's label, the test folds of the later cross-validation included, so choosing
``lr``, ``iterations`` or the recipe by it would tune on the test labels and make the
cross-validated figures (Table 2) optimistic. :data:`PROBE_CAVEAT` says so wherever the
probe is shown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .runs import HEALTH_CSV, RunFolder

#: a check is "low rank" below this effective rank (of at most min(n, 256))
LOW_RANK = 4.0
#: or below this share of the untrained encoder's rank
LOW_RANK_SHARE = 0.1
#: a check's variance is "on one direction" when the share off the first principal direction,
#: 1 - top_pc_share, falls below this share of the untrained encoder's (an untrained encoder
#: may already put most of it there: 0.89 on the tests' 15-case cohort)
LOW_OFF_PC_SHARE = 0.1
#: a check's spread is "low" below this share of the untrained encoder's norm_std
LOW_SPREAD_SHARE = 0.1
#: consecutive checks before a warning
PATIENCE = 3
#: probe folds and the inverse L2 strength of its logistic regression (standardised inputs)
PROBE_FOLDS = 5
PROBE_C = 0.1
#: said wherever the probe is shown (report, CLI, Training widget): it must not steer tuning
PROBE_CAVEAT = (
    "The linear probe uses every case's label, the test folds of the cross-validation included: it "
    "describes the run, it must not steer it. Choosing --lr, --iterations or the recipe by the probe "
    "makes the cross-validated figures (Table 2) optimistic; only the label-free figures (rank, "
    "first-PC share, spread) trigger warnings."
)


@dataclass
class Health:
    """Figures of one check, ``iteration`` 0 being the untrained encoder (NaN: not measured)."""

    iteration: int
    effective_rank: float
    top_pc_share: float
    norm_std: float
    probe_auc: float = math.nan
    probe_balanced_accuracy: float = math.nan
    cases: int = 0

    def figures(self) -> dict[str, float]:
        """The figures as the ``health`` dict of a TrainEvent (probe keys only when measured)."""
        out = {
            "effective_rank": self.effective_rank,
            "top_pc_share": self.top_pc_share,
            "norm_std": self.norm_std,
        }
        if not math.isnan(self.probe_auc):
            out["probe_auc"] = self.probe_auc
            out["probe_balanced_accuracy"] = self.probe_balanced_accuracy
        return out


HEALTH_COLUMNS = list(Health.__dataclass_fields__)


# --- figures of an embedding -------------------------------------------------------------


def _singular_values(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"health figures need an (n >= 2, d) array of embeddings; got shape {x.shape}")
    return np.linalg.svd(x - x.mean(axis=0), compute_uv=False)


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred ``x`` (n, d); 0 if constant."""
    return _rank_of(_singular_values(x))


def _rank_of(s: np.ndarray) -> float:
    total = s.sum()
    if not total > 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def top_pc_share(x: np.ndarray) -> float:
    """Share of the variance of ``x`` (n, d) on its first principal direction, in [0, 1] (1 if constant)."""
    return _top_share_of(_singular_values(x))


def _top_share_of(s: np.ndarray) -> float:
    var = s**2
    return float(var[0] / var.sum()) if var.sum() > 0 else 1.0


def norm_std(x: np.ndarray) -> float:
    """Std over cases of the L2-normalised rows of ``x`` (n, d), mean over the d dimensions."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return float((x / np.maximum(norms, 1e-12)).std(axis=0, ddof=1).mean())


def linear_probe(x: np.ndarray, labels: list[str] | np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Cross-validated AUC and balanced accuracy of a linear probe of ``labels`` on ``x`` (n, d).

    Standardised features, L2 logistic regression (C = ``PROBE_C``), stratified
    ``PROBE_FOLDS``-fold CV with out-of-fold scores; AUC is macro one-vs-rest for more than
    two classes. NaN, NaN when a class has fewer cases than folds (no honest estimate).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels).astype(str)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < PROBE_FOLDS:
        return math.nan, math.nan
    model = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000))
    cv = StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=seed)
    proba = cross_val_predict(model, np.asarray(x, dtype=np.float64), y, cv=cv, method="predict_proba")
    pred = classes[proba.argmax(axis=1)]
    if len(classes) == 2:
        auc = roc_auc_score(y == classes[1], proba[:, 1])
    else:
        auc = roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    return float(auc), float(balanced_accuracy_score(y, pred))


def measure(x: np.ndarray, labels: list[str] | None = None, iteration: int = 0, seed: int = 0) -> Health:
    """All figures of embeddings ``x`` (n, d); the probe only when ``labels`` are given."""
    auc = bacc = math.nan
    if labels is not None:
        auc, bacc = linear_probe(x, labels, seed)
    s = _singular_values(x)  # one SVD for both figures
    return Health(iteration, _rank_of(s), _top_share_of(s), norm_std(x), auc, bacc, len(x))


def usable_labels(labels: list[str]) -> bool:
    """Whether every case has a label and each class has enough cases for the probe."""
    if not labels or any(str(v) == "" for v in labels):
        return False
    _, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    return len(counts) >= 2 and counts.min() >= PROBE_FOLDS


def probe_set(labels: list[str], size: int, seed: int) -> np.ndarray:
    """Sorted positions of a fixed, seeded probe set of at most ``size`` cases.

    Stratified by label when the labels are usable (each class keeps its share), so a small
    minority class still reaches the probe; otherwise a plain random choice.
    """
    n = len(labels)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng([abs(int(seed)), 9])
    if not usable_labels(labels):
        return np.sort(rng.choice(n, size=size, replace=False))
    y = np.asarray(labels).astype(str)
    chosen: list[np.ndarray] = []
    classes = np.unique(y)
    for c in classes:
        members = np.flatnonzero(y == c)
        take = max(PROBE_FOLDS, round(size * len(members) / n))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


# --- the monitor --------------------------------------------------------------------------


@dataclass
class HealthMonitor:
    """Keeps the checks of a run and decides when to warn (state is checkpointed).

    ``update(h)`` records a check and returns warning texts (empty when all is well). The
    first check (iteration 0) is the untrained encoder's baseline. A check "collapses" when
    any label-free figure is off (:meth:`problems`); after ``PATIENCE`` such checks in a row
    one warning is given per run. The probe's figures are recorded, never used to warn
    (see :data:`PROBE_CAVEAT`).
    """

    checks: list[dict[str, Any]] = field(default_factory=list)
    collapse_run: int = 0
    warned: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Health | None:
        return Health(**self.checks[0]) if self.checks else None

    def rank_floor(self) -> float:
        base = self.baseline
        return max(LOW_RANK, LOW_RANK_SHARE * base.effective_rank) if base else LOW_RANK

    def problems(self, h: Health) -> list[str]:
        """What is off in check ``h`` against the baseline, in words, from label-free figures only."""
        base = self.baseline
        if base is None:
            return []
        out = []
        if h.effective_rank < self.rank_floor():
            out.append(
                f"its effective rank is {h.effective_rank:.1f}, below {self.rank_floor():.1f} (the untrained "
                f"encoder had {base.effective_rank:.1f})"
            )
        if 1 - h.top_pc_share < LOW_OFF_PC_SHARE * (1 - base.top_pc_share):
            out.append(
                f"the first principal direction holds {h.top_pc_share:.2%} of the variance (untrained "
                f"{base.top_pc_share:.2%})"
            )
        if h.norm_std < LOW_SPREAD_SHARE * base.norm_std:
            out.append(
                f"its spread (norm std) is {h.norm_std:.4f}, under {LOW_SPREAD_SHARE:.0%} of the untrained "
                f"encoder's {base.norm_std:.4f}"
            )
        return out

    def update(self, h: Health) -> list[str]:
        first = not self.checks
        self.checks.append(asdict(h))
        if first:
            return []
        problems = self.problems(h)
        self.collapse_run = self.collapse_run + 1 if problems else 0
        if self.collapse_run < PATIENCE or "collapse" in self.warned:
            return []
        self.warned.append("collapse")
        return [
            f"the representation is collapsing: for {self.collapse_run} checks in a row at least one label-free "
            f"figure has been off; now {'; '.join(problems)}. The cases vary along only a few directions and "
            "the features carry little. Try a lower --lr, --recipe default, stronger augmentation or "
            "--export backbone."
        ]

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> HealthMonitor:
        """The monitor of a checkpoint; one written before the probe stopped warning resumes too."""
        state = dict(state or {})
        if "low_rank_run" in state:  # earlier checkpoints: a rank-only run, and a probe run
            state.setdefault("collapse_run", state.pop("low_rank_run"))
            state["warned"] = ["collapse" if w == "rank" else w for w in state.get("warned", []) if w != "probe"]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in state.items() if k in known})

    def frame(self) -> pd.DataFrame:
        """One row per check, columns ``HEALTH_COLUMNS``."""
        return pd.DataFrame(self.checks, columns=HEALTH_COLUMNS)


#: a label-free figure "below the untrained encoder": the rank, or the variance off the first
#: principal direction, under this share of the untrained encoder's (above the collapse floors)
BELOW_SHARE = 0.75
HEALTHY, COLLAPSING, BELOW = "Healthy", "Collapsing", "Below the untrained encoder"


def verdict(figures: dict[str, float], untrained: dict[str, float] | None) -> tuple[str, str]:
    """A check's health in words, from the label-free figures only (never the probe).

    Parameters
    ----------
    figures : the check's figures (``effective_rank``, ``top_pc_share``)
    untrained : the untrained encoder's (step 0), or None when there is none yet

    Returns
    -------
    tuple of str
        (:data:`HEALTHY`, :data:`COLLAPSING` or :data:`BELOW`; "" for the untrained encoder
        itself or without a baseline) and one sentence saying why.
    """
    if untrained is None or figures is untrained or figures == untrained:
        return "", "the untrained encoder (the baseline of later checks)"
    monitor = HealthMonitor(checks=[{"iteration": 0, "norm_std": math.nan, **_label_free(untrained)}])
    check = Health(1, figures["effective_rank"], figures["top_pc_share"], math.nan)
    problems = [p for p in monitor.problems(check) if "spread" not in p]
    if problems:
        return COLLAPSING, f"{problems[0]}: the cases vary along few directions"
    rank, base_rank = figures["effective_rank"], untrained["effective_rank"]
    off, base_off = 1 - figures["top_pc_share"], 1 - untrained["top_pc_share"]
    if rank < BELOW_SHARE * base_rank or off < BELOW_SHARE * base_off:
        return BELOW, (
            f"rank {rank:.1f} against {base_rank:.1f} untrained, first-PC share {figures['top_pc_share']:.2f} "
            f"against {untrained['top_pc_share']:.2f}: training has narrowed the representation so far"
        )
    return HEALTHY, (
        f"rank {rank:.1f} (untrained {base_rank:.1f}), first-PC share {figures['top_pc_share']:.2f} "
        f"(untrained {untrained['top_pc_share']:.2f})"
    )


def _label_free(figures: dict[str, float]) -> dict[str, float]:
    return {"effective_rank": float(figures["effective_rank"]), "top_pc_share": float(figures["top_pc_share"])}


# --- the report ---------------------------------------------------------------------------


def health_table(runs: dict[str, Path], names: dict[str, str] | None = None) -> pd.DataFrame | None:
    """One row per run: the untrained encoder's (step 0) figures beside the last check's.

    Parameters
    ----------
    runs : run name (a training mode) -> run folder
    names : run name -> the name its features have in Table 2 (e.g. ``se`` -> ``3DSiam+SE``)

    Returns
    -------
    None when no run has a health table; else columns ``3DSiam row, steps, rank untrained,
    rank trained, first-PC share trained, probe AUC untrained, probe AUC trained`` (the
    probe's columns are NaN without labels).
    """
    names = names or {}
    rows = []
    for name, run_dir in runs.items():
        frame = RunFolder(run_dir).health()
        if frame is None or frame.empty:
            continue
        first, last = frame.iloc[0], frame.iloc[-1]
        rows.append(
            {
                "3DSiam row": names.get(name, name),
                "steps": int(last["iteration"]),
                "rank untrained": first["effective_rank"],
                "rank trained": last["effective_rank"],
                "first-PC share trained": last["top_pc_share"],
                "probe AUC untrained": first["probe_auc"],
                "probe AUC trained": last["probe_auc"],
            }
        )
    return pd.DataFrame(rows).round(3) if rows else None


REPORT_TEXT = (
    "Beside Table 2, the health of the encoder behind each 3DSiam row, on the run's fixed probe set: the "
    "untrained encoder (step 0) against the last check. Effective rank: how many directions the 256 features "
    "really vary in (near 1 means collapse). First-PC share: the variance on the first principal direction. "
    "Probe AUC: a cross-validated linear probe of the labels (labels used only for this check, never for "
    "training). Training should keep the rank up and the first-PC share from reaching 1; the whole history "
    f"is in each run's {HEALTH_CSV}. " + PROBE_CAVEAT
)


def report_section(
    runs: dict[str, Path], names: dict[str, str] | None = None
) -> tuple[str, str, list[Path], pd.DataFrame] | None:
    """The health table that goes beside Table 2, as (title, text, images, table); None when no run was checked."""
    table = health_table(runs, names)
    if table is None:
        return None
    return ("Representation health: trained against untrained", REPORT_TEXT, [], table)

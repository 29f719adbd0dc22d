"""The supervised baseline of the paper's Table 2 (last row).

"The same encoder backbone with a weighted cross-entropy loss" (paper, section 4): the 3D
encoder of :mod:`.model` with a linear classification head, trained from scratch on each
training fold of the prepared cache and scored on its test fold. It uses the evaluation's
folds and label fractions (:func:`.folds.make_folds`, :func:`.folds.splits`), so its
out-of-fold predictions can be scored by :func:`.evaluate.evaluate` as the feature set
``supervised`` (``predictions={"supervised": frame}``).

Choices the paper leaves open, made here:

- Class weights of the cross-entropy are ``n / (k * n_c)`` over the (label-fraction)
  training subset, so each class weighs the same in the loss.
- The optimiser is the ``TrainConfig`` given (optimizer, lr, momentum, weight decay, batch
  size, iterations, seed), at a constant learning rate. The pipeline gives it Adam at its own
  ``supervised_lr`` (1e-3) for ``supervised_iterations`` steps, with the SSL run's batch size,
  weight decay and seed. Batches are drawn uniformly with replacement. Inputs are scaled from [0, 255] to [0, 1]. Augmentation
  (``AugmentConfig``) is optional.
- The binary score is ``logit(positive) - logit(other)``; for several classes the logits
  are the ``score_<class>`` columns.

Has it trained? A baseline stopped too early makes "SSL beats supervised" an empty claim,
so every split records its training loss at every step (``history``) and, at the end,
the AUC on its own training cases and on its test fold (``diagnostics``; the test fold
is only reported, nothing is chosen on it). A split is flagged (``converged`` False, and a
``warning`` event) when the loss did not fall below ``LOSS_FALL`` x its start, when it
was still falling at the end (the last tenth of the steps more than ``STILL_FALLING``
below the tenth before), or when the model does not separate its own training cases
(training AUC below ``TRAIN_AUC``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..config import AugmentConfig, EvaluateConfig, TrainConfig
from .evaluate import binary_auc
from .events import Level
from .folds import Labels, labels_of, make_folds, splits

LOSS_FALL = 0.9  # the last tenth's mean loss must be below this share of the first tenth's
STILL_FALLING = 0.05  # relative fall between the last two tenths that means "not done yet"
TRAIN_AUC = 0.9  # a trained model separates its own training cases at least this well


@dataclass
class SupervisedEvent:
    """Progress: ``split``/``splits`` count (repeat, fold, label fraction) trainings.

    ``kind`` is ``step``, or ``warning`` when a split ended untrained (``note`` says why).
    """

    split: int
    splits: int
    repeat: int
    fold: int
    label_fraction: float
    iteration: int
    iterations: int
    loss: float
    elapsed_s: float
    kind: Literal["step", "warning"] = "step"
    note: str = ""

    @property
    def level(self) -> Level:
        return "warning" if self.kind == "warning" else "info"

    @property
    def index(self) -> int:
        """Steps done over all splits."""
        return (self.split - 1) * self.iterations + self.iteration

    @property
    def total(self) -> int:
        """Steps over all splits."""
        return self.splits * self.iterations

    @property
    def message(self) -> str:
        if self.kind == "warning":
            return self.note
        return (
            f"split {self.split}/{self.splits} (repeat {self.repeat}, fold {self.fold}, "
            f"{self.label_fraction:.0%} labels) step {self.iteration}/{self.iterations} loss {self.loss:.3f}"
        )


@dataclass
class SupervisedResult:
    """What :func:`train_supervised` returns.

    predictions : ``ID, label_fraction, repeat, fold, y_true, y_pred, score`` (and
        ``score_<class>`` for more than two classes), one row per test case and split
    history : ``split, repeat, fold, label_fraction, iteration, loss`` (every step)
    diagnostics : one row per split: ``split, repeat, fold, label_fraction, iterations,
        loss_start, loss_end, train_auc, test_auc, converged, reason``
    """

    predictions: pd.DataFrame
    history: pd.DataFrame
    diagnostics: pd.DataFrame

    @property
    def converged(self) -> bool:
        return bool(self.diagnostics["converged"].all()) if len(self.diagnostics) else True


def _labels(cohort: Any, cfg: EvaluateConfig) -> Labels:
    table = pd.DataFrame({"ID": cohort.ids, cfg.label or "Label": cohort.labels})
    if cfg.group:
        table[cfg.group] = cohort.groups
    return labels_of({"prepared cache": table}, cfg)


def train_supervised(
    cohort: Any,
    cfg: EvaluateConfig | None = None,
    train_cfg: TrainConfig | None = None,
    augment_cfg: AugmentConfig | None = None,
    folds: pd.DataFrame | None = None,
) -> Generator[SupervisedEvent, None, SupervisedResult]:
    """Train and score the supervised baseline on every split; yield progress events.

    Parameters
    ----------
    cohort : PreparedCohort or a prepared cache folder (images (N, C, S, S, S) in [0, 255])
    cfg : the evaluation's settings (label/group columns, folds, fractions, repeats, seed)
    train_cfg : optimiser settings; ``iterations`` steps per split
    augment_cfg : augment the training batches on the device (None: no augmentation)
    folds : the evaluation's fold assignment (default: :func:`make_folds` of the cohort)

    Returns (as the generator's value)
    ----------------------------------
    :class:`SupervisedResult`: out-of-fold predictions, loss history and per-split checks.
    """
    import torch

    from .cache import load_prepared
    from .devices import resolve_device

    cfg = cfg or EvaluateConfig()
    train_cfg = train_cfg or TrainConfig()
    if isinstance(cohort, (str, Path)):
        cohort = load_prepared(cohort)
    labels = _labels(cohort, cfg)
    folds = make_folds(labels, cfg) if folds is None else folds.assign(ID=folds["ID"].astype(str))
    unknown = sorted(set(folds["ID"]) - set(cohort.ids))
    if unknown:
        raise ValueError(
            f"{len(unknown)} case(s) of the folds are not in the prepared cache ({', '.join(unknown[:5])}); "
            "make the folds from the cases the cache holds"
        )
    all_splits = list(splits(folds, labels, tuple(cfg.label_fractions), cfg.seed))
    index = {cid: i for i, cid in enumerate(cohort.ids)}
    device = str(resolve_device(train_cfg.device))
    images = torch.from_numpy(np.asarray(cohort.images, dtype=np.float32))
    classes = labels.classes
    code = {c: k for k, c in enumerate(classes)}
    rows, history, checks = [], [], []
    t0 = time.perf_counter()
    for s, sp in enumerate(all_splits):
        train_idx = np.array([index[i] for i in sp.train])
        y_train = np.array([code[labels.y[i]] for i in sp.train])
        model = _fit(
            images,
            train_idx,
            y_train,
            len(classes),
            train_cfg,
            augment_cfg,
            device,
            seed=train_cfg.seed + 1000 * sp.repeat + 10 * sp.fold + int(sp.fraction * 7),
        )
        losses = []
        for it, loss in model:
            losses.append(loss)
            if it % 10 == 0 or it == train_cfg.iterations:
                yield SupervisedEvent(
                    s + 1,
                    len(all_splits),
                    sp.repeat,
                    sp.fold,
                    sp.fraction,
                    it,
                    train_cfg.iterations,
                    loss,
                    time.perf_counter() - t0,
                )
        net = model.net
        logits = _predict(net, images[[index[i] for i in sp.test]], device, train_cfg.embed_batch_size)
        rows.append(_frame(sp, labels, logits, classes))
        train_logits = _predict(net, images[train_idx], device, train_cfg.embed_batch_size)
        check = _check(losses, _auc(train_logits, y_train), _auc(logits, [code[labels.y[i]] for i in sp.test]))
        key = dict(split=s + 1, repeat=sp.repeat, fold=sp.fold, label_fraction=sp.fraction)
        checks.append({**key, "iterations": len(losses), **check})
        history.append(pd.DataFrame({**key, "iteration": np.arange(1, len(losses) + 1), "loss": losses}))
        if not check["converged"]:
            note = (
                f"supervised baseline, split {s + 1}/{len(all_splits)} (repeat {sp.repeat}, fold {sp.fold}, "
                f"{sp.fraction:.0%} labels) has not converged: {check['reason']}; give it more steps "
                "(PipelineConfig.supervised_iterations) before comparing SSL with it"
            )
            yield SupervisedEvent(
                s + 1, len(all_splits), sp.repeat, sp.fold, sp.fraction, len(losses), train_cfg.iterations,
                losses[-1], time.perf_counter() - t0, kind="warning", note=note,
            )  # fmt: skip
    return SupervisedResult(
        pd.concat(rows, ignore_index=True), pd.concat(history, ignore_index=True), pd.DataFrame(checks)
    )


def _auc(logits: np.ndarray, codes: Any) -> float:
    """AUC of the logits (binary: class 1 against 0; several classes: macro one-vs-rest)."""
    codes = np.asarray(codes)
    k = logits.shape[1]
    if k == 2:
        return binary_auc(codes == 1, logits[:, 1] - logits[:, 0])
    aucs = [binary_auc(codes == c, logits[:, c]) for c in range(k)]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _check(losses: list[float], train_auc: float, test_auc: float) -> dict[str, Any]:
    """Has one split's training converged? Mean losses of the first and last tenth of the steps."""
    loss = np.asarray(losses, dtype=float)
    tenth = max(1, len(loss) // 10)
    start, end = float(loss[:tenth].mean()), float(loss[-tenth:].mean())
    before = float(loss[-2 * tenth : -tenth].mean()) if len(loss) >= 2 * tenth + 1 else start
    reasons = []
    if len(loss) < 2 or end > LOSS_FALL * start:
        reasons.append(f"the training loss did not fall (first tenth {start:.3f}, last tenth {end:.3f})")
    elif before - end > STILL_FALLING * before:
        reasons.append(f"the training loss was still falling at the end ({before:.3f} -> {end:.3f})")
    if not train_auc >= TRAIN_AUC:
        reasons.append(f"it separates its own training cases with AUC {train_auc:.3f} only (< {TRAIN_AUC})")
    return dict(
        loss_start=start,
        loss_end=end,
        train_auc=train_auc,
        test_auc=test_auc,
        converged=not reasons,
        reason="; ".join(reasons),
    )


class _Training:
    """Iterates (iteration, loss) while training ``net``; ``net`` holds the result."""

    def __init__(self, net, images, idx, y, weights, cfg: TrainConfig, augment_cfg, device, seed):
        self.net, self.images, self.idx, self.y = net, images, idx, y
        self.weights, self.cfg, self.augment_cfg, self.device, self.seed = weights, cfg, augment_cfg, device, seed

    def __iter__(self):
        import torch
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        opt = _optimizer(self.net, self.cfg)
        weights = torch.as_tensor(self.weights, dtype=torch.float32, device=self.device)
        batch = max(2, self.cfg.batch_size)  # batch norm needs two samples
        self.net.train()
        for it in range(1, self.cfg.iterations + 1):
            pick = rng.choice(len(self.idx), size=batch, replace=True)
            x = self.images[self.idx[pick]].to(self.device)
            if self.augment_cfg is not None:
                from .augment import augment

                x = augment(x, self.augment_cfg, g)
            target = torch.as_tensor(self.y[pick], device=self.device)
            loss = F.cross_entropy(self.net(x / 255.0), target, weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the supervised baseline diverged at step {it}; lower its learning rate (supervised_lr in the config)"
                )
            yield it, float(loss.detach())
        self.net.eval()


def _optimizer(net, cfg: TrainConfig):
    """The SSL training's optimiser (``TrainConfig.optimizer``: SGD with momentum or Adam), constant lr."""
    import torch

    if getattr(cfg, "optimizer", "adam") == "sgd":
        momentum = getattr(cfg, "momentum", 0.9)
        return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_net(in_channels: int, n_classes: int):
    """The paper's encoder with a linear classification head: (B, C, D, H, W) -> (B, n_classes) logits."""
    import torch.nn as nn

    from .model import Encoder

    return nn.Sequential(Encoder(in_channels=in_channels), nn.Linear(256, n_classes))


def _fit(images, idx, y, n_classes, cfg, augment_cfg, device, seed) -> _Training:
    import torch

    torch.manual_seed(seed)
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = len(y) / (n_classes * np.maximum(counts, 1))
    net = make_net(images.shape[1], n_classes).to(device)
    return _Training(net, images, idx, y, weights, cfg, augment_cfg, device, seed)


def _predict(net, x, device: str, batch_size: int) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), max(1, batch_size)):
            out.append(net(x[start : start + batch_size].to(device) / 255.0).float().cpu().numpy())
    return np.concatenate(out)


def _frame(sp, labels: Labels, logits: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "ID": sp.test,
            "label_fraction": sp.fraction,
            "repeat": sp.repeat,
            "fold": sp.fold,
            "y_true": labels.y.loc[sp.test].to_numpy(),
            "y_pred": [classes[k] for k in logits.argmax(axis=1)],
        }
    )
    if len(classes) == 2:
        pos = classes.index(labels.positive)
        frame["score"] = logits[:, pos] - logits[:, 1 - pos]
    else:
        for k, c in enumerate(classes):
            frame[f"score_{c}"] = logits[:, k]
        frame["score"] = logits.max(axis=1)
    return frame


def run_supervised(
    cohort: Any,
    cfg: EvaluateConfig | None = None,
    train_cfg: TrainConfig | None = None,
    augment_cfg: AugmentConfig | None = None,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Run :func:`train_supervised` to the end; return its out-of-fold predictions."""
    from .events import drive

    return drive(train_supervised(cohort, cfg, train_cfg, augment_cfg, folds)).predictions


def cross_validate(
    cohort: Any,
    folds: pd.DataFrame | None,
    cfg: EvaluateConfig | None = None,
    train_cfg: TrainConfig | None = None,
    augment_cfg: AugmentConfig | None = None,
) -> Generator[SupervisedEvent, None, SupervisedResult]:
    """:func:`train_supervised` with the folds first (the pipeline's call)."""
    return (yield from train_supervised(cohort, cfg, train_cfg, augment_cfg, folds))


def demo_train_config(**changes: Any) -> TrainConfig:
    """Small settings that run on a CPU in seconds (the demo and tests)."""
    base = dict(iterations=20, batch_size=4, lr=1e-3, device="cpu")
    base.update(changes)
    return dataclasses.replace(TrainConfig(), **base)

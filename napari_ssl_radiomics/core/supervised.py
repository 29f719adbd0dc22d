"""The supervised baseline of the paper's Table 2 (last row).

"The same encoder backbone with a weighted cross-entropy loss" (paper, section 4): the 3D
encoder of :mod:`.model` with a linear classification head, trained from scratch on each
training fold of the prepared cache and scored on its test fold. It uses the evaluation's
folds and label fractions (:func:`.evaluate.make_folds`, :func:`.evaluate.splits`), so its
out-of-fold predictions can be scored by :func:`.evaluate.evaluate` as the feature set
``supervised`` (``predictions={"supervised": frame}``).

Choices the paper leaves open, made here:

- Class weights of the cross-entropy are ``n / (k * n_c)`` over the (label-fraction)
  training subset, so each class weighs the same in the loss.
- Optimiser and schedule are the SSL training's (``TrainConfig``: Adam, lr, weight decay,
  batch size, iterations, seed); batches are drawn uniformly with replacement. Inputs are
  scaled from [0, 255] to [0, 1]. Augmentation (``AugmentConfig``) is optional.
- The binary score is ``logit(positive) - logit(other)``; for several classes the logits
  are the ``score_<class>`` columns.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import AugmentConfig, EvaluateConfig, TrainConfig
from .evaluate import Labels, labels_of, make_folds, splits


@dataclass
class SupervisedEvent:
    """Progress: ``split``/``splits`` count (repeat, fold, label fraction) trainings."""

    split: int
    splits: int
    repeat: int
    fold: int
    label_fraction: float
    iteration: int
    iterations: int
    loss: float
    elapsed_s: float

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
        return (
            f"split {self.split}/{self.splits} (repeat {self.repeat}, fold {self.fold}, "
            f"{self.label_fraction:.0%} labels) step {self.iteration}/{self.iterations} loss {self.loss:.3f}"
        )


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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
) -> Generator[SupervisedEvent, None, pd.DataFrame]:
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
    DataFrame ``ID, label_fraction, repeat, fold, y_true, y_pred, score`` (and
    ``score_<class>`` for more than two classes), one row per test case and split.
    """
    import torch

    from .cache import load_prepared

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
    device = _device(train_cfg.device)
    images = torch.from_numpy(np.asarray(cohort.images, dtype=np.float32))
    classes = labels.classes
    code = {c: k for k, c in enumerate(classes)}
    rows = []
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
        for it, loss in model:
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
    return pd.concat(rows, ignore_index=True)


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
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
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
                raise FloatingPointError(f"the supervised baseline diverged at step {it}; lower TrainConfig.lr")
            yield it, float(loss.detach())
        self.net.eval()


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

    return drive(train_supervised(cohort, cfg, train_cfg, augment_cfg, folds))


def cross_validate(
    cohort: Any,
    folds: pd.DataFrame | None,
    cfg: EvaluateConfig | None = None,
    train_cfg: TrainConfig | None = None,
    augment_cfg: AugmentConfig | None = None,
) -> Generator[SupervisedEvent, None, pd.DataFrame]:
    """:func:`train_supervised` with the folds first (the pipeline's call)."""
    return (yield from train_supervised(cohort, cfg, train_cfg, augment_cfg, folds))


def demo_train_config(**changes: Any) -> TrainConfig:
    """Small settings that run on a CPU in seconds (the demo and tests)."""
    base = dict(iterations=20, batch_size=4, lr=1e-3, device="cpu")
    base.update(changes)
    return dataclasses.replace(TrainConfig(), **base)

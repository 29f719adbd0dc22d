"""The training run's optimiser and its learning-rate schedule.

The encoder and the predictor are two parameter groups; with ``fix_pred_lr`` (SimSiam) the
predictor keeps ``lr`` while the encoder follows the schedule: ``lr * i / w`` during the
warm-up of w = min(``lr_warmup``, ``iterations`` // 4) steps, then cosine decay to 0 at
``iterations`` (or constant). Growing ``iterations`` on resume stretches the cosine.
"""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam over the encoder's group and the rest's (fused on CUDA).

    The rest is 3DSiam's predictor or the Rubik classifier; only the predictor keeps a fixed
    rate (``fix_pred_lr``): the classifier is scheduled with the encoder.
    """
    rest = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    groups = [
        {"params": list(model.encoder.parameters()), "fixed_lr": False},
        {"params": rest, "fixed_lr": cfg.fix_pred_lr and cfg.method == "siam"},
    ]
    fused = device.type == "cuda"
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused or None
        )
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def lr_factor(cfg: TrainConfig, iteration: int) -> float:
    """The scheduled share of ``lr`` at (1-based) step ``iteration``."""
    warmup = min(cfg.lr_warmup, cfg.iterations // 4)  # a short run is not all warm-up
    if iteration <= warmup:
        return iteration / warmup
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.iterations - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration - warmup) / span)))


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, iteration: int) -> None:
    """Set each group's learning rate for step ``iteration`` (the fixed groups keep ``lr``)."""
    factor = lr_factor(cfg, iteration)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr if group["fixed_lr"] else cfg.lr * factor

"""A run's checkpoint: writing it whole, reading it back, and the network it holds.

The checkpoint (``checkpoint.pt`` of a run folder, :mod:`.runs`) is a ``torch.save`` dict
of format :data:`CHECKPOINT_FORMAT`: the model's weights and ``model_args``, the optimiser,
every random state and the history (what :class:`.train._Run` saves and restores). This
module is its one home: :mod:`.train` writes it, :mod:`.embed`, the CLI and the benchmarks
load its network with :func:`load_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .devices import resolve_device
from .model import SimSiam3D
from .rubik import RubikNet
from .runs import CHECKPOINT

CHECKPOINT_FORMAT = 3


class _Writer:
    """A file that remembers the OSError of a failed write: torch.save reports a full disk as
    a RuntimeError ("unexpected pos"), which names neither the cause nor the file."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            self.error = exc
            raise


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """``torch.save(payload, path)``, a failed write raised as its OSError (ENOSPC, EDQUOT, ...)."""
    with open(path, "wb") as fh:
        writer = _Writer(fh)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every parameter and floating-point buffer of ``model`` is finite."""
    tensors = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all().item())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's content; ValueError naming the file when it is truncated or not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except OSError as exc:
        if exc.errno:  # a real OS error (permissions, I/O) says what it is itself
            raise
        ckpt = exc
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError...
        ckpt = exc
    if isinstance(ckpt, Exception):
        reason = (str(ckpt).strip().splitlines() or [type(ckpt).__name__])[0][:120]
        raise ValueError(
            f"{path} is not a readable checkpoint (truncated or damaged: {reason}); "
            "use a complete checkpoint (ssl-radiomics train --resume continues from the last one) or train again"
        )
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of ssl-radiomics train; give a run folder or its {CHECKPOINT}")
    return ckpt


def build_model(args: dict[str, Any]) -> SimSiam3D | RubikNet:
    """The network a checkpoint's ``model_args`` describe: RubikNet when they say ``method: rubik``."""
    args = dict(args)
    return RubikNet(**args) if args.pop("method", "siam") == "rubik" else SimSiam3D(**args)


def load_model(run_or_checkpoint: str | Path, device: str = "cpu") -> SimSiam3D | RubikNet:
    """The trained network (SimSiam3D or RubikNet) of a run folder or checkpoint file, in eval mode
    on ``device``; its ``encoder`` is what embeds."""
    return load_model_step(run_or_checkpoint, device)[0]


def load_model_step(run_or_checkpoint: str | Path, device: str = "cpu") -> tuple[SimSiam3D | RubikNet, int]:
    """:func:`load_model` and the step (iteration) its checkpoint was saved at."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; train a run first (ssl-radiomics train CACHE --out RUN)")
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["model_args"])  # format 1 holds in_channels only: the paper's head
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval(), int(ckpt.get("iteration", 0))

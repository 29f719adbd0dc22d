"""The learnt representation of each case: the encoder's 256-d output (paper, section 3).

The paper exports "the last-layer feature of the encoder" (r2 = E_f(x2), i.e. the encoder
output z, not the predictor's). A run trained with ``TrainConfig.export = "backbone"``
exports the encoder's 256-d global pool instead (the layer before its dense head; see
:class:`model.Encoder`); the checkpoint records which, so :func:`embed` follows the run. Crops go through the encoder un-augmented, in eval mode
(batch norm with its running statistics, so a case's vector does not depend on the other
cases of its batch), in fp32 and without gradients.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .cache import PreparedCohort, check_preparation, load_prepared, preparation
from .checkpoint import load_model_step
from .devices import resolve_device
from .events import Level, drive
from .model import Encoder, SimSiam3D
from .runs import RunFolder

PREFIX = "ssl_"
#: ``DataFrame.attrs`` key of :func:`embed`'s table: the checkpoint step the vectors came from
STEP_ATTR = "checkpoint_step"


def feature_columns(dim: int = 256) -> list[str]:
    """Column names ``ssl_000`` ... of a ``dim``-d representation."""
    return [f"{PREFIX}{i:03d}" for i in range(dim)]


@dataclass(frozen=True)
class EmbedEvent:
    """Progress of :func:`embed_iter`: ``index`` of ``total`` cases encoded (the events protocol)."""

    index: int
    total: int
    message: str = ""
    level: Level = "info"


def encode(
    model_or_encoder: SimSiam3D | Encoder | nn.Module,
    images: np.ndarray,
    device: str = "cpu",
    batch_size: int = 16,
) -> np.ndarray:
    """Encode volumes into representations.

    Parameters
    ----------
    model_or_encoder : a SimSiam3D (its ``encoder`` is used) or an Encoder, whose
        ``represent`` (the layer chosen by its ``export``) gives the output; any other module
        is called as it is. It is moved to ``device`` and left in the train/eval mode it came in.
    images : (N, C, S, S, S) or (N, S, S, S) array (a memmap works: it is read one batch at
        a time), intensities in [0, 255]
    device : "auto", "cpu", "cuda" or "cuda:N"
    batch_size : volumes per forward pass (memory, not results, depends on it)

    Returns
    -------
    (N, dim) float32 array.
    """
    return drive(encode_iter(model_or_encoder, images, device, batch_size))


def encode_iter(
    model_or_encoder: SimSiam3D | Encoder | nn.Module,
    images: np.ndarray,
    device: str = "cpu",
    batch_size: int = 16,
) -> Generator[EmbedEvent, None, np.ndarray]:
    """:func:`encode` as a generator: an :class:`EmbedEvent` after each batch, the array at the end."""
    encoder = getattr(model_or_encoder, "encoder", model_or_encoder)
    shape = tuple(np.shape(images))
    if len(shape) not in (4, 5):
        raise ValueError(f"encode takes (N, C, S, S, S) or (N, S, S, S) volumes; got shape {shape}")
    if shape[0] == 0:
        raise ValueError("encode was given no volumes")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    dev = resolve_device(device)
    encoder.to(dev)
    was_training = encoder.training
    encoder.eval()
    out = []
    n = shape[0]
    try:
        for start in range(0, n, batch_size):
            # one batch in float32 at a time: a memmapped uint8 cohort is never copied whole
            batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
            x = torch.from_numpy(batch[:, None] if batch.ndim == 4 else batch).to(dev)
            with torch.no_grad():
                z = encoder.represent(x) if hasattr(encoder, "represent") else encoder(x)
            out.append(z.float().cpu().numpy())
            done = min(n, start + batch_size)
            yield EmbedEvent(done, n, f"encoded {done} of {n} cases")
    finally:
        encoder.train(was_training)
    return np.concatenate(out).astype(np.float32, copy=False)


def embed(
    run: str | Path,
    cohort: PreparedCohort | str | Path,
    device: str = "auto",
    batch_size: int = 16,
) -> pd.DataFrame:
    """The representation of every prepared case of ``cohort`` from the run's checkpoint.

    Parameters
    ----------
    run : a run folder (or its checkpoint) written by :func:`train.train`
    cohort : a loaded cohort or the folder of a prepared cache
    device, batch_size : see :func:`encode`

    Returns
    -------
    DataFrame with columns ``ID``, ``ssl_000`` ... ``ssl_255``, one row per case in the
    cache's order; ``attrs["checkpoint_step"]`` is the step of the checkpoint used.

    Raises
    ------
    ValueError
        When the cache was prepared otherwise than the one the run was trained on
        (:func:`.cache.check_preparation`: size, spacing, crop, intensity, channels ...).
    """
    return drive(embed_iter(run, cohort, device, batch_size))


def embed_iter(
    run: str | Path,
    cohort: PreparedCohort | str | Path,
    device: str = "auto",
    batch_size: int = 16,
) -> Generator[EmbedEvent, None, pd.DataFrame]:
    """:func:`embed` as a generator of :class:`EmbedEvent` (cases encoded); returns the table."""
    data = cohort if isinstance(cohort, PreparedCohort) else load_prepared(cohort)
    check_preparation(
        RunFolder.of(run).preparation(),
        preparation(data),
        run,
        data.root,
        "embed a cache prepared with the run's settings (ssl-radiomics prepare with them), or train a run on this one",
    )
    model, step = load_model_step(run, device="cpu")
    if model.encoder.in_channels != data.channels:
        raise ValueError(
            f"the model of {run} takes {model.encoder.in_channels} channel(s) but the cohort {data.root} has "
            f"{data.channels}; embed the cache the run was trained on (or one prepared the same way)"
        )
    feats = yield from encode_iter(model, data.images, device=device, batch_size=batch_size)
    table = pd.DataFrame(feats, columns=feature_columns(feats.shape[1]))
    table.insert(0, "ID", list(data.ids))
    table.attrs[STEP_ATTR] = step
    return table


def write_embedding(table: pd.DataFrame, path: str | Path, run: str | Path, cache: str | Path) -> tuple[Path, Path]:
    """Write an :func:`embed` table as CSV with its ``<name>.json`` sidecar, each whole or not at all.

    The sidecar records the run, its checkpoint (path, SHA-256 and the step it was saved at:
    ``checkpoint_step``) and the cache, beside the usual provenance (date, versions).
    """
    from .tables import write_table
    from .utils import sha256

    folder = RunFolder.of(run)
    checkpoint = Path(run) if Path(run).is_file() else folder.checkpoint
    return write_table(
        table,
        path,
        run=str(folder.path),
        checkpoint=str(checkpoint),
        checkpoint_sha256=sha256(checkpoint),
        checkpoint_step=table.attrs.get(STEP_ATTR),
        cache=str(cache),
    )

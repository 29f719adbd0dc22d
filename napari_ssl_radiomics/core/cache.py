"""The on-disk cache of prepared cases: the contract between preparation and training.

Layout of a cache folder::

    CACHE/
      cases.csv          one row per manifest case: ID, Label, Group, status, reason, file
      prepare.json       settings, versions and date of the last ``prepare``
      crops/<ID>.npz     image (C, S, S, S) float32 in [0, 255]; mask (S, S, S) uint8 in {0, 1}
      crops/<ID>.json    metadata: source paths and checksums, spacing (mm), crop origin (mm,
                         physical x, y, z), direction, settings hash, channels

Arrays are in numpy order (z, y, x); ``S`` is ``PrepareConfig.size``. ``status`` is ``ok``
or ``skipped``; ``reason`` says why a case was skipped and what to do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .utils import atomic_path, write_json

CASES_CSV = "cases.csv"
PREPARE_JSON = "prepare.json"
CROPS = "crops"
CASE_COLUMNS = ["ID", "Label", "Group", "status", "reason", "file"]


def safe_name(case_id: str) -> str:
    """A file name for a case ID (characters outside ``[A-Za-z0-9._-]`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(case_id)) or "_"


def crop_paths(cache_dir: str | Path, case_id: str) -> tuple[Path, Path]:
    """The ``.npz`` and ``.json`` paths of a case in a cache."""
    base = Path(cache_dir) / CROPS / safe_name(case_id)
    return base.with_suffix(".npz"), base.with_suffix(".json")


def write_crop(cache_dir: str | Path, case_id: str, image: np.ndarray, mask: np.ndarray, meta: dict) -> Path:
    """Store one prepared case, whole or not at all; return the ``.npz`` path.

    Parameters
    ----------
    image : (C, S, S, S) float array, intensities in [0, 255]
    mask : (S, S, S) array, nonzero inside the ROI
    meta : JSON-able metadata (see the module docstring)
    """
    if image.ndim != 4 or mask.ndim != 3 or image.shape[1:] != mask.shape:
        raise ValueError(
            f"case {case_id}: image {image.shape} and mask {mask.shape} do not form a (C,S,S,S)/(S,S,S) pair"
        )
    npz, meta_path = crop_paths(cache_dir, case_id)
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, image=image.astype(np.float32), mask=(mask > 0).astype(np.uint8))
    write_json(meta_path, meta)
    return npz


def read_crop(cache_dir: str | Path, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one prepared case: image (C,S,S,S) float32, mask (S,S,S) uint8, metadata."""
    npz, meta_path = crop_paths(cache_dir, case_id)
    with np.load(npz) as data:
        image, mask = data["image"], data["mask"]
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    return image, mask, meta


def read_cases(cache_dir: str | Path) -> pd.DataFrame:
    """The cache's ``cases.csv`` (every case, ``ok`` or ``skipped``)."""
    path = Path(cache_dir) / CASES_CSV
    if not path.exists():
        raise FileNotFoundError(
            f"{cache_dir} is not a prepared cache (no {CASES_CSV}); run `ssl-radiomics prepare MANIFEST --out {cache_dir}` first"
        )
    return pd.read_csv(path, dtype={"ID": str, "Label": str, "Group": str}, keep_default_na=False)


@dataclass
class PreparedCohort:
    """Every ``ok`` case of a cache, loaded into memory.

    Attributes
    ----------
    ids : case IDs, in ``cases.csv`` order
    images : (N, C, S, S, S) float32, intensities in [0, 255]
    masks : (N, S, S, S) uint8
    labels : class of each case as a string ('' when unknown)
    groups : group of each case as a string ('' when unknown)
    meta : per-case metadata dicts
    """

    root: Path
    ids: list[str]
    images: np.ndarray
    masks: np.ndarray
    labels: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def load_prepared(cache_dir: str | Path) -> PreparedCohort:
    """Load the ``ok`` cases of a cache.

    Raises
    ------
    FileNotFoundError
        When the folder holds no prepared cache.
    ValueError
        When no case is ``ok`` (the reasons of the first skipped cases are named).
    """
    table = read_cases(cache_dir)
    ok = table[table["status"] == "ok"]
    if ok.empty:
        reasons = "; ".join(f"{r.ID}: {r.reason}" for r in table.head(3).itertuples())
        raise ValueError(f"{cache_dir}: no case was prepared successfully ({reasons})")
    images, masks, metas = [], [], []
    for case_id in ok["ID"]:
        image, mask, meta = read_crop(cache_dir, case_id)
        images.append(image)
        masks.append(mask)
        metas.append(meta)
    return PreparedCohort(
        root=Path(cache_dir),
        ids=list(ok["ID"]),
        images=np.stack(images),
        masks=np.stack(masks),
        labels=list(ok["Label"]) if "Label" in ok else [""] * len(ok),
        groups=list(ok["Group"]) if "Group" in ok else [""] * len(ok),
        meta=metas,
    )

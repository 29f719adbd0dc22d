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

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .utils import atomic_path, write_json

log = logging.getLogger(__name__)

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


#: the prepare settings a run records and a cache must match (``jobs`` changes no crop)
PREPARATION_SKIP = ("jobs",)


def preparation(data: PreparedCohort) -> dict[str, Any]:
    """How the crops of a loaded cohort were made: the settings of its ``prepare.json`` (when
    the cache has one) and the crops' ``size`` and ``channels`` (always, read off the arrays)."""
    settings: dict[str, Any] = {}
    path = Path(data.root) / PREPARE_JSON
    if path.is_file():
        try:
            settings = dict(json.loads(path.read_text(encoding="utf-8")).get("config") or {})
        except (OSError, ValueError, AttributeError):
            settings = {}
    for key in PREPARATION_SKIP:
        settings.pop(key, None)
    settings.update(size=data.size, channels=data.channels)
    return settings


def check_preparation(trained: dict[str, Any] | None, given: dict[str, Any], run: Any, cache: Any, fix: str) -> None:
    """Refuse a cache prepared otherwise than the one a run was trained on.

    Parameters
    ----------
    trained : the run's record (:meth:`.runs.RunFolder.preparation`); None: the run recorded none
    given : :func:`preparation` of the cache in hand
    run, cache : the run folder and the cache, for the message
    fix : what to do instead (the end of the message)

    Raises
    ------
    ValueError
        Naming the first setting that differs, both values and ``fix``. Only settings both
        sides record are compared (a cache without ``prepare.json`` still has a size).
    """
    if not trained:
        return
    for key in sorted(set(trained) & set(given)):
        then, now = trained[key], given[key]
        if isinstance(then, list | tuple) and isinstance(now, list | tuple):
            then, now = list(then), list(now)
        if then != now:
            raise ValueError(
                f"{cache} was prepared with {key} = {given[key]!r} but the run {run} was trained on a cache with "
                f"{key} = {trained[key]!r}; {fix}"
            )


# --- streaming: a memory-mapped uint8 copy of the cache, for cohorts beyond memory ------------

STREAM = "stream"
STREAM_IMAGES = "images.npy"
STREAM_MASKS = "masks.npy"
STREAM_INDEX = "index.json"
STREAM_VERSION = 2  # 2: index.json holds a SHA-256 per case
GIB = 1024**3
#: bytes of a stream checked in full when it is opened; a larger one is checked on a sample
#: of cases of about this size (benchmarks/bench_stream_check.py: 1 GB from the page cache
#: in 1.3-3 s on a loaded 2-core EPYC; a full check of 100 GB would cost minutes per open)
STREAM_CHECK_BYTES = GIB


def _stream_key(cache_dir: Path, ids: list[str]) -> str:
    """What the stream copies: each ok case's ID and its crop file's size and mtime."""
    from .utils import config_hash

    stats = []
    for case_id in ids:
        st = crop_paths(cache_dir, case_id)[0].stat()
        stats.append([case_id, st.st_size, st.st_mtime_ns])
    return config_hash({"cases": stats, "version": STREAM_VERSION})


def _case_digest(image: np.ndarray, mask: np.ndarray) -> str:
    """SHA-256 of one case's uint8 image and mask rows, as the stream holds them."""
    digest = hashlib.sha256(np.ascontiguousarray(image).data)
    digest.update(np.ascontiguousarray(mask).data)
    return digest.hexdigest()


def _ok_cases(cache_dir: Path) -> pd.DataFrame:
    table = read_cases(cache_dir)
    ok = table[table["status"] == "ok"]
    if ok.empty:
        reasons = "; ".join(f"{r.ID}: {r.reason}" for r in table.head(3).itertuples())
        raise ValueError(f"{cache_dir}: no case was prepared successfully ({reasons})")
    return ok


def _read_index(path: Path) -> dict[str, Any] | None:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("version") == STREAM_VERSION else None


def _open_stream(folder: Path, cases: int) -> tuple[np.ndarray, np.ndarray] | str:
    """The stream's two memory maps, or what is wrong with their files (truncated, extended, unreadable)."""
    arrays = []
    for name in (STREAM_IMAGES, STREAM_MASKS):
        path = folder / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:  # a truncated .npy: "mmap length is greater than file size"
            return f"{name} cannot be read ({exc})"
        if not isinstance(array, np.memmap) or array.shape[:1] != (cases,):
            return f"{name} does not hold {cases} cases"
        if path.stat().st_size != array.offset + array.nbytes:
            return f"{name} is {path.stat().st_size} bytes, not the {array.offset + array.nbytes} its header says"
        arrays.append(array)
    return arrays[0], arrays[1]


def stream_problem(folder: str | Path, index: dict[str, Any], check_bytes: int = STREAM_CHECK_BYTES) -> str | None:
    """What is wrong with a stream's files, or None when they hold what ``index`` records.

    The files' sizes are always checked; the cases' SHA-256 digests all of them when the
    stream is at most ``check_bytes``, else a random sample of about that many bytes (the
    first and last case always among them).
    """
    folder = Path(folder)
    digests = index.get("digests") or []
    opened = _open_stream(folder, len(digests))
    if isinstance(opened, str):
        return opened
    images, masks = opened
    per_case = images[0].nbytes + masks[0].nbytes if len(digests) else 1
    positions = np.arange(len(digests))
    if per_case * len(digests) > check_bytes:
        rng = np.random.default_rng()
        sample = rng.choice(len(digests), size=max(2, check_bytes // per_case), replace=False)
        positions = np.unique(np.concatenate([[0, len(digests) - 1], sample]))
    bad = [int(i) for i in positions if _case_digest(images[i], masks[i]) != digests[i]]
    if bad:
        return f"{len(bad)} of {len(positions)} cases checked differ from their digest (first: {index['ids'][bad[0]]})"
    return None


def build_stream(cache_dir: str | Path) -> Path:
    """Write ``CACHE/stream/``: every ok case as uint8, memory-mappable; return the folder.

    ``images.npy`` (N, C, S, S, S) uint8 holds the crops rounded to whole grey levels (the
    crops are float32 in [0, 255]; rounding moves a voxel by at most 0.5 of 255 levels),
    ``masks.npy`` (N, S, S, S) uint8, ``index.json`` the IDs, labels, groups, a key of the
    crop files it was built from and a SHA-256 of each case. Cases are copied one at a
    time, so building needs the memory of one crop. An up-to-date stream whose files pass
    :func:`stream_problem` is kept as it is; a damaged one (bytes overwritten, truncated) is
    rebuilt with a logged note. index.json is written last, so a stream whose building was
    interrupted is rebuilt.

    Raises
    ------
    FileNotFoundError
        When the stream must be (re)built and crop files it is built from are gone.
    """
    root = Path(cache_dir)
    ok = _ok_cases(root)
    ids = list(ok["ID"])
    missing = [case_id for case_id in ids if not crop_paths(root, case_id)[0].is_file()]
    key = None if missing else _stream_key(root, ids)
    folder = root / STREAM
    index_path = folder / STREAM_INDEX
    index = _read_index(index_path)
    # without the crops, a stream of the same cases that passes its digests is all there is
    if index is not None and (index.get("key") == key or (key is None and index.get("ids") == ids)):
        problem = stream_problem(folder, index)
        if problem is None:
            return folder
        log.warning(f"{folder} is damaged ({problem}); rebuilding it from the crops")
    if missing:
        raise FileNotFoundError(
            f"{folder} must be rebuilt but {root / CROPS} lacks the crops of {len(missing)} case(s) "
            f"(first: {missing[0]}); run `ssl-radiomics prepare` again into {root}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    index_path.unlink(missing_ok=True)
    digests = _write_stream(root, folder, ids)
    write_json(
        index_path,
        {
            "ids": ids,
            "labels": list(ok["Label"]) if "Label" in ok else [""] * len(ids),
            "groups": list(ok["Group"]) if "Group" in ok else [""] * len(ids),
            "key": key,
            "digests": digests,
            "version": STREAM_VERSION,
        },
    )
    return folder


def _write_stream(root: Path, folder: Path, ids: list[str]) -> list[str]:
    """Copy the crops of ``ids`` into the stream's two .npy files; return each case's digest."""
    first, first_mask, _ = read_crop(root, ids[0])
    digests = []
    with atomic_path(folder / STREAM_IMAGES) as tmp_images, atomic_path(folder / STREAM_MASKS) as tmp_masks:
        images = np.lib.format.open_memmap(tmp_images, "w+", np.uint8, (len(ids), *first.shape))
        masks = np.lib.format.open_memmap(tmp_masks, "w+", np.uint8, (len(ids), *first_mask.shape))
        for i, case_id in enumerate(ids):
            image, mask, _ = (first, first_mask, None) if i == 0 else read_crop(root, case_id)
            if image.shape != images.shape[1:]:
                raise ValueError(
                    f"{root}: case {case_id} has crops of shape {image.shape}, the first case {images.shape[1:]}; "
                    "prepare the whole cohort with the same settings"
                )
            images[i] = np.rint(np.clip(image, 0, 255))
            masks[i] = mask
            digests.append(_case_digest(images[i], masks[i]))
        images.flush()
        masks.flush()
        del images, masks
    return digests


def load_streamed(cache_dir: str | Path) -> PreparedCohort:
    """The ok cases of a cache as read-only memory maps (building ``stream/`` when needed).

    ``images`` is then (N, C, S, S, S) **uint8** (see :func:`build_stream`), ``masks``
    (N, S, S, S) uint8, and ``meta`` is empty (reading one JSON per case is what a large
    cohort cannot afford; :func:`read_crop` gives a case's metadata).
    """
    folder = build_stream(cache_dir)
    index = json.loads((folder / STREAM_INDEX).read_text(encoding="utf-8"))
    return PreparedCohort(
        root=Path(cache_dir),
        ids=list(index["ids"]),
        images=np.load(folder / STREAM_IMAGES, mmap_mode="r"),
        masks=np.load(folder / STREAM_MASKS, mmap_mode="r"),
        labels=list(index["labels"]),
        groups=list(index["groups"]),
        meta=[],
    )


def in_memory_bytes(cache_dir: str | Path) -> int:
    """Bytes the ok cases take as float32 in memory (what :func:`load_prepared` allocates)."""
    root = Path(cache_dir)
    ok = _ok_cases(root)
    with np.load(crop_paths(root, ok["ID"].iloc[0])[0]) as data:
        per_case = int(np.prod(data["image"].shape)) * 4 + int(np.prod(data["mask"].shape))
    return per_case * len(ok)


def default_budget_gib() -> float:
    """Half of this machine's physical memory, GiB (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 / GIB
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 8.0


def load_for_training(cache_dir: str | Path, budget_gib: float = 0.0) -> PreparedCohort:
    """The cohort in memory when it fits ``budget_gib`` (0: :func:`default_budget_gib`),
    else memory-mapped (:func:`load_streamed`)."""
    budget = budget_gib or default_budget_gib()
    root = Path(cache_dir)
    missing = [i for i in _ok_cases(root)["ID"] if not crop_paths(root, i)[0].is_file()]
    if missing:  # only a stream can stand in for them (checked; refused naming the folder when damaged or absent)
        if not (root / STREAM / STREAM_INDEX).is_file():
            raise FileNotFoundError(
                f"{root / CROPS} lacks the crops of {len(missing)} case(s) (first: {missing[0]}) and {root} holds no "
                f"stream to train from; run `ssl-radiomics prepare` again into {root}"
            )
        return load_streamed(root)
    if in_memory_bytes(cache_dir) <= budget * GIB:
        return load_prepared(cache_dir)
    return load_streamed(cache_dir)


def is_streamed(data: PreparedCohort) -> bool:
    """Whether a cohort's crops are a uint8 memory map rather than float32 in memory."""
    return isinstance(data.images, np.memmap) or data.images.dtype == np.uint8


class StreamedCrops:
    """Batches of crops read from a uint8 memory map, with the next batch read ahead.

    :meth:`prefetch` starts reading the given positions on a background thread (page
    faults and the copy release the GIL, so the read overlaps the training step);
    :meth:`take` returns float32 crops, taking the rows already read ahead and reading the
    others at once. The values are exactly ``images[positions].astype(float32)``, whatever
    was prefetched.

    Parameters
    ----------
    images : (N, C, S, S, S) uint8 array (a ``np.memmap``)
    pin : pin the host batches (for an asynchronous copy to a CUDA device)
    """

    def __init__(self, images: np.ndarray, pin: bool = False) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.images = images
        self.pin = pin
        self.device = None  # the crops live on no device: the training loop copies each batch
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="crop-prefetch")
        self._ahead: Any = None  # Future of (positions, uint8 rows)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.unique(positions)  # sorted reads are sequential on disk
        return order, np.ascontiguousarray(self.images[order])

    def prefetch(self, positions: np.ndarray) -> None:
        """Start reading ``positions`` (int array) in the background."""
        self._ahead = self._pool.submit(self._read, np.asarray(positions, dtype=np.int64))

    def take(self, positions: np.ndarray) -> Any:
        """Crops at ``positions`` as a float32 torch tensor (B, C, S, S, S) on the host."""
        import torch

        positions = np.asarray(positions, dtype=np.int64)
        rows: dict[int, np.ndarray] = {}
        if self._ahead is not None:
            order, block = self._ahead.result()
            where = {int(p): i for i, p in enumerate(order)}
            rows = {int(p): block[where[int(p)]] for p in positions if int(p) in where}
        missing = [int(p) for p in positions if int(p) not in rows]
        self.hits += len(positions) - len(missing)
        self.misses += len(missing)
        if missing:
            order, block = self._read(np.asarray(missing, dtype=np.int64))
            rows.update({int(p): block[i] for i, p in enumerate(order)})
        batch = torch.from_numpy(np.stack([rows[int(p)] for p in positions])).float()
        return batch.pin_memory() if self.pin else batch

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

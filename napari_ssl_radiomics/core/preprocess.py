"""Preparation of a cohort: resample, crop and rescale every case into the on-disk cache.

One SimpleITK ``Resample`` per channel does resampling and cropping at once: the output
grid *is* the crop cube (``PrepareConfig.size`` voxels along each axis, isotropic
spacing, the image's own direction so that the crop keeps the scan's orientation), and
voxels of the cube outside the scanned volume take the background value. Whole volumes
are never resampled, so a 512² CT costs what its crop costs.

Choices the paper leaves open, made here:

* **Background** (padding) is the channel's minimum intensity before rescaling, not a low
  percentile: padding then means "nothing measured" and maps to 0 in both intensity
  modes, instead of taking a value that also occurs inside the body.
* **Crop centre** (``crop='centroid'``) is the mask's centroid in physical space; the
  cube's centre voxel (index ``(S-1)/2``) lies exactly on it.
* **Bounding-box crop** (``crop='bbox'``): the box around the
  ROI plus ``margin`` mm on each side, widened to a cube around the box's centre along
  its longest side, then sampled with ``S`` voxels per edge. Widening to a cube keeps
  the spacing isotropic (``side / S`` mm, written to the metadata) so that shapes are not
  distorted; ``spacing`` is not used in this mode.
* **The network's box from a second mask** (a ``BoxMask`` column): the paper's lung setting
  took a fixed 224³ box around the whole lung, resized it to 112³ for the network, and used
  the tumour mask only for the radiomics. With ``BoxMask`` = the lung and ``crop='bbox'``
  (``size=112``, ``margin`` as wanted), the crop is the lung's box widened to a cube and
  resized to ``size``³; ``Mask`` stays the tumour, for the radiomics and for the ROI
  statistics and the crop's mask here. Without ``BoxMask``, ``bbox`` boxes the tumour
  itself, which is *not* the paper's lung setting.
* **Locking**: a cache is used by one ``prepare`` at a time (:mod:`.lock`); a second one
  into the same folder stops at once, naming the process that holds it. A full disk or a
  read-only cache stops the run with one line (:class:`.utils.OutputError`) instead of
  skipping every case.
* **Percentiles** (``intensity='percentile'``) are taken over the whole source channel
  (every k-th voxel beyond 2 million voxels, which changes them by well under one grey
  level), so that a case's scaling does not depend on where its crop falls.
* **Interpolation**: linear or cubic B-spline for images, nearest neighbour for masks, no
  anti-aliasing smoothing before downsampling (as pyradiomics' own resampling).

A second :func:`prepare` into the same folder redoes only cases whose source files
(SHA-256, looked up by path, size and modification time in ``checksums.json``) or
settings changed; the others report ``cached``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ..config import ClusterConfig, PrepareConfig, to_dict
from .cache import CASE_COLUMNS, CASES_CSV, CROPS, PREPARE_JSON, crop_paths, write_crop
from .cohort import Case, CaseError, Cohort, default_mask_label, load_cohort, read_box, read_case
from .events import CaseEvent
from .lock import folder_lock
from .parallel import run_cases
from .utils import (
    OutputError,
    check_output_folder,
    config_hash,
    cpu_count,
    describe_os_error,
    provenance,
    sha256,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)

PREPARE_VERSION = 1  # bump when the preparation's output changes for the same settings
CHECKSUMS_JSON = "checksums.json"
PERCENTILE_VOXELS = 2_000_000
INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}


@dataclass
class PrepareEvent(CaseEvent):
    """Progress of :func:`prepare`: one event per case; ``status`` is "ok", "cached" or "skipped"."""


@dataclass
class Grid:
    """An output grid: ``size``³ voxels, physical ``origin`` (mm) of voxel 0, spacing (mm)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    size: int

    def reference(self) -> sitk.Image:
        ref = sitk.Image([self.size] * 3, sitk.sitkUInt8)
        ref.SetOrigin(self.origin)
        ref.SetSpacing(self.spacing)
        ref.SetDirection(self.direction)
        return ref


# --- one case ---------------------------------------------------------------------------


def settings_of(cfg: PrepareConfig) -> dict:
    """The settings that change a prepared crop (``jobs`` does not)."""
    data = to_dict(cfg)
    data.pop("jobs", None)
    return data


def roi_geometry(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (mm, physical x, y, z) and bounding box of a binary mask.

    Returns
    -------
    centroid : (3,) physical point
    low, high : (3,) the box's edges along the image's axes, mm from the image's origin
        (voxel edges, i.e. index - 0.5 and index + size - 0.5 times the spacing)
    """
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    box = np.array(stats.GetBoundingBox(1), dtype=float)
    spacing = np.array(mask.GetSpacing())
    low = (box[:3] - 0.5) * spacing
    high = (box[:3] + box[3:] - 0.5) * spacing
    return np.array(stats.GetCentroid(1)), low, high


def crop_grid(image: sitk.Image, mask: sitk.Image, cfg: PrepareConfig) -> Grid:
    """The crop cube for a case (see the module docstring for both crop modes)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    size = int(cfg.size)
    centroid, low, high = roi_geometry(mask)
    if cfg.crop == "centroid":
        step = float(cfg.spacing)
        centre = centroid
    else:
        side = float(np.max(high - low)) + 2 * float(cfg.margin)
        step = side / size
        centre = np.array(image.GetOrigin()) + direction @ ((low + high) / 2)
    origin = centre - direction @ np.full(3, step * (size - 1) / 2)
    return Grid(tuple(origin), (step, step, step), tuple(direction.ravel()), size)


def intensity_range(channel: sitk.Image, cfg: PrepareConfig) -> tuple[float, float]:
    """The (low, high) intensities mapped to 0 and 255."""
    if cfg.intensity == "window":
        return float(cfg.window[0]), float(cfg.window[1])
    values = sitk.GetArrayViewFromImage(channel).ravel()
    stride = max(1, values.size // PERCENTILE_VOXELS)
    low, high = np.percentile(values[::stride], cfg.percentiles)
    return float(low), float(high)


def rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 255], clipping outside."""
    out = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(out, 0.0, 255.0, out=out)


def resample_onto(image: sitk.Image, grid: Grid, interpolator: int, default: float, pixel: int) -> sitk.Image:
    """Resample ``image`` onto ``grid`` (identity transform) with ``default`` outside."""
    return sitk.Resample(image, grid.reference(), sitk.Transform(), interpolator, float(default), pixel)


def prepare_case(
    case: Case, cfg: PrepareConfig, checksums: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read, check, crop, resample and rescale one case.

    Parameters
    ----------
    checksums : SHA-256 per source (``Case.sources()`` names); computed when not given

    Returns
    -------
    image : (C, S, S, S) float32 in [0, 255], numpy order (z, y, x)
    mask : (S, S, S) uint8 in {0, 1}
    meta : source paths and checksums, source and crop geometry (mm), background and
        intensity range per channel, ROI volumes (mm³) and the share of the ROI inside
        the crop, ``note`` (a warning, or ''), settings and their hash

    Raises
    ------
    CaseError
        For every problem of the input (see :func:`~.cohort.read_case`) and for a
        constant image channel.
    """
    channels, roi = read_case(case, cfg)
    box = read_box(case, channels[0], cfg)  # the network's crop region, when not the ROI
    grid = crop_grid(channels[0], roi if box is None else box, cfg)
    crops, backgrounds, ranges = [], [], []
    for name, channel in zip(case.channels, channels):
        background = float(sitk.GetArrayViewFromImage(channel).min())
        low, high = intensity_range(channel, cfg)
        if not high > low:
            raise CaseError(
                case.id,
                f"{name} has no intensity range to rescale ({low:g} to {high:g}); "
                "check the file, or use --intensity window with a window",
            )
        out = resample_onto(channel, grid, INTERPOLATORS[cfg.interpolator], background, sitk.sitkFloat32)
        crops.append(rescale(sitk.GetArrayViewFromImage(out), low, high))
        backgrounds.append(background)
        ranges.append([low, high])
    mask = sitk.GetArrayFromImage(resample_onto(roi, grid, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    meta = _meta(case, cfg, channels[0], roi, grid, backgrounds, ranges, mask, checksums)
    meta["note"] = clipped_note(meta, box=case.box_mask.name if case.box_mask is not None else "", crop=cfg.crop)
    return np.stack(crops).astype(np.float32), mask.astype(np.uint8), meta


def _meta(case, cfg, image, roi, grid, backgrounds, ranges, mask, checksums) -> dict:
    checksums = checksums or {name: sha256(path) for name, path in case.sources().items()}
    centroid, low, high = roi_geometry(roi)
    voxel = float(np.prod(image.GetSpacing()))
    source_volume = float(np.count_nonzero(sitk.GetArrayViewFromImage(roi))) * voxel
    crop_volume = float(np.count_nonzero(mask)) * float(np.prod(grid.spacing))
    return {
        "id": case.id,
        "sources": {name: {"path": str(path), "sha256": checksums[name]} for name, path in case.sources().items()},
        "channels": case.channels,
        "mask_label": _label_meta(roi),
        "source_size": list(image.GetSize()),
        "source_spacing": list(image.GetSpacing()),
        "source_origin": list(image.GetOrigin()),
        "source_direction": list(image.GetDirection()),
        "size": grid.size,
        "spacing": list(grid.spacing),
        "origin": list(grid.origin),
        "direction": list(grid.direction),
        "centroid": centroid.tolist(),
        "bbox_mm": [low.tolist(), high.tolist()],
        "background": backgrounds,
        "intensity_range": ranges,
        "roi_volume_mm3": source_volume,
        "crop_roi_volume_mm3": crop_volume,
        "roi_inside_fraction": roi_inside(roi, grid),
        "settings": settings_of(cfg),
        "settings_hash": config_hash(settings_of(cfg)),
        "version": PREPARE_VERSION,
    }


def _label_meta(roi: sitk.Image) -> int | str | None:
    """The ROI's label for the metadata: an int for one label, else '1+2+4' or 'all'."""
    if not roi.HasMetaDataKey("roi_label"):
        return None
    text = roi.GetMetaData("roi_label")
    return int(text) if text.lstrip("-").isdigit() else text


def roi_inside(roi: sitk.Image, grid: Grid) -> float:
    """Fraction of the ROI's source voxels whose centres lie inside the crop cube."""
    zyx = np.argwhere(sitk.GetArrayViewFromImage(roi) > 0)
    frame = np.array(roi.GetDirection()).reshape(3, 3) * np.array(roi.GetSpacing())
    points = np.array(roi.GetOrigin()) + zyx[:, ::-1] @ frame.T
    out_frame = np.array(grid.direction).reshape(3, 3) * np.array(grid.spacing)
    cont = np.linalg.solve(out_frame, (points - np.array(grid.origin)).T)
    inside = np.all((cont >= -0.5) & (cont <= grid.size - 0.5), axis=0)
    return float(inside.mean()) if inside.size else 0.0


def clipped_note(meta: dict, box: str = "", crop: str = "centroid") -> str:
    """A warning when much of the ROI lies outside the crop, or resampling changed its
    volume a lot (a small or thin ROI on a coarse grid); '' otherwise.

    ``box`` names the case's BoxMask file ('' without one): the crop is then the BoxMask's
    in both ``crop`` modes, so an ROI outside it means the BoxMask misses the ROI, which no
    crop setting mends.
    """
    notes = []
    inside = meta["roi_inside_fraction"]
    if inside < 0.9 and box:
        notes.append(
            f"only {inside:.0%} of the ROI lies inside the crop that BoxMask {box} sets: the BoxMask misses the ROI; "
            "check that this BoxMask belongs to this case and covers its ROI"
        )
    elif inside < 0.9:
        fix = "a larger --margin" if crop == "bbox" else "use --crop bbox, a larger --size or a coarser --spacing"
        notes.append(f"only {inside:.0%} of the ROI lies inside the crop; {fix}")
    change = meta["crop_roi_volume_mm3"] / max(meta["roi_volume_mm3"], 1e-9) - 1
    if meta["roi_inside_fraction"] >= 0.9 and abs(change) > 0.25:
        notes.append(
            f"resampling changed the ROI's volume by {change:+.0%} (a small or thin ROI for a "
            f"{meta['spacing'][0]:.3g} mm grid); consider a finer --spacing"
        )
    return "; ".join(notes)


# --- the cache ----------------------------------------------------------------------------


def _stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file, or summed/latest over a DICOM folder."""
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def source_checksums(case: Case, known: dict[str, dict]) -> tuple[dict[str, str], dict[str, dict]]:
    """SHA-256 of every source of a case, reusing ``known`` when size and mtime match.

    Returns the checksums by source name and the ``checksums.json`` entries (by resolved
    path) for these files. Raises CaseError for a missing file.
    """
    sums, entries = {}, {}
    for name, path in case.sources().items():
        if not path.exists():
            raise CaseError(
                case.id, f"{name} file {path} not found; fix the path (relative paths are relative to the manifest)"
            )
        key = str(path.resolve())
        size, mtime = _stat(path)
        entry = known.get(key)
        if not entry or entry.get("size") != size or entry.get("mtime_ns") != mtime:
            entry = {"size": size, "mtime_ns": mtime, "sha256": sha256(path)}
        sums[name] = entry["sha256"]
        entries[key] = entry
    return sums, entries


def case_key(case: Case, cfg: PrepareConfig, checksums: dict[str, str]) -> str:
    """What a prepared crop depends on: source checksums, ROI label, settings, version."""
    return config_hash(
        {
            "sources": checksums,
            "channels": case.channels,
            "mask_label": case.mask_label,
            "settings": settings_of(cfg),
            "version": PREPARE_VERSION,
        }
    )


def _cached(out: Path, case: Case, key: str) -> dict | None:
    npz, meta_path = crop_paths(out, case.id)
    if not (npz.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("key") == key else None


def process_case(case: Case, cfg: PrepareConfig, out: str | Path, known: dict[str, dict]) -> tuple[str, str, dict]:
    """Prepare one case into the cache unless it is there already.

    Returns (status, reason, checksums.json entries); status is ok, cached or skipped.
    A broken case never raises: its reason says what is wrong and what to do.
    """
    out = Path(out)
    entries: dict[str, dict] = {}
    try:
        sums, entries = source_checksums(case, known)
        key = case_key(case, cfg, sums)
        meta = _cached(out, case, key)
        if meta is not None:
            return "cached", meta.get("note", ""), entries
        image, mask, meta = prepare_case(case, cfg, sums)
        meta["key"] = key
        try:
            write_crop(out, case.id, image, mask, meta)
        except OSError as exc:  # the cache's fault (full disk, read-only), not the case's: stop
            raise OutputError(f"cache {out}: {describe_os_error(exc)}") from None
        return "ok", meta["note"], entries
    except OutputError:
        raise
    except CaseError as exc:
        _drop_crop(out, case.id)
        return "skipped", exc.message, entries
    except Exception as exc:  # noqa: BLE001 - one broken case must not sink the cohort
        log.debug("case %s failed", case.id, exc_info=True)
        _drop_crop(out, case.id)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return "skipped", f"unexpected error ({type(exc).__name__}: {first}); check the files of this case", entries


def _known_cached(case: Case, cfg: PrepareConfig, out: Path, known: dict) -> tuple[str, str, dict] | None:
    """("cached", note, entries) when every source's checksum is known and the crop is current."""
    try:
        entries = {}
        for path in case.sources().values():
            key = str(path.resolve())
            size, mtime = _stat(path)
            if key not in known or known[key].get("size") != size or known[key].get("mtime_ns") != mtime:
                return None
            entries[key] = known[key]
    except OSError:
        return None
    meta = _cached(
        out, case, case_key(case, cfg, {n: known[str(p.resolve())]["sha256"] for n, p in case.sources().items()})
    )
    return None if meta is None else ("cached", meta.get("note", ""), entries)


def _drop_crop(out: Path, case_id: str) -> None:
    """Remove a stale crop of a case that is now skipped, so that no one uses it."""
    for path in crop_paths(out, case_id):
        path.unlink(missing_ok=True)


def _worker_init() -> None:
    # One SimpleITK thread per worker process: the pool already fills the cores.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _run(
    cases: list[Case], cfg: PrepareConfig, out: Path, known: dict, cluster: ClusterConfig | None = None
) -> Iterator[tuple[Case, str, str, dict]]:
    scheduler = cluster.scheduler if cluster else ""
    jobs = cfg.jobs if cfg.jobs > 0 else cpu_count()
    if jobs > 1 or scheduler:  # answer cached cases here, so that work goes out only for real work
        todo = []
        for case in cases:
            hit = _known_cached(case, cfg, out, known)
            if hit is None:
                todo.append(case)
            else:
                yield (case, *hit)
        cases = todo
    if scheduler:  # the workers may run elsewhere: give them absolute paths
        cases = [_absolute(case) for case in cases]
        out = out.resolve()
    items = []
    for case in cases:
        mine = {str(p.resolve()): known[str(p.resolve())] for p in case.sources().values() if str(p.resolve()) in known}
        items.append((case, cfg, str(out), mine))
    shared = [out, *cases[0].sources().values()] if cases else []
    # spawn, not fork: the caller may be napari (Qt threads) or hold torch's thread pools.
    outcomes = run_cases(
        process_case,
        items,
        jobs=jobs,
        scheduler=scheduler,
        init=_worker_init,
        mp_context=multiprocessing.get_context("spawn"),
        shared_paths=shared,
        label="prepare",
        timeout_s=cluster.timeout if cluster else 30.0,
    )
    for outcome in outcomes:
        case = cases[outcome.index]
        if outcome.error is None:
            yield (case, *outcome.value)
        elif isinstance(outcome.error, OutputError):  # the cache itself failed: stop the run
            raise outcome.error
        else:  # a worker died (e.g. out of memory) or was lost too often on a cluster
            where = "--jobs 1" if not scheduler else "workers with more memory"
            exc = outcome.error
            yield (case, "skipped", f"the worker preparing it failed ({type(exc).__name__}: {exc}); try {where}", {})


def _absolute(case: Case) -> Case:
    """The case with absolute source paths (a Dask worker's working folder is not ours)."""
    return dataclasses.replace(
        case,
        image=Path(case.image).resolve(),
        mask=Path(case.mask).resolve(),
        extra_images={m: Path(p).resolve() for m, p in case.extra_images.items()},
    )


def _load_checksums(out: Path) -> dict:
    path = out / CHECKSUMS_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def prepare(
    cohort: Cohort | str | Path, cfg: PrepareConfig, out: str | Path, cluster: ClusterConfig | None = None
) -> Generator[PrepareEvent, None, pd.DataFrame]:
    """Prepare every case of a cohort into the cache folder ``out``, one event per case.

    Writes ``crops/<ID>.npz|json`` per case as it goes, and at the end ``cases.csv``
    (every case: ok or skipped, and why), ``prepare.json`` (settings, versions, counts)
    and ``checksums.json``. ``cases.csv`` is removed at the start, so a run stopped
    early (the generator closed) leaves no table that mixes old and new crops.

    ``cluster.scheduler`` (a Dask address) sends each case to a Dask cluster that shares
    this filesystem instead of the local pool of ``cfg.jobs`` processes; the results are
    the same (see :mod:`.parallel`).

    Returns
    -------
    The ``cases.csv`` table (columns ID, Label, Group, status, reason, file).
    """
    cohort = cohort if isinstance(cohort, Cohort) else load_cohort(cohort)
    if cfg.intensity == "window" and not cfg.window[1] > cfg.window[0]:
        raise ValueError(f"PrepareConfig.window = {tuple(cfg.window)}: the high value must exceed the low one")
    if cfg.size < 2 or cfg.spacing <= 0:
        raise ValueError(f"PrepareConfig: size {cfg.size} and spacing {cfg.spacing} must be positive (size >= 2)")
    default_mask_label(cfg)  # a bad --mask-label fails here, not once per case
    out = check_output_folder(out, "cache")
    with folder_lock(out, clean=("", CROPS)):
        return (yield from _prepare_locked(cohort, cfg, out, cluster))


def _prepare_locked(
    cohort: Cohort, cfg: PrepareConfig, out: Path, cluster: ClusterConfig | None
) -> Generator[PrepareEvent, None, pd.DataFrame]:
    (out / CROPS).mkdir(parents=True, exist_ok=True)
    (out / CASES_CSV).unlink(missing_ok=True)
    known = _load_checksums(out)
    total = len(cohort.cases) + len(cohort.problems)
    rows: dict[str, dict] = {}
    counts = {"ok": 0, "cached": 0, "skipped": 0}
    index = 0
    for where, message in cohort.problems:
        index += 1
        counts["skipped"] += 1
        yield PrepareEvent(index, total, where, "skipped", message)
    for case, status, reason, entries in _run(cohort.cases, cfg, out, known, cluster):
        index += 1
        counts[status] += 1
        known.update(entries)
        npz = crop_paths(out, case.id)[0]
        rows[case.id] = {
            "ID": case.id,
            "Label": case.label,
            "Group": case.group,
            "status": "skipped" if status == "skipped" else "ok",
            "reason": reason,
            "file": "" if status == "skipped" else npz.relative_to(out).as_posix(),
        }
        yield PrepareEvent(index, total, case.id, status, reason)
    table = pd.DataFrame(
        [rows[c.id] for c in cohort.cases]
        + [
            {"ID": w, "Label": "", "Group": "", "status": "skipped", "reason": m, "file": ""}
            for w, m in cohort.problems
        ],
        columns=CASE_COLUMNS,
    )
    write_json(out / CHECKSUMS_JSON, known)
    write_json(
        out / PREPARE_JSON,
        provenance(
            cfg,
            cohort=str(cohort.source),
            counts=counts,
            version=PREPARE_VERSION,
            settings_hash=config_hash(settings_of(cfg)),
        ),
    )
    write_csv(out / CASES_CSV, table)
    return table


def prepare_all(
    cohort: Cohort | str | Path, cfg: PrepareConfig, out: str | Path, cluster: ClusterConfig | None = None
) -> pd.DataFrame:
    """Run :func:`prepare` to the end and return the ``cases.csv`` table."""
    from .events import drive

    return drive(prepare(cohort, cfg, out, cluster))


def summary(table: pd.DataFrame, events: list[PrepareEvent]) -> str:
    """One line: N ok, N cached, N skipped."""
    cached = sum(e.status == "cached" for e in events)
    ok = int((table["status"] == "ok").sum())
    skipped = int((table["status"] == "skipped").sum())
    return f"{ok - cached} ok, {cached} cached, {skipped} skipped ({len(table)} cases)"

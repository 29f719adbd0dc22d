"""Traditional radiomics (f_trad of the paper, section 3) with pyradiomics.

By default the 107 default 3D features of pyradiomics (shape 14, first-order 18, GLCM 24,
GLRLM 16, GLSZM 16, GLDM 14, NGTDM 5) on the original image, with pyradiomics' own setting
names; a pyradiomics parameter YAML (``RadiomicsConfig.params``) is used as it is.

Choices the paper leaves open, made here:

- Cases run in separate processes (``RadiomicsConfig.jobs``). A single-threaded parent
  forks them (cheap, and a script without a ``__main__`` guard still works, as with
  pyradiomics' own command line); a parent that runs threads (napari's worker thread)
  uses a *forkserver* with pyradiomics preloaded, since forking a threaded process can
  deadlock.
- The image is cast to float32 *after* pyradiomics has loaded (and, when asked, resampled)
  it and before any feature is computed. numpy 2 overflows pyradiomics' bin arithmetic on
  int16 CT; casting only after loading keeps pyradiomics' own resampling of integer images
  (which rounds to the input type), so the values match pyradiomics' command line and its
  published baseline.
- Features are computed on the primary image only (``Case.image``); further channels of a
  multi-modal case are not used here (but are checked, as ``prepare`` checks them).
- Every case is read and checked by :func:`.cohort.read_case`, the validation ``prepare``
  and the widgets use, with the same ``PrepareConfig`` settings (``mask_label``,
  ``resample_mask``, ``tolerance``): a case ``prepare`` skips fails here with the same
  reason (a 2D image, a truncated NIfTI, NaN voxels, several mask labels and no
  MaskLabel...). pyradiomics then gets the image and the binary ROI that the MaskLabel
  (one value, a union such as ``1+2+4``, or ``all``) selects, as label 1. Without a
  MaskLabel, a ``label`` in the parameter file's ``setting`` is the default.
- Results are cached as one JSON per case, named by a hash of the image and mask
  checksums, the settings and the pyradiomics version; failures are not cached, so a re-run
  retries them.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..config import ClusterConfig, PrepareConfig, RadiomicsConfig
from .cohort import default_mask_label, missing_source
from .events import CaseEvent
from .parallel import run_cases
from .utils import config_hash, cpu_count, sha256, write_json

#: pyradiomics' default 3D feature classes (shape2D is off by default, as in pyradiomics).
DEFAULT_CLASSES = ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
CACHE_DIR = ".radiomics_cache"


@dataclass
class RadiomicsEvent(CaseEvent):
    """Progress of :func:`extract`: one event per finished case.

    ``status`` is ``ok`` (computed), ``cached`` (read from the cache) or ``failed``
    (``reason`` says why and what to do); ``elapsed_s`` is the case's wall time (s).
    """

    elapsed_s: float = 0.0


@dataclass
class _Job:
    """What a worker needs for one case (plain data, so it pickles)."""

    case_id: str
    image: str
    mask: str
    label: Any
    spec: dict
    cache_file: str | None
    checks: PrepareConfig | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


# --- settings ---------------------------------------------------------------------------


def load_spec(cfg: RadiomicsConfig) -> dict:
    """The extraction settings as one JSON-able dict.

    Returns
    -------
    dict
        ``{"params": <the YAML's mapping>}`` when ``cfg.params`` names a file, else
        ``{"settings": {"binWidth": cfg.bin_width}}`` (pyradiomics' defaults otherwise).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing or unreadable parameter file (the message names it).
    """
    if not cfg.params:
        width = float(cfg.bin_width)
        # An integral width stays an int, as in pyradiomics' own defaults (and its YAML files).
        return {"settings": {"binWidth": int(width) if width.is_integer() else width}}
    path = Path(cfg.params)
    if not path.is_file():
        raise FileNotFoundError(
            f"pyradiomics parameter file {path} not found; give an existing YAML or leave params empty"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a valid YAML file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a pyradiomics parameter file is a mapping with setting/imageType/featureClass")
    _make_extractor({"params": data})  # validate now (pykwalify), not once per case
    return {"params": data}


def settings_from_baseline(text: str) -> dict:
    """Settings of a pyradiomics baseline column (its ``diagnostics_Configuration_Settings``
    row, a Python dict literal)."""
    return dict(ast.literal_eval(text))


def _make_extractor(spec: dict):
    from radiomics import featureextractor

    if "params" in spec:
        try:
            return featureextractor.RadiomicsFeatureExtractor(dict(spec["params"]))
        except Exception as exc:  # pykwalify raises its own SchemaError
            raise ValueError(f"pyradiomics rejected the parameter file: {exc}") from None
    return featureextractor.RadiomicsFeatureExtractor(**spec.get("settings", {}))


def _float32_extractor(spec: dict):
    """A pyradiomics extractor whose loaded (and resampled) image is cast to float32."""
    import SimpleITK as sitk

    extractor = _make_extractor(spec)
    load = extractor.loadImage

    def load_float(image, mask, generalInfo=None, **kwargs):  # noqa: N803 - pyradiomics' name
        image, mask = load(image, mask, generalInfo, **kwargs)
        return sitk.Cast(image, sitk.sitkFloat32), mask

    extractor.loadImage = load_float
    return extractor


# --- one case (runs in a worker) ---------------------------------------------------------


def _quiet() -> None:
    import radiomics

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def _checks(spec: dict, checks: PrepareConfig | None) -> PrepareConfig:
    """The case checks; a parameter file's ``label`` is the ROI where no MaskLabel is given."""
    checks = checks or PrepareConfig()
    given = spec.get("params", {}).get("setting", {}) or spec.get("settings", {})
    if not getattr(checks, "mask_label", "") and "label" in (given or {}):
        checks = dataclasses.replace(checks, mask_label=str(given["label"]))
    return checks


def _run_case(job: _Job) -> tuple[str, str, dict, dict, float]:
    """Extract one case: (case_id, reason or '', features, diagnostics, seconds)."""
    from .cohort import Case, CaseError, read_case

    t0 = time.perf_counter()
    _quiet()
    try:
        case = Case(
            id=job.case_id,
            image=Path(job.image),
            mask=Path(job.mask),
            mask_label=job.label,
            extra_images={k: Path(v) for k, v in job.extra.items()},
        )
        # The shared validation; the image keeps its pixel type for pyradiomics' resampling.
        images, roi = read_case(case, _checks(job.spec, job.checks), raw=True)
        result = _float32_extractor(job.spec).execute(images[0], roi, label=1)
    except CaseError as exc:
        return job.case_id, exc.message, {}, {}, time.perf_counter() - t0
    except Exception as exc:  # one broken case never sinks the cohort
        return job.case_id, _reason(exc), {}, {}, time.perf_counter() - t0
    features, diagnostics = {}, {}
    for key, value in result.items():
        if key.startswith("diagnostics_"):
            diagnostics[key] = str(value)
        else:
            features[key] = _real(value)
    if job.cache_file:
        write_json(job.cache_file, {"ID": job.case_id, "features": features, "diagnostics": diagnostics})
    return job.case_id, "", features, diagnostics, time.perf_counter() - t0


def _real(value: Any) -> float:
    """A feature value as a float; pyradiomics gives a complex number where a tiny ROI makes
    a shape eigenvalue negative (e.g. Flatness of 8 voxels): that feature is undefined, NaN."""
    value = np.real_if_close(np.asarray(value))
    return float(value) if not np.iscomplexobj(value) else float("nan")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    hints = {
        "not present in mask": "check the ROI's label value (manifest MaskLabel column)",
        "Calculation of GLCM Failed": "the ROI is too small for texture features; check the mask or the resampling",
        "Image/Mask geometry mismatch": "the mask does not lie on the image's grid; resample the mask onto the image",
        "No labels found": "the mask is empty; check the mask file",
        "too small": "the ROI is too small for the settings (minimumROISize / minimumROIDimensions)",
    }
    for key, hint in hints.items():
        if key.lower() in text.lower():
            return f"{text} ({hint})"
    return text


def _init_worker() -> None:
    _quiet()


# --- the cohort --------------------------------------------------------------------------


def _cases(cohort: Any) -> tuple[list, list[tuple[str, str]]]:
    """The cohort's cases and the manifest rows it rejected (a Cohort, a path or a list of Case)."""
    if isinstance(cohort, (str, Path)):
        from .cohort import load_cohort

        cohort = load_cohort(cohort)
    return list(getattr(cohort, "cases", cohort)), list(getattr(cohort, "problems", []))


def _cache_key(case: Any, spec: dict, checks: PrepareConfig | None = None) -> str:
    from importlib import metadata

    try:
        version = metadata.version("pyradiomics-bhklab")
    except metadata.PackageNotFoundError:  # pragma: no cover - the upstream package
        version = metadata.version("pyradiomics")
    return config_hash(
        {
            "image": sha256(case.image),
            "mask": sha256(case.mask),
            "label": getattr(case, "mask_label", None),
            "extra": {k: sha256(p) for k, p in getattr(case, "extra_images", {}).items()},
            "checks": [getattr(checks, n, None) for n in ("mask_label", "resample_mask", "tolerance")],
            "spec": spec,
            "pyradiomics": version,
        }
    )


def _read_cache(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def extract(
    cohort: Any,
    cfg: RadiomicsConfig | None = None,
    cache_dir: str | Path | None = None,
    cluster: ClusterConfig | None = None,
    checks: PrepareConfig | None = None,
) -> Generator[RadiomicsEvent, None, tuple[pd.DataFrame, pd.DataFrame]]:
    """Extract pyradiomics features of every case, yielding one event per case.

    Parameters
    ----------
    cohort : Cohort, manifest path, or list of Case
        Cases with ``id``, ``image``, ``mask`` and ``mask_label``.
    cfg : RadiomicsConfig
        ``params`` (pyradiomics YAML), ``bin_width`` (when no YAML), ``jobs`` (0: all cores).
    cache_dir : folder for per-case JSON results; None: no cache.
    checks : the case checks shared with ``prepare`` (``mask_label``, ``resample_mask``,
        ``tolerance``); None: their defaults
    cluster : ``cluster.scheduler`` (a Dask address) runs each case as a task on a Dask
        cluster that shares this filesystem, instead of the local pool (see :mod:`.parallel`).

    Returns (as the generator's value)
    ----------------------------------
    features : DataFrame
        ``ID`` then ``original_<class>_<feature>`` (float), cases in cohort order, failed
        cases left out. ``features.attrs["diagnostics"]`` holds pyradiomics' diagnostics
        (ID + ``diagnostics_*`` as text).
    failures : DataFrame
        ``ID``, ``reason`` for each case that failed.
    """
    cfg = cfg or RadiomicsConfig()
    spec = load_spec(cfg)
    checks = checks or PrepareConfig()
    default_mask_label(checks)  # a bad --mask-label fails here, not once per case
    cases, problems = _cases(cohort)
    jobs_n = cfg.jobs if cfg.jobs > 0 else cpu_count()
    cache = Path(cache_dir) if cache_dir else None
    results: dict[str, tuple[dict, dict]] = {}
    failures: list[tuple[str, str]] = [(str(where), str(msg)) for where, msg in problems]
    todo: list[_Job] = []
    done = 0
    total = len(cases)
    for case in cases:
        case_id = str(case.id)
        try:
            key = _cache_key(case, spec, checks)
        except OSError as exc:
            failures.append((case_id, missing_source(case) or f"cannot read {exc.filename}: {exc.strerror}"))
            done += 1
            yield RadiomicsEvent(done, total, case_id, "failed", failures[-1][1])
            continue
        cache_file = cache / f"{key}.json" if cache else None
        hit = _read_cache(cache_file) if cache_file and cache_file.exists() else None
        if hit is not None:
            results[case_id] = (hit["features"], hit.get("diagnostics", {}))
            done += 1
            yield RadiomicsEvent(done, total, case_id, "cached")
            continue
        label = getattr(case, "mask_label", None)
        extra = {k: str(p) for k, p in getattr(case, "extra_images", {}).items()}
        cached_as = str(cache_file) if cache_file else None
        todo.append(_Job(case_id, str(case.image), str(case.mask), label, spec, cached_as, checks, extra))
    for case_id, reason, feats, diags, secs in _run_jobs(todo, jobs_n, cluster):
        done += 1
        if reason:
            failures.append((case_id, reason))
            yield RadiomicsEvent(done, total, case_id, "failed", reason, secs)
        else:
            results[case_id] = (feats, diags)
            yield RadiomicsEvent(done, total, case_id, "ok", "", secs)
    return _tables(cases, results, failures)


def _context() -> mp.context.BaseContext:
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return mp.get_context("spawn")


def _run_jobs(
    todo: list[_Job], jobs: int, cluster: ClusterConfig | None = None
) -> Iterable[tuple[str, str, dict, dict, float]]:
    scheduler = cluster.scheduler if cluster else ""
    shared: list[str] = []
    if scheduler and todo:  # a Dask worker's working folder is not ours: absolute paths only
        todo = [_absolute(job) for job in todo]
        shared = [todo[0].image, todo[0].mask]
        if todo[0].cache_file:  # the workers write the per-case results there
            Path(todo[0].cache_file).parent.mkdir(parents=True, exist_ok=True)
            shared.append(str(Path(todo[0].cache_file).parent))
    outcomes = run_cases(
        _run_case,
        [(job,) for job in todo],
        jobs=min(jobs, len(todo)),
        scheduler=scheduler,
        init=_init_worker,
        mp_context=_context() if not scheduler and jobs > 1 and len(todo) > 1 else None,
        shared_paths=shared,
        label="radiomics",
        timeout_s=cluster.timeout if cluster else 30.0,
    )
    for outcome in outcomes:
        if outcome.error is None:
            yield outcome.value
        else:  # a worker that died (memory, signal), or was lost too often on a cluster
            job = todo[outcome.index]
            yield job.case_id, f"the worker process failed: {_reason(outcome.error)}", {}, {}, 0.0


def _absolute(job: _Job) -> _Job:
    cache_file = str(Path(job.cache_file).resolve()) if job.cache_file else None
    return dataclasses.replace(
        job, image=str(Path(job.image).resolve()), mask=str(Path(job.mask).resolve()), cache_file=cache_file
    )


def _tables(cases: list, results: dict, failures: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = [str(c.id) for c in cases if str(c.id) in results]
    rows = [{"ID": cid, **results[cid][0]} for cid in order]
    features = pd.DataFrame(rows)
    if features.empty:
        features = pd.DataFrame({"ID": pd.Series(dtype=str)})
    diagnostics = pd.DataFrame([{"ID": cid, **results[cid][1]} for cid in order])
    features.attrs["diagnostics"] = diagnostics
    fails = pd.DataFrame(failures, columns=["ID", "reason"])
    return features, fails


def extract_all(
    cohort: Any,
    cfg: RadiomicsConfig | None = None,
    cache_dir: str | Path | None = None,
    cluster: ClusterConfig | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run :func:`extract` to the end; return ``(features, failures)``."""
    from .events import drive

    return drive(extract(cohort, cfg, cache_dir, cluster))

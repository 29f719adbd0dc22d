"""A cohort: which image and mask files make up each case, and reading them safely.

A cohort comes from a manifest CSV in pyradiomics' batch format or from a folder of
image/mask pairs (:func:`load_cohort`). :func:`read_case` reads one case through
SimpleITK (NIfTI, NRRD, MHA/MHD or a DICOM series folder), checks it and returns its
image channels and a binary ROI mask; anything wrong raises :class:`CaseError`, whose
message names the case and what to do, so that a caller can skip that case and go on.

Manifest columns
----------------
``Image``, ``Mask`` (required); ``ID``, ``Label`` (class for evaluation), ``Group``
(patient or centre, for grouped splits), ``MaskLabel`` (the ROI's value in the mask) and
``Image_<modality>`` (further channels, resampled onto ``Image``) are optional. Relative
paths are relative to the CSV's folder. Without an ``ID`` column a case is named after
its image file (or ``row<N>`` when those names repeat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ..config import PrepareConfig
from .cache import safe_name

REQUIRED = ("Image", "Mask")
EXTRA_PREFIX = "Image_"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
# Folder pairs: <id>_image.<ext> with <id>_mask.<ext>; pyradiomics' own examples use
# <id>_label.<ext> and 3D Slicer <id>-label.<ext>, accepted too.
MASK_TAGS = ("_mask", "_label", "-label", "_seg")
IMAGE_TAG = "_image"


class CaseError(ValueError):
    """A case that cannot be used; ``str()`` names the case, the problem and the fix."""

    def __init__(self, case_id: str, message: str):
        super().__init__(f"case {case_id}: {message}")
        self.case_id = case_id
        self.message = message


@dataclass
class Case:
    """One case of a cohort.

    Attributes
    ----------
    id : unique name of the case
    image : primary image file (or DICOM series folder)
    mask : ROI mask file, same geometry as ``image``
    label : class for evaluation ('' when unknown)
    group : patient or centre for grouped splits ('' when unknown)
    mask_label : the ROI's value in the mask; None: the mask's only nonzero value
    extra_images : modality -> file of further channels, resampled onto ``image``
    """

    id: str
    image: Path
    mask: Path
    label: str = ""
    group: str = ""
    mask_label: int | None = None
    extra_images: dict[str, Path] = field(default_factory=dict)

    @property
    def channels(self) -> list[str]:
        """Names of the image channels, primary first."""
        return ["Image"] + [f"{EXTRA_PREFIX}{m}" for m in self.extra_images]

    def sources(self) -> dict[str, Path]:
        """Every file this case reads: channel name -> path, and ``Mask``."""
        out = {"Image": self.image}
        out.update({f"{EXTRA_PREFIX}{m}": p for m, p in self.extra_images.items()})
        out["Mask"] = self.mask
        return out


@dataclass
class Cohort:
    """The cases of a manifest and the rows rejected while reading it.

    Attributes
    ----------
    cases : usable cases, in manifest order
    problems : (case ID or "row N", message) for each rejected row
    source : the manifest CSV or folder
    """

    cases: list[Case]
    problems: list[tuple[str, str]] = field(default_factory=list)
    source: Path = Path(".")

    def __len__(self) -> int:
        return len(self.cases)


# --- reading a manifest -------------------------------------------------------------------


def load_cohort(path: str | Path) -> Cohort:
    """Read a manifest CSV or a folder of image/mask pairs.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When a manifest lacks ``Image`` or ``Mask`` (the columns found are named), or a
        folder holds no pair.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cohort {path} does not exist; give a manifest CSV or a folder of image/mask pairs")
    if path.is_dir():
        manifest = path / "manifest.csv"
        return read_manifest(manifest) if manifest.is_file() else scan_folder(path)
    return read_manifest(path)


def read_manifest(csv: str | Path) -> Cohort:
    """Read a manifest CSV (see the module docstring for its columns)."""
    csv = Path(csv)
    try:  # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"manifest {csv} is not a readable CSV ({exc}); save it as comma-separated UTF-8 text"
        ) from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(
            f"manifest {csv} has no column(s) {missing}; found {list(table.columns)}. "
            "A manifest needs 'Image' and 'Mask' (pyradiomics' batch format), optionally ID, Label, Group, MaskLabel"
        )
    base = csv.parent
    extras = [c for c in table.columns if c.startswith(EXTRA_PREFIX) and len(c) > len(EXTRA_PREFIX)]
    ids = _default_ids(table) if "ID" not in table.columns else None
    cases, problems = [], []
    seen: dict[str, int] = {}
    for row, rec in enumerate(table.to_dict("records"), start=1):
        case_id = rec["ID"].strip() if ids is None else ids[row - 1]
        where = case_id or f"row {row}"
        try:
            case = _case_from_row(rec, case_id, base, extras, row)
        except ValueError as exc:
            problems.append((where, str(exc)))
            continue
        key = safe_name(case.id)
        if key in seen:
            problems.append(
                (
                    case.id,
                    f"duplicate ID (also on row {seen[key]}, or the same file name after "
                    f"replacing unusual characters); skipped: give every case a unique ID",
                )
            )
            continue
        seen[key] = row
        cases.append(case)
    return Cohort(cases=cases, problems=problems, source=csv)


def _default_ids(table: pd.DataFrame) -> list[str]:
    stems = [_stem(Path(p)) if p else "" for p in table["Image"]]
    if len(set(stems)) == len(stems) and all(stems):
        return stems
    return [f"row{i}" for i in range(1, len(table) + 1)]


def _case_from_row(rec: dict, case_id: str, base: Path, extras: list[str], row: int) -> Case:
    if not case_id:
        raise ValueError(f"row {row} has an empty ID; give every case an ID")
    for col in REQUIRED:
        if not rec[col].strip():
            raise ValueError(f"row {row} (case {case_id}) has an empty {col}; give the {col.lower()} file")
    mask_label = None
    text = rec.get("MaskLabel", "").strip()
    if text:
        try:
            mask_label = int(float(text))
        except ValueError:
            raise ValueError(
                f"case {case_id}: MaskLabel {text!r} is not an integer; give the ROI's value in the mask"
            ) from None
    extra = {c[len(EXTRA_PREFIX) :]: _resolve(rec[c], base) for c in extras if rec[c].strip()}
    return Case(
        id=case_id,
        image=_resolve(rec["Image"], base),
        mask=_resolve(rec["Mask"], base),
        label=rec.get("Label", "").strip(),
        group=rec.get("Group", "").strip(),
        mask_label=mask_label,
        extra_images=extra,
    )


def _resolve(text: str, base: Path) -> Path:
    p = Path(text.strip()).expanduser()
    return p if p.is_absolute() else base / p


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- a folder of pairs ----------------------------------------------------------------------


def scan_folder(folder: str | Path) -> Cohort:
    """Pair images and masks in a folder.

    Accepted layouts: ``<id>_image.<ext>`` with ``<id>_mask.<ext>`` (or ``_label``,
    ``-label``, ``_seg``; then ``<id>.<ext>`` is accepted as the image too), or
    ``images/<name>`` with ``masks/<name>``. DICOM series folders count as files.
    """
    folder = Path(folder)
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        images = {_stem(p): p for p in _volumes(folder / "images")}
        masks = {_stem(p): p for p in _volumes(folder / "masks")}
    else:
        images, masks = {}, {}
        for p in _volumes(folder):
            stem = _stem(p)
            tag = next((t for t in MASK_TAGS if stem.endswith(t)), None)
            if tag:
                masks[stem[: -len(tag)]] = p
            else:
                images[stem[: -len(IMAGE_TAG)] if stem.endswith(IMAGE_TAG) else stem] = p
    cases, problems = [], []
    for case_id in sorted(set(images) | set(masks)):
        if case_id not in masks:
            problems.append((case_id, f"image {images[case_id].name} has no mask; name it {case_id}_mask.<ext>"))
        elif case_id not in images:
            problems.append((case_id, f"mask {masks[case_id].name} has no image; name it {case_id}_image.<ext>"))
        else:
            cases.append(Case(id=case_id, image=images[case_id], mask=masks[case_id]))
    if not cases and not problems:
        raise ValueError(
            f"{folder} holds no image/mask pairs; name them <id>_image.nii.gz and <id>_mask.nii.gz "
            "(or put images/ and masks/ folders with the same names), or give a manifest CSV"
        )
    return Cohort(cases=cases, problems=problems, source=folder)


def _volumes(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.lower().endswith(".dcm"):
            out.append(p)
        elif p.is_dir() and p.name not in ("images", "masks") and _is_dicom_folder(p):
            out.append(p)
    return out


def _is_dicom_folder(path: Path) -> bool:
    """A folder whose first file carries the DICOM preamble ("DICM" at byte 128)."""
    first = next((p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")), None)
    if first is None:
        return False
    with open(first, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def _series_ids(path: Path) -> tuple[str, ...]:
    # GDCM warns on stderr for a folder without DICOM; the caller reports that itself.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


# --- reading and checking one case ------------------------------------------------------


def read_image(path: Path, case_id: str, what: str) -> sitk.Image:
    """Read a file or a DICOM series folder; raise CaseError naming the file when it fails."""
    if not path.exists():
        raise CaseError(
            case_id, f"{what} file {path} not found; fix the path (relative paths are relative to the manifest)"
        )
    try:
        if path.is_dir():
            series = _series_ids(path)
            if not series:
                raise CaseError(
                    case_id, f"{what} folder {path} holds no DICOM series; give a DICOM series folder or an image file"
                )
            if len(series) > 1:
                raise CaseError(
                    case_id, f"{what} folder {path} holds {len(series)} DICOM series; put each series in its own folder"
                )
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CaseError(
            case_id,
            f"cannot read {what} {path} ({_itk_reason(exc)}); check that it is a complete NIfTI, NRRD, MHA/MHD file or DICOM series",
        ) from None


def _itk_reason(exc: Exception) -> str:
    """The readable part of a SimpleITK exception (its 'sitk::ERROR:' line when there is one)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    error = next((ln for ln in lines if "ERROR:" in ln), lines[-1] if lines else "unknown error")
    return error.split("ERROR:", 1)[-1].strip()[:200]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _check_volume(img: sitk.Image, case_id: str, what: str, path: Path) -> None:
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise CaseError(
            case_id,
            f"{what} {path.name} has {img.GetNumberOfComponentsPerPixel()} values per voxel; "
            "give one scalar 3D file per channel (Image_<modality> columns)",
        )
    dim, size = img.GetDimension(), img.GetSize()
    if dim != 3 or min(size) < 2:
        kind = "4D" if dim > 3 else "2D"
        fix = (
            "split it into 3D files, one per channel or time point (Image_<modality> columns)"
            if dim > 3
            else "this tool needs 3D volumes"
        )
        raise CaseError(case_id, f"{what} {path.name} is {kind} (size {size}); {fix}")


def _same_geometry(a: sitk.Image, b: sitk.Image, tol: float) -> list[str]:
    """What differs between two grids: size, spacing, origin (relative to spacing), direction."""
    diffs = []
    if a.GetSize() != b.GetSize():
        diffs.append(f"size {a.GetSize()} vs {b.GetSize()}")
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if np.any(np.abs(sa - sb) > tol * sa):
        diffs.append(f"spacing {_fmt(sa)} vs {_fmt(sb)} mm")
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if np.any(np.abs(oa - ob) > tol * sa):
        diffs.append(f"origin {_fmt(oa)} vs {_fmt(ob)} mm")
    if np.any(np.abs(np.array(a.GetDirection()) - np.array(b.GetDirection())) > tol):
        diffs.append(f"direction {_fmt(a.GetDirection())} vs {_fmt(b.GetDirection())}")
    return diffs


def onto(moving: sitk.Image, reference: sitk.Image, interpolator: int, default: float = 0.0) -> sitk.Image:
    """Resample ``moving`` onto the grid of ``reference`` (same physical space)."""
    return sitk.Resample(moving, reference, sitk.Transform(), interpolator, default, moving.GetPixelID())


def _check_finite(img: sitk.Image, case_id: str, what: str, path: Path) -> None:
    arr = sitk.GetArrayViewFromImage(img)
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise CaseError(
                case_id,
                f"{what} {path.name} has {bad} NaN or Inf voxels; replace them (e.g. with the background value) and run again",
            )


def read_case(case: Case, cfg: PrepareConfig) -> tuple[list[sitk.Image], sitk.Image]:
    """Read and check one case.

    Returns
    -------
    images : the image channels (float32), ``Image`` first, each on the primary image's grid
    mask : binary ROI mask (uint8, 0/1) on the primary image's grid

    Raises
    ------
    CaseError
        Missing or unreadable file, 2D/4D or multi-component image, NaN/Inf voxels, a
        mask whose geometry differs from the image (unless ``cfg.resample_mask``), an
        empty mask, an absent ROI label, or several labels without ``MaskLabel``.
    """
    image = read_image(case.image, case.id, "image")
    _check_volume(image, case.id, "image", case.image)
    _check_finite(image, case.id, "image", case.image)
    channels = [sitk.Cast(image, sitk.sitkFloat32)]
    for modality, path in case.extra_images.items():
        what = f"{EXTRA_PREFIX}{modality}"
        extra = read_image(path, case.id, what)
        _check_volume(extra, case.id, what, path)
        _check_finite(extra, case.id, what, path)
        extra = sitk.Cast(extra, sitk.sitkFloat32)
        if _same_geometry(channels[0], extra, cfg.tolerance):
            lowest = float(sitk.GetArrayViewFromImage(extra).min())
            extra = onto(extra, channels[0], sitk.sitkLinear, lowest)
        else:
            extra.CopyInformation(channels[0])  # equal within tolerance: make it exact
        channels.append(extra)
    mask = read_image(case.mask, case.id, "mask")
    _check_volume(mask, case.id, "mask", case.mask)
    _check_finite(mask, case.id, "mask", case.mask)
    mask = _geometry_checked_mask(mask, channels[0], case, cfg)
    return channels, _roi(mask, case)


def _geometry_checked_mask(mask: sitk.Image, image: sitk.Image, case: Case, cfg: PrepareConfig) -> sitk.Image:
    diffs = _same_geometry(image, mask, cfg.tolerance)
    if not diffs:
        mask.CopyInformation(image)
        return mask
    if not cfg.resample_mask:
        raise CaseError(
            case.id,
            f"image and mask geometry differ ({'; '.join(diffs)}). If this mask was drawn on this image, "
            "rerun with --resample-mask true (PrepareConfig.resample_mask) to resample it onto the image "
            "(nearest neighbour); otherwise give the matching mask",
        )
    # Safe only when the ROI keeps its voxels on the image's grid: checked after
    # resampling (an ROI outside the image's field of view comes out empty).
    before = _nonzero_count(mask)
    resampled = onto(mask, image, sitk.sitkNearestNeighbor, 0)
    if before and not _nonzero_count(resampled):
        raise CaseError(
            case.id,
            f"the mask lies outside the image after resampling it onto the image ({'; '.join(diffs)}); "
            "check that the mask belongs to this image",
        )
    return resampled


def _nonzero_count(img: sitk.Image) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(img)))


def _roi(mask: sitk.Image, case: Case) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(mask)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise CaseError(
            case.id,
            f"mask {case.mask.name} holds non-integer values; give a label mask (threshold a probability map first)",
        )
    labels = [int(v) for v in np.unique(arr[arr != 0])]
    if not labels:
        raise CaseError(case.id, f"mask {case.mask.name} is empty (all zero); draw the ROI or drop the case")
    if case.mask_label is not None:
        if case.mask_label not in labels:
            raise CaseError(
                case.id,
                f"ROI label {case.mask_label} is absent from mask {case.mask.name} "
                f"(labels found: {_listing(labels)}); set MaskLabel to one of them",
            )
        target = case.mask_label
    elif len(labels) > 1:
        raise CaseError(
            case.id,
            f"mask {case.mask.name} holds several labels ({_listing(labels)}) and the manifest "
            "gives no MaskLabel; add a MaskLabel column with the ROI's value",
        )
    else:
        target = labels[0]  # the only nonzero value, whatever it is (1, 255, ...)
    roi = sitk.GetImageFromArray((arr == target).astype(np.uint8))
    roi.CopyInformation(mask)
    roi.SetMetaData("roi_label", str(target))
    return roi


def _listing(values: list[int], most: int = 10) -> str:
    text = ", ".join(str(v) for v in values[:most])
    return text + (f", ... ({len(values)} labels)" if len(values) > most else "")


def describe(cohort: Cohort) -> pd.DataFrame:
    """One row per case (ID, Label, Group, Image, Mask, channels) for display."""
    rows = [
        {
            "ID": c.id,
            "Label": c.label,
            "Group": c.group,
            "Image": str(c.image),
            "Mask": str(c.mask),
            "channels": len(c.channels),
        }
        for c in cohort.cases
    ]
    return pd.DataFrame(rows, columns=["ID", "Label", "Group", "Image", "Mask", "channels"])

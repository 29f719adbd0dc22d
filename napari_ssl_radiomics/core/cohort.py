"""A cohort: which image and mask files make up each case, and reading them safely.

A cohort comes from a manifest CSV in pyradiomics' batch format or from a folder of
image/mask pairs (:func:`load_cohort`). :func:`read_case` reads one case through
SimpleITK (NIfTI, NRRD, MHA/MHD or a DICOM series folder), checks it and returns its
image channels and a binary ROI mask; anything wrong raises :class:`CaseError`, whose
message names the case and what to do, so that a caller can skip that case and go on.

Manifest columns
----------------
``Image``, ``Mask`` (required); ``ID``, ``Label`` (class for evaluation), ``Group``
(the patient, or whatever must not be split across folds), ``MaskLabel`` (the ROI's value in the mask),
``BoxMask`` (a second mask whose extent sets the network's crop, e.g. the whole lung, as in
the paper's lung setting; ``Mask`` stays the tumour) and ``Image_<modality>`` (further
channels, resampled onto ``Image``) are optional. Relative
paths are relative to the CSV's folder. Without an ``ID`` column a case is named after
its image file (or ``row<N>`` when those names repeat).

``MaskLabel`` is one value (``2``), several joined by ``+`` (``1+2+4``: their union) or
``all`` (every nonzero label: the whole tumour of a BraTS-style mask {1, 2, 4}). Where it
is empty, ``PrepareConfig.mask_label`` applies (``--mask-label`` of ``prepare`` and
``radiomics``), and where that is empty too the mask must hold a single nonzero value.

One validation for every entry point: ``prepare``, ``radiomics`` and the widgets all read a
case through :func:`read_case`, so a case one of them refuses, the others refuse too.
Beyond what SimpleITK checks, a NIfTI file is checked against its own header: a file
shorter than its header's size is refused (SimpleITK fills the missing voxels with 0), and
its float voxels are scanned for NaN and Inf (SimpleITK's NIfTI reader turns them into 0,
while NRRD and MHA keep them).
"""

from __future__ import annotations

import gzip
import struct
import zlib
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
ALL_LABELS = "all"

#: What ``MaskLabel`` selects: one value, the union of several, ``"all"``, or None (the only one).
RoiSpec = int | tuple[int, ...] | str | None


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
    group : the patient, or whatever must not be split across folds ('' when unknown)
    mask_label : the ROI's value in the mask, a tuple of values (their union), ``"all"``
        (every nonzero value), or None (``PrepareConfig.mask_label``, else the mask's only
        nonzero value)
    extra_images : modality -> file of further channels, resampled onto ``image``
    box_mask : a second mask (e.g. the lung) whose nonzero voxels set the network's crop
        instead of the ROI's (see :mod:`.preprocess`); None: the ROI sets it
    """

    id: str
    image: Path
    mask: Path
    label: str = ""
    group: str = ""
    mask_label: RoiSpec = None
    extra_images: dict[str, Path] = field(default_factory=dict)
    box_mask: Path | None = None

    @property
    def channels(self) -> list[str]:
        """Names of the image channels, primary first."""
        return ["Image"] + [f"{EXTRA_PREFIX}{m}" for m in self.extra_images]

    def sources(self) -> dict[str, Path]:
        """Every file this case reads: channel name -> path, and ``Mask``."""
        out = {"Image": self.image}
        out.update({f"{EXTRA_PREFIX}{m}": p for m, p in self.extra_images.items()})
        out["Mask"] = self.mask
        if self.box_mask is not None:
            out["BoxMask"] = self.box_mask
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
    if table.empty:
        raise ValueError(
            f"manifest {csv} has a header but no cases; add one row per case (Image, Mask[, ID, Label, ...])"
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
    try:
        mask_label = parse_mask_label(rec.get("MaskLabel", ""))
    except ValueError as exc:
        raise ValueError(f"case {case_id}: MaskLabel {exc}") from None
    extra = {c[len(EXTRA_PREFIX) :]: _resolve(rec[c], base) for c in extras if rec[c].strip()}
    box = rec.get("BoxMask", "").strip()
    return Case(
        id=case_id,
        image=_resolve(rec["Image"], base),
        mask=_resolve(rec["Mask"], base),
        label=rec.get("Label", "").strip(),
        group=rec.get("Group", "").strip(),
        mask_label=mask_label,
        extra_images=extra,
        box_mask=_resolve(box, base) if box else None,
    )


def parse_mask_label(text: str | int | None) -> RoiSpec:
    """``""`` -> None, ``"2"`` -> 2, ``"1+2+4"`` -> (1, 2, 4), ``"all"`` -> ``"all"``.

    Raises
    ------
    ValueError
        For anything else (the message quotes the text and says what is accepted).
    """
    if text is None or isinstance(text, int):
        return text
    text = str(text).strip()
    if not text:
        return None
    if text.lower() in (ALL_LABELS, "whole", "union"):
        return ALL_LABELS
    try:
        values = sorted({int(float(v)) for v in text.replace(",", "+").split("+") if v.strip()})
        if any(float(v) != int(float(v)) for v in text.replace(",", "+").split("+") if v.strip()):
            raise ValueError(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a label; give the ROI's value in the mask (2), several joined by + (1+2+4: "
            "their union) or 'all' (every nonzero label)"
        ) from None
    if not values:
        return None
    if 0 in values:  # 0 is what every mask holds outside its ROIs: never an ROI of its own
        raise ValueError(
            f"{text!r} names label 0, which is the background (every voxel outside the ROIs), not an ROI; "
            "give the ROI's nonzero value (1, 2, ...) or 'all' (every nonzero label)"
        )
    return values[0] if len(values) == 1 else tuple(values)


def default_mask_label(cfg: PrepareConfig) -> RoiSpec:
    """``cfg.mask_label`` parsed; ValueError names the setting when it is not a label."""
    try:
        return parse_mask_label(getattr(cfg, "mask_label", ""))
    except ValueError as exc:
        raise ValueError(f"PrepareConfig.mask_label (--mask-label) = {exc}") from None


def describe_mask_label(spec: RoiSpec) -> str:
    """The ROI spec as text: '2', '1+2+4', 'all' or ''."""
    if spec is None:
        return ""
    return "+".join(str(v) for v in spec) if isinstance(spec, tuple) else str(spec)


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


def missing_source(case: Case) -> str | None:
    """The message for a case's first missing file (as ``prepare`` words it), or None."""
    sources = case.sources() if hasattr(case, "sources") else {"Image": case.image, "Mask": case.mask}
    for name, path in sources.items():
        if not Path(path).exists():
            return f"{name} file {path} not found; fix the path (relative paths are relative to the manifest)"
    return None


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
        problem = nifti_problem(path)
        if problem:
            raise CaseError(case_id, f"{what} {path.name} {problem}")
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CaseError(
            case_id,
            f"cannot read {what} {path} ({_itk_reason(exc)}); check that it is a complete NIfTI, NRRD, MHA/MHD file or DICOM series",
        ) from None


# NIfTI datatype codes of float voxels: float32, float64 (NaN and Inf possible).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
_CHUNK = 1 << 22  # bytes per read when scanning a file


def nifti_problem(path: Path) -> str | None:
    """What is wrong with a NIfTI file that SimpleITK would read without a word, or None.

    Checks the data size the header promises (``vox_offset + prod(dim) * bitpix / 8``)
    against the file (``.nii``) or the decompressed stream (``.nii.gz``), and scans float
    voxels for NaN and Inf. Other formats, and ``.hdr``/``.img`` pairs, give None.
    """
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")) or not path.is_file():
        return None
    gz = name.endswith(".gz")
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
            header = _nifti_header(fh.read(540))
    except (OSError, EOFError, zlib.error):
        return None  # not gzip or too short to tell: SimpleITK's own error says more
    if header is None:
        return None
    offset, nbytes, dtype = header
    expected = offset + nbytes
    if dtype is None and not gz:
        actual = path.stat().st_size
    elif dtype is None and _gzip_isize(path) == expected % (1 << 32):
        return None  # the gzip trailer agrees: no need to decompress it all
    else:
        try:
            actual, bad = _scan(path, gz, offset, dtype)
        except (OSError, EOFError, zlib.error):
            return "is truncated or corrupt (its compressed data ends early); copy the file again or re-export it"
        if actual >= expected and bad:
            return f"has {bad} NaN or Inf voxels; replace them (e.g. with the background value) and run again"
    if actual < expected:
        return (
            f"is truncated: its header promises {expected} bytes of data, the file holds {actual}; "
            "copy the file again or re-export it"
        )
    return None


def _nifti_header(raw: bytes) -> tuple[int, int, str | None] | None:
    """(data offset, data bytes, float dtype or None) from the first bytes of a NIfTI-1/2 file."""
    for order in "<>":
        if len(raw) >= 348 and struct.unpack(order + "i", raw[:4])[0] == 348:
            dims = struct.unpack(order + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
            break
        if len(raw) >= 540 and struct.unpack(order + "i", raw[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dims = struct.unpack(order + "8q", raw[16:80])
            offset = int(struct.unpack(order + "q", raw[168:176])[0])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or any(d < 1 for d in dims[1 : ndim + 1]):
        return None
    count = int(np.prod([int(d) for d in dims[1 : ndim + 1]], dtype=np.int64))
    dtype = _NIFTI_FLOATS.get(int(datatype))
    return max(offset, 348), count * int(bitpix) // 8, (order + dtype if dtype else None)


def _gzip_isize(path: Path) -> int:
    """The last gzip member's stored size (the decompressed size modulo 2**32)."""
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        return struct.unpack("<I", fh.read(4))[0]


def _scan(path: Path, gz: bool, offset: int, dtype: str | None) -> tuple[int, int]:
    """Bytes in the (decompressed) file, and non-finite voxels when ``dtype`` is a float."""
    size = np.dtype(dtype).itemsize if dtype else 1
    total, bad, pending = 0, 0, b""
    with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            start = max(0, offset - total)
            total += len(block)
            if dtype is None or start >= len(block):
                continue
            data = pending + block[start:]
            usable = len(data) - len(data) % size
            values = np.frombuffer(data[:usable], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            pending = data[usable:]
    return total, bad


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
        _check_float32_range(arr, case_id, what, path)


#: the largest magnitude a float32 holds: the crops and pyradiomics work in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32_range(arr: np.ndarray, case_id: str, what: str, path: Path) -> None:
    """Refuse float64 values beyond float32's range: cast, they become inf and the rescaling
    then reports a range of "nan to nan"."""
    if arr.dtype.itemsize <= 4 or not arr.size:
        return
    largest = float(np.max(np.abs(arr)))
    if largest > FLOAT32_MAX:
        raise CaseError(
            case_id,
            f"the values of {what} {path.name} overflow float32 (largest magnitude {largest:.3g}, float32 holds up to "
            f"{FLOAT32_MAX:.3g}); rescale the image to sensible units (e.g. HU or the scanner's values) and run again",
        )


def read_case(case: Case, cfg: PrepareConfig, raw: bool = False) -> tuple[list[sitk.Image], sitk.Image]:
    """Read and check one case: the one validation of prepare, radiomics and the widgets.

    Parameters
    ----------
    cfg : ``tolerance`` and ``resample_mask`` (geometry), ``mask_label`` (the ROI where the
        case gives no MaskLabel)
    raw : keep the primary image's own pixel type (pyradiomics resamples integer images as
        integers); further channels are float32 either way

    Returns
    -------
    images : the image channels (float32 unless ``raw``), ``Image`` first, each on the
        primary image's grid
    mask : binary ROI mask (uint8, 0/1) on the primary image's grid; its ``roi_label``
        metadata names the label(s) it was made of ('2', '1+2+4' or 'all')

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
    channels = [image if raw else sitk.Cast(image, sitk.sitkFloat32)]
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
    spec = case.mask_label if case.mask_label is not None else default_mask_label(cfg)
    return channels, _roi(mask, case, spec)


def read_box(case: Case, image: sitk.Image, cfg: PrepareConfig) -> sitk.Image | None:
    """The case's ``BoxMask`` as a binary mask on ``image``'s grid, checked as ``Mask`` is;
    None when the case has none."""
    if case.box_mask is None:
        return None
    box = read_image(case.box_mask, case.id, "BoxMask")
    _check_volume(box, case.id, "BoxMask", case.box_mask)
    _check_finite(box, case.id, "BoxMask", case.box_mask)
    box = _geometry_checked_mask(box, image, case, cfg, what="BoxMask")
    arr = sitk.GetArrayViewFromImage(box)
    if not np.any(arr):
        raise CaseError(case.id, f"BoxMask {case.box_mask.name} is empty (all zero); give the region to crop")
    out = sitk.GetImageFromArray((arr != 0).astype(np.uint8))
    out.CopyInformation(box)
    return out


def _geometry_checked_mask(
    mask: sitk.Image, image: sitk.Image, case: Case, cfg: PrepareConfig, what: str = "mask"
) -> sitk.Image:
    diffs = _same_geometry(image, mask, cfg.tolerance)
    if not diffs:
        mask.CopyInformation(image)
        return mask
    if not cfg.resample_mask:
        raise CaseError(
            case.id,
            f"image and {what} geometry differ ({'; '.join(diffs)}). If this mask was drawn on this image, "
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
            f"the {what} lies outside the image after resampling it onto the image ({'; '.join(diffs)}); "
            "check that the mask belongs to this image",
        )
    return resampled


def _nonzero_count(img: sitk.Image) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(img)))


def _roi(mask: sitk.Image, case: Case, spec: RoiSpec) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(mask)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
        raise CaseError(
            case.id,
            f"mask {case.mask.name} holds non-integer values; give a label mask (threshold a probability map first)",
        )
    labels = [int(v) for v in np.unique(arr[arr != 0])]
    if not labels:
        raise CaseError(case.id, f"mask {case.mask.name} is empty (all zero); draw the ROI or drop the case")
    if spec == ALL_LABELS:
        targets = labels
    elif isinstance(spec, tuple):  # a union: every member, or the ROI is not the one asked for
        missing = [v for v in spec if v not in labels]
        if missing:
            raise CaseError(
                case.id,
                f"ROI label {'+'.join(str(v) for v in missing)} of MaskLabel {describe_mask_label(spec)} is absent "
                f"from mask {case.mask.name} (labels found: {_listing(labels)}); every member of a union must be "
                "present: fix MaskLabel or the mask",
            )
        targets = list(spec)
    elif spec is not None:
        if int(spec) not in labels:
            raise CaseError(
                case.id,
                f"ROI label {spec} is absent from mask {case.mask.name} "
                f"(labels found: {_listing(labels)}); set MaskLabel to one of them",
            )
        targets = [int(spec)]
    elif len(labels) > 1:
        raise CaseError(
            case.id,
            f"mask {case.mask.name} holds several labels ({_listing(labels)}) and the manifest "
            "gives no MaskLabel; add a MaskLabel column with the ROI's value, or use --mask-label "
            f"{'+'.join(str(v) for v in labels[:4])} (their union) or --mask-label all (the whole tumour)",
        )
    else:
        targets = labels  # the only nonzero value, whatever it is (1, 255, ...)
    roi = sitk.GetImageFromArray(np.isin(arr, targets).astype(np.uint8))
    roi.CopyInformation(mask)
    roi.SetMetaData("roi_label", ALL_LABELS if spec == ALL_LABELS else "+".join(str(v) for v in targets))
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

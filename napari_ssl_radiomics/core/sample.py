"""A built-in synthetic cohort: 3D "tumours" with two phenotypes and three acquisition centres.

The cohort reproduces the problem the paper's RE/SE module addresses: the classes are
imbalanced 3:1, and a stronger nuisance factor, the acquisition centre, is imbalanced
too (60/30/10 %), so that clustering the raw images is pulled towards the centres.

Phenotypes (``Label``), the real but subtler signal:

* 0 (majority): a smooth, near-spherical tumour with a fine, homogeneous texture;
* 1 (minority): a lobulated, irregular tumour with a coarse, heterogeneous texture and a
  dark necrotic-like core. Mean tumour brightness is about the same in both.

Centres (``Group``), the strong nuisance: each has its own intensity gain and offset,
tumour-to-tissue contrast, noise level, blur and smooth bias field. Gain and offset
vanish under percentile rescaling; noise, blur, contrast and bias do not, and they
dominate the look of an image. Centres are assigned within each phenotype in the same
proportions, so that centre and phenotype are independent.

Everything is numpy/scipy.ndimage: 48 cases of 48³ take about a second.
Volumes are (z, y, x) at 1 mm isotropic spacing, tumour inside soft background tissue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..config import SampleConfig
from .utils import provenance, write_csv, write_json

CENTRES = ("centre-A", "centre-B", "centre-C")
CENTRE_SHARES = (0.6, 0.3, 0.1)
MINORITY_SHARE = 0.25  # labels 0:1 = 3:1
TISSUE = 100.0  # background tissue level before the centre's gain and offset
TUMOUR = 150.0  # tumour level (phenotype 1's rim is brighter, its core darker)


@dataclass(frozen=True)
class CentreStyle:
    """How one centre's scanner changes an image (intensity units of the clean image)."""

    gain: float
    offset: float
    contrast: float  # multiplies every deviation from the tissue level
    noise: float  # std of white Gaussian noise
    blur: float  # Gaussian blur sigma, voxels
    bias: float  # amplitude of a multiplicative linear bias field


STYLES = (
    CentreStyle(gain=1.0, offset=0.0, contrast=1.0, noise=3.0, blur=0.0, bias=0.05),
    CentreStyle(gain=1.8, offset=80.0, contrast=0.65, noise=16.0, blur=0.0, bias=0.25),
    CentreStyle(gain=0.6, offset=-30.0, contrast=1.4, noise=1.5, blur=1.8, bias=0.15),
)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit std.

    Wide kernels are filtered on a coarser grid and interpolated back (same look, a
    fraction of the time).
    """
    step = max(1, int(sigma // 2))
    coarse = shape if step == 1 else tuple(-(-n // step) + 2 for n in shape)
    field = ndi.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma / step, mode="wrap")
    if step > 1:
        field = ndi.zoom(field, step, order=1)[tuple(slice(0, n) for n in shape)]
    return (field - field.mean()) / (field.std() + 1e-12)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of ``mask`` with its inner holes filled."""
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = ndi.sum(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    outside, _ = ndi.label(~mask)
    faces = np.concatenate(
        [
            outside[0].ravel(),
            outside[-1].ravel(),
            outside[:, 0].ravel(),
            outside[:, -1].ravel(),
            outside[..., 0].ravel(),
            outside[..., -1].ravel(),
        ]
    )
    return mask | ~np.isin(outside, np.unique(faces[faces > 0])) & (outside > 0)


def _tumour_shape(rng: np.random.Generator, size: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask and a normalised radial field (< 1 inside) of one tumour."""
    shape = (size,) * 3
    grid = np.indices(shape, dtype=np.float32)
    centre = (size - 1) / 2 + rng.uniform(-size / 12, size / 12, 3)
    radius = size * rng.uniform(0.17, 0.22)
    spread = 0.08 if label == 0 else 0.2  # ellipsoid axes within 1 ± spread
    axes = radius * rng.uniform(1 - spread, 1 + spread, 3)
    dist = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes)))
    # Phenotype 0: a faint, long-wavelength wobble; 1: short-wavelength lobules.
    if label == 0:
        field = dist + 0.04 * _smooth_noise(rng, shape, size / 6)
    else:
        field = dist + 0.3 * _smooth_noise(rng, shape, max(size / 18, 1.5))
    mask = _largest_component(field < 1.0)
    return mask, field


def _texture(rng: np.random.Generator, field: np.ndarray, mask: np.ndarray, label: int) -> np.ndarray:
    """Clean tumour intensities (meaningful inside ``mask`` only)."""
    shape = mask.shape
    if label == 0:
        return TUMOUR + 6.0 * _smooth_noise(rng, shape, 0.6)
    texture = TUMOUR + 12.0 + 18.0 * _smooth_noise(rng, shape, 2.0)
    core = (field + 0.15 * _smooth_noise(rng, shape, 1.5)) < 0.5
    return np.where(core, TISSUE - 5.0 + 8.0 * _smooth_noise(rng, shape, 1.0), texture)


def make_case(seed: int, size: int, label: int, centre: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic case.

    Parameters
    ----------
    seed : seed of this case's generator (the same seed gives the same case)
    size : edge of the volume, voxels (1 mm each); at least 16
    label : phenotype, 0 (smooth, fine texture) or 1 (lobulated, coarse, necrotic core)
    centre : acquisition centre, an index into :data:`CENTRES`

    Returns
    -------
    image : (S, S, S) float32, arbitrary intensity units
    mask : (S, S, S) uint8 in {0, 1}
    info : label, centre, seed, volume_mm3 and the centre's style
    """
    if size < 16:
        raise ValueError(f"sample size {size} is too small; use at least 16 voxels")
    if label not in (0, 1) or not 0 <= centre < len(CENTRES):
        raise ValueError(f"label must be 0 or 1 and centre 0..{len(CENTRES) - 1}; got {label}, {centre}")
    rng = np.random.default_rng(seed)
    mask, field = _tumour_shape(rng, size, label)
    tissue = TISSUE + 6.0 * _smooth_noise(rng, mask.shape, 2.5)
    tumour = _texture(rng, field, mask, label)
    weight = ndi.gaussian_filter(mask.astype(np.float32), 0.7)  # partial-volume edge
    clean = tissue + weight * (tumour - tissue)
    image = _acquire(rng, clean, STYLES[centre])
    info = {
        "label": int(label),
        "centre": CENTRES[centre],
        "seed": int(seed),
        "volume_mm3": float(mask.sum()),
        "spacing": [1.0, 1.0, 1.0],
        "style": STYLES[centre].__dict__,
    }
    return image.astype(np.float32), mask.astype(np.uint8), info


def _acquire(rng: np.random.Generator, clean: np.ndarray, style: CentreStyle) -> np.ndarray:
    """Apply a centre's contrast, blur, bias field, noise, gain and offset."""
    image = TISSUE + style.contrast * (clean - TISSUE)
    if style.blur > 0:
        image = ndi.gaussian_filter(image, style.blur)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    ramp = sum(
        d * np.linspace(-1, 1, n, dtype=np.float32).reshape([-1 if i == k else 1 for i in range(3)])
        for k, (d, n) in enumerate(zip(direction, image.shape))
    )
    image = image * (1 + style.bias * ramp)
    image = image + rng.normal(0.0, style.noise, image.shape).astype(np.float32)
    return style.gain * image + style.offset


def _allocate(n: int, shares: tuple[float, ...]) -> list[int]:
    """Split ``n`` by ``shares`` with the largest-remainder rule (counts sum to ``n``)."""
    raw = np.array(shares) * n / sum(shares)
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def cohort_design(cfg: SampleConfig) -> pd.DataFrame:
    """The cohort's cases before any image is made: ID, Label, centre index, seed.

    Labels are 3:1 (0:1); centres 60/30/10 % within each label; order shuffled.
    """
    rng = np.random.default_rng(cfg.seed)
    n1 = int(round(cfg.cases * MINORITY_SHARE))
    rows = []
    for label, n in ((0, cfg.cases - n1), (1, n1)):
        for centre, count in enumerate(_allocate(n, CENTRE_SHARES)):
            rows += [(label, centre)] * count
    order = rng.permutation(len(rows))
    seeds = np.random.SeedSequence(cfg.seed).generate_state(len(rows))
    return pd.DataFrame(
        [
            {"ID": f"case_{i:03d}", "Label": rows[j][0], "centre": rows[j][1], "seed": int(seeds[i])}
            for i, j in enumerate(order)
        ]
    )


def _write_nifti(path: Path, array: np.ndarray) -> None:
    """Write a 1 mm volume whole or not at all (the temporary name keeps the .nii.gz suffix)."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((1.0, 1.0, 1.0))
    img.SetOrigin(tuple(-(n - 1) / 2 for n in array.shape[::-1]))  # volume centred on 0 mm
    tmp = path.with_name(f".{path.name[:-7]}.{os.getpid()}.tmp.nii.gz")
    try:
        sitk.WriteImage(img, str(tmp), useCompression=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_sample_cohort(out: str | Path, cfg: SampleConfig) -> Path:
    """Write the synthetic cohort as NIfTI files and a manifest; return the manifest's path.

    ``out`` receives ``<ID>_image.nii.gz``, ``<ID>_mask.nii.gz``, ``manifest.csv``
    (ID, Image, Mask, Label, Group; paths relative to it) and ``sample.json`` (settings,
    versions and each case's centre style).
    """
    if cfg.cases < 4:
        raise ValueError(f"the sample cohort needs at least 4 cases for its 3:1 labels; got {cfg.cases}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    design = cohort_design(cfg)
    rows, infos = [], []
    for rec in design.itertuples():
        image, mask, info = make_case(rec.seed, cfg.size, rec.Label, rec.centre)
        _write_nifti(out / f"{rec.ID}_image.nii.gz", image)
        _write_nifti(out / f"{rec.ID}_mask.nii.gz", mask)
        rows.append(
            {
                "ID": rec.ID,
                "Image": f"{rec.ID}_image.nii.gz",
                "Mask": f"{rec.ID}_mask.nii.gz",
                "Label": rec.Label,
                "Group": CENTRES[rec.centre],
            }
        )
        infos.append({"ID": rec.ID, **info})
    manifest = out / "manifest.csv"
    write_json(out / "sample.json", provenance(cfg, cases=infos))
    write_csv(manifest, pd.DataFrame(rows, columns=["ID", "Image", "Mask", "Label", "Group"]))
    return manifest

"""A built-in synthetic cohort where traditional radiomics see only part of the label.

The cohort reproduces the problem the paper's RE/SE module addresses: the classes are
imbalanced 3:1, and a stronger nuisance factor, the acquisition centre, is imbalanced
too (60/30/10 %), so that clustering the raw images is pulled towards the centres.

It is also built so that the demo's question, whether learned features add to
traditional radiomics, stays open: pyradiomics' features of the tumour mask reach a
cross-validated AUC of about 0.8 (not 1.0), while the images hold the whole label.

Phenotypes (``Label``) show in two ways:

* **Inside the mask, partly:** every case has a *grade*, a latent variable that makes the
  tumour larger, more lobulated and more heterogeneous. Grades of the two phenotypes
  overlap (normal, one standard deviation each, means :data:`GRADE_SHIFT` apart), which
  caps what any feature of the grade can reach (AUC 0.89 for a perfect reading);
  :func:`cohort_design` gives each phenotype's cases evenly spaced quantiles of its
  distribution, so that a small cohort overlaps as much as a large one. Shape and
  texture statistics read the grade through per-case nuisances (size, axes, lobule
  scale, texture grain) and the centres' noise and blur.
* **Around the mask, fully:** the minority phenotype (1) has a peritumoral halo, a patchy
  dark rim 1.5-4 voxels outside the tumour with a brighter ring beyond it (:func:`_halo`).
  Features computed inside the mask do not see it; a model that looks at the crop around
  the tumour can.

The halo is made of the tissue's own values, moved: the voxels of the band around the
tumour swap their values so that the darkest lie next to the tumour. The clean volume's
histogram is then exactly that of the same case without a halo (the scanner's noise, bias
and blur change it by hundredths of the tissue's spread), so the halo cannot move the
intensity normalisation (``prepare`` rescales each volume by its 0.5th and 99.5th
percentiles): the label is in the halo's shape, not in any global statistic. Version 2's
halo darkened the tissue instead; it lowered the volume's 0.5th percentile enough to
separate the phenotypes by that number alone (AUC 0.97 in centre A, 96 cases), and the
rescaled tumour's brightness with it (0.84). The tissue's texture is fine-grained (1 voxel;
2.5 in version 2) so that the rim, whose rings are about 2 voxels thick, is about as rough
as the tissue around it: the linear interpolation of ``prepare``'s crop and centre C's blur
then smooth both about alike, and the crop's statistics do not move with the label either
(over the coarser tissue, the crop's 5th percentile reached an AUC of 0.62). On 600 cases (100 per phenotype and centre,
grades drawn alike for both), no percentile, mean or sd of the volumes or of the prepared
28³ crops, nor the rescaled tumour's brightness, separates the phenotypes within a centre:
AUC 0.42-0.60 over three seeds, where chance gives 0.5 ± 0.04 (one sd); the rim's depth
separates them with AUC 0.91-1.0 (``src_tests/test_sample_cohort.py`` checks both).

Centres (``Centre`` in the manifest), the strong nuisance: each has its own intensity gain
and offset, tumour-to-tissue contrast, noise level, blur and smooth bias field. Gain and
offset vanish under percentile rescaling; noise, blur, contrast and bias do not, and they
dominate the look of an image. Centres are assigned within each phenotype in the same
proportions, and grades independently of centres, so that centre and phenotype are
independent. The manifest has no ``Group`` column: every case is its own patient, and the
centre is a covariate, not a unit that cross-validation must keep whole (grouping folds by
3 centres would turn 5-fold CV into leave-centre-out, another question).

Measured on a 2-core CPU machine with the project's own pipeline (``core.radiomics``:
pyradiomics' 107 default features of the 36³ volumes; ``core.evaluate``: linear SVM,
stratified 5-fold, all labels, AUC as the mean over folds):

- 48 cases (the demo's cohort), seeds 0-9, each the mean of 5 fold repeats: 0.75-0.91,
  mean 0.84 (version 2: 0.74-0.88, mean 0.83);
- 200 cases, seeds 0-2: 0.86, 0.88, 0.83 (version 2: the same to 0.01);
- 200 cases with ``GRADE_SHIFT = 0`` (the halo alone): 0.40, chance;
- the cohort before version 2: 1.0.

An untrained encoder (the paper's, on the demo's 28³ crops, 3 fold repeats) does not close
the gap on 200 cases (seed 0): 0.74 alone, 0.83 with the traditional features, against
0.86 for those alone (version 2: 0.80, 0.83 and 0.85; some of its 0.80 came through the
normalisation). What the halo adds has to be learned.

Everything is numpy/scipy.ndimage: 48 cases of 36³ take a second or two.
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
from scipy.stats import norm

from ..config import SampleConfig
from .utils import provenance, write_csv, write_json

CENTRES = ("centre-A", "centre-B", "centre-C")
CENTRE_SHARES = (0.6, 0.3, 0.1)
MINORITY_SHARE = 0.25  # labels 0:1 = 3:1
TISSUE = 100.0  # background tissue level before the centre's gain and offset
TISSUE_TEXTURE = (6.0, 1.0)  # the tissue's texture: std (clean units) and correlation length (voxels)
TUMOUR = 150.0  # mean tumour level, the same for both phenotypes
# How the grade (standard deviations, phenotype 0 ~ N(0, 1), phenotype 1 ~ N(GRADE_SHIFT, 1))
# shows inside the mask. GRADE_SHIFT sets how much of the label traditional radiomics can
# see: 1.7 gave a trad-only AUC of 0.83-0.88 on 200 cases (see the module docstring).
GRADE_SHIFT = 1.7
SIZE_GRADE = 0.15  # log of the radius per grade (tumours of higher grade are larger)
LOBULATION = (0.10, 0.07)  # lobulation amplitude = a + b * grade (radial field units)
HETEROGENEITY = (10.0, 4.0)  # texture std = a + b * grade (clean intensity units)
HALO_WIDTH = (1.5, 2.5)  # thickness of each of the halo's two rings (dark, then bright), voxels
HALO_PATCHES = (1.0, 4.0)  # the halo's patches: weight against the rings' radial order, and scale (voxels)

#: bump when the generator draws other volumes for the same settings (a cached demo cohort is then rebuilt)
SAMPLE_VERSION = 3


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


def _tumour_shape(rng: np.random.Generator, size: int, grade: float) -> np.ndarray:
    """The mask of one tumour: an ellipsoid, larger and more lobulated with its grade."""
    shape = (size,) * 3
    grid = np.indices(shape, dtype=np.float32)
    centre = (size - 1) / 2 + rng.uniform(-size / 12, size / 12, 3)
    # Clipped so that the largest tumours (radius up to about 0.31 of the edge) stay clear
    # of the volume's faces, and the smallest big enough for pyradiomics' texture matrices.
    growth = np.exp(SIZE_GRADE * np.clip(grade - GRADE_SHIFT / 2, -2.0, 2.0))
    radius = size * rng.uniform(0.17, 0.21) * growth
    axes = radius * rng.uniform(0.9, 1.1, 3)
    dist = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes)))
    lobulation = max(0.0, LOBULATION[0] + LOBULATION[1] * grade)
    lobule = rng.uniform(size / 18, size / 9)  # nuisance: the lobules' scale, voxels
    field = dist + lobulation * _smooth_noise(rng, shape, max(lobule, 1.5))
    return _largest_component(field < 1.0)


def _texture(rng: np.random.Generator, shape: tuple[int, ...], grade: float) -> np.ndarray:
    """Clean tumour intensities (meaningful inside the mask only), more heterogeneous by grade."""
    std = max(2.0, HETEROGENEITY[0] + HETEROGENEITY[1] * grade)
    grain = rng.uniform(0.7, 2.0)  # nuisance: the texture's correlation length, voxels
    return TUMOUR + std * _smooth_noise(rng, shape, grain)


def _halo(rng: np.random.Generator, mask: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Phenotype 1's peritumoral halo: the band's own tissue values, rearranged into a rim.

    The band is the tissue 1.5 to 1.5 + 2 w voxels outside the mask (w drawn from
    :data:`HALO_WIDTH`). Its voxels keep their values as a set but swap places: the darkest
    go where a score is highest, the score being high near the tumour and low at the band's
    outer edge, mixed with patches. The result is a patchy dark rim hugging the tumour with
    a brighter ring around it, a spatial (shape and texture) signal. The histogram of the
    clean volume, and of any crop holding the whole band, stays exactly what it was, so no
    percentile, mean or sd used to rescale the image moves with the label. The mask and the
    voxels that touch it are not changed, so features of the mask's voxels cannot see it
    (before a centre's blur spreads it by a voxel or two).

    Parameters
    ----------
    rng : the halo's own generator
    mask : (S, S, S) bool, the tumour
    tissue : (S, S, S) clean tissue intensities (without the tumour)

    Returns
    -------
    tissue : (S, S, S) float32, the tissue with the halo
    """
    dist = ndi.distance_transform_edt(~mask)
    width = rng.uniform(*HALO_WIDTH)
    band = (dist > 1.5) & (dist <= 1.5 + 2 * width)
    # +1 at the band's inner edge, -1 at its outer edge; the patches blur the border between the two rings
    score = (1.5 + width - dist[band]) / width + HALO_PATCHES[0] * _smooth_noise(rng, mask.shape, HALO_PATCHES[1])[band]
    rank = np.argsort(np.argsort(-score, kind="stable"), kind="stable")  # 0 for the highest score
    out = tissue.astype(np.float32, copy=True)
    out[band] = np.sort(tissue[band])[rank]
    return out


def make_case(
    seed: int, size: int, label: int, centre: int, grade: float | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic case.

    Parameters
    ----------
    seed : seed of this case's generator (the same seed gives the same case)
    size : edge of the volume, voxels (1 mm each); at least 16
    label : phenotype, 0 or 1 (1: a higher grade on average, and a peritumoral halo)
    centre : acquisition centre, an index into :data:`CENTRES`
    grade : the tumour's grade in standard deviations (size, lobulation, heterogeneity);
        None draws it from the phenotype's distribution, N(0, 1) or N(GRADE_SHIFT, 1)

    Returns
    -------
    image : (S, S, S) float32, arbitrary intensity units
    mask : (S, S, S) uint8 in {0, 1}
    info : label, grade, centre, seed, volume_mm3 and the centre's style

    With the same seed, grade and centre, the two phenotypes give the same mask and the
    same voxels inside it; they differ only by the halo around it.
    """
    if size < 16:
        raise ValueError(f"sample size {size} is too small; use at least 16 voxels")
    if label not in (0, 1) or not 0 <= centre < len(CENTRES):
        raise ValueError(f"label must be 0 or 1 and centre 0..{len(CENTRES) - 1}; got {label}, {centre}")
    rng = np.random.default_rng(seed)
    drawn = rng.standard_normal() + GRADE_SHIFT * label  # drawn always: the stream stays the same
    grade = drawn if grade is None else float(grade)
    mask = _tumour_shape(rng, size, grade)
    tissue = TISSUE + TISSUE_TEXTURE[0] * _smooth_noise(rng, mask.shape, TISSUE_TEXTURE[1])
    if label == 1:  # a generator of its own, so the rest of the case does not depend on the label
        tissue = _halo(np.random.default_rng([seed, 1]), mask, tissue)
    tumour = _texture(rng, mask.shape, grade)
    weight = ndi.gaussian_filter(mask.astype(np.float32), 0.7)  # partial-volume edge
    clean = tissue + weight * (tumour - tissue)
    image = _acquire(rng, clean, STYLES[centre])
    info = {
        "label": int(label),
        "grade": float(grade),
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
    """The cohort's cases before any image is made: ID, Label, centre index, grade, seed.

    Labels are 3:1 (0:1); centres 60/30/10 % within each label; order shuffled. The n
    cases of a phenotype get the quantiles (i + 0.5) / n of its grade distribution, in an
    order drawn independently of the centres.
    """
    rng = np.random.default_rng(cfg.seed)
    n1 = int(round(cfg.cases * MINORITY_SHARE))
    rows = []
    for label, n in ((0, cfg.cases - n1), (1, n1)):
        grades = norm.ppf((np.arange(n) + 0.5) / n) + GRADE_SHIFT * label
        grades = grades[rng.permutation(n)]
        centres = [c for c, count in enumerate(_allocate(n, CENTRE_SHARES)) for _ in range(count)]
        rows += [(label, c, float(g)) for c, g in zip(centres, grades)]
    order = rng.permutation(len(rows))
    seeds = np.random.SeedSequence(cfg.seed).generate_state(len(rows))
    return pd.DataFrame(
        [
            {
                "ID": f"case_{i:03d}",
                "Label": rows[j][0],
                "centre": rows[j][1],
                "grade": rows[j][2],
                "seed": int(seeds[i]),
            }
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
    (ID, Image, Mask, Label, Centre; paths relative to it) and ``sample.json`` (settings,
    versions and each case's grade and centre style). There is no ``Group`` column: the
    cases are independent, so cross-validation needs no grouping (see the module docstring).
    """
    if cfg.cases < 4:
        raise ValueError(f"the sample cohort needs at least 4 cases for its 3:1 labels; got {cfg.cases}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    design = cohort_design(cfg)
    rows, infos = [], []
    for rec in design.itertuples():
        image, mask, info = make_case(rec.seed, cfg.size, rec.Label, rec.centre, rec.grade)
        _write_nifti(out / f"{rec.ID}_image.nii.gz", image)
        _write_nifti(out / f"{rec.ID}_mask.nii.gz", mask)
        rows.append(
            {
                "ID": rec.ID,
                "Image": f"{rec.ID}_image.nii.gz",
                "Mask": f"{rec.ID}_mask.nii.gz",
                "Label": rec.Label,
                "Centre": CENTRES[rec.centre],
            }
        )
        infos.append({"ID": rec.ID, **info})
    manifest = out / "manifest.csv"
    write_json(out / "sample.json", provenance(cfg, cases=infos))
    write_csv(manifest, pd.DataFrame(rows, columns=["ID", "Image", "Mask", "Label", "Centre"]))
    return manifest

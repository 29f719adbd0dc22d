"""Batched 3D augmentation on the training device, with independent parameters per sample.

The paper's four categories (Fig. 1): affine (rotation, scale, shift), appearance
(sharpening, Gaussian blur), contrast (gamma) and noise. Volumes are ``(B, C, D, H, W)``
tensors with intensities in [0, 255]; the output has the same shape, dtype and device and
is clamped to [0, 255].

How and why:

- Parameters are drawn on a CPU ``torch.Generator`` (:func:`draw_params`) and only then
  moved to the volume's device, so a seed gives the same parameters on any device. Every
  value is drawn whether or not its augmentation fires, so switching one augmentation off
  does not change the others' draws.
- The affine part is one ``affine_grid`` + ``grid_sample`` call (trilinear,
  ``align_corners=False``) for every sample that moves. Angles, scale and the centre are
  defined in voxel space (1 voxel = 1 unit on every axis) and converted to grid_sample's
  normalised coordinates, so a rotation stays rigid on non-cubic volumes. Grid coordinates
  are ``(x, y, z) = (W, H, D)``; rotation angles and shifts are given in that order.
  The content is rotated by ``R = Rz Ry Rx`` (ITK's Euler3D "ZYX" order) about the volume
  centre, scaled by ``s`` (> 1 enlarges it) and shifted by ``t``: an output voxel ``v``
  (centred voxel coordinates) samples the input at ``R^T (v - t) / s``.
- The zoom-in crop (off by default; not in the paper) is SimSiam's random resized crop in
  3D: a sub-cube of edge ``c`` (a fraction of the volume's edge, ``zoom``) at a random place
  inside the volume is resampled to the full size, in the same ``grid_sample`` call. Its two
  values are drawn after all the others and only when ``zoom_p`` > 0, so the paper's
  augmentations of a seed are the same with the crop off as before it existed.
- Padding: ``'border'`` (the edge voxel is repeated). The paper pads its crops with the
  background intensity; the crop's own edge is the nearest stand-in we have, while zeros
  would paint black wedges whose shape tells the network the rotation angle.
- Gamma acts on intensities scaled to [0, 1]: ``255 (x / 255) ** gamma``.
- Sharpening is an unsharp mask ``x + a (x - G_sigma * x)`` with ``sigma`` =
  :data:`SHARPEN_SIGMA` voxel (the paper gives no kernel).
- Gaussian blur is separable (three 1D convolutions, grouped so that every sample has its
  own kernel), truncated at ``int(4 sigma + 0.5)`` voxels and with replicated edges, i.e.
  ``scipy.ndimage.gaussian_filter(x, sigma, mode='nearest')``.
- Gaussian noise: for each sample with noise on, a generator on the volume's device is
  seeded from the drawn ``noise_seed``; the noise field is therefore reproducible on a
  given device (its std and which samples get it are the same on every device, the exact
  field differs between CPU and CUDA) and costs no host-to-device copy.
- Order: affine → gamma → sharpen → blur → noise → clamp to [0, 255].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AugmentConfig

SHARPEN_SIGMA = 1.0  # voxels; the blur that the unsharp mask subtracts


@dataclass
class AugmentParams:
    """Per-sample augmentation parameters (all tensors, first dimension B).

    Attributes
    ----------
    rotation
        (B, 3) radians about the x (W), y (H) and z (D) axes.
    scale
        (B,) isotropic scale factor (1 = off).
    shift
        (B, 3) along x, y, z in normalised coordinates (2 = the whole edge; 0 = off).
    zoom
        (B,) edge of the zoom-in crop, a fraction of the volume's edge (1 = off).
    zoom_center
        (B, 3) the crop's centre along x, y, z in the input's normalised coordinates, within
        ``±(1 - zoom)`` so that the crop lies inside the volume (0 = the centre).
    gamma
        (B,) gamma exponent (1 = off).
    sharpen
        (B,) unsharp-mask strength (0 = off).
    blur
        (B,) Gaussian sigma in voxels (0 = off).
    noise
        (B,) noise standard deviation in intensity units of [0, 255] (0 = off).
    noise_seed
        (B,) int64 seed of each sample's noise field.
    """

    rotation: Tensor
    scale: Tensor
    shift: Tensor
    gamma: Tensor
    sharpen: Tensor
    blur: Tensor
    noise: Tensor
    noise_seed: Tensor
    zoom: Tensor
    zoom_center: Tensor

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    @classmethod
    def identity(cls, batch: int) -> AugmentParams:
        """Parameters that leave every sample unchanged."""
        zeros = torch.zeros(batch)
        return cls(
            rotation=torch.zeros(batch, 3),
            scale=torch.ones(batch),
            shift=torch.zeros(batch, 3),
            gamma=torch.ones(batch),
            sharpen=zeros.clone(),
            blur=zeros.clone(),
            noise=zeros.clone(),
            noise_seed=torch.zeros(batch, dtype=torch.int64),
            zoom=torch.ones(batch),
            zoom_center=torch.zeros(batch, 3),
        )


def _uniform(rng: tuple[float, float], shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    low, high = float(rng[0]), float(rng[1])
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def _fires(p: float, batch: int, g: torch.Generator) -> Tensor:
    return torch.rand(batch, generator=g, dtype=torch.float64) < float(p)


def draw_params(cfg: AugmentConfig, batch: int, generator: torch.Generator) -> AugmentParams:
    """Draw independent parameters for ``batch`` samples from a CPU generator.

    Each augmentation fires for a sample with its probability in ``cfg``; otherwise its
    parameter is the neutral value. Raises ValueError for a generator not on the CPU.
    """
    if generator.device.type != "cpu":
        raise ValueError("draw parameters from a CPU torch.Generator, so a seed gives the same views on any device")
    g, b = generator, int(batch)
    rot = torch.deg2rad(_uniform(cfg.rotation, (b, 3), g)) * _fires(cfg.rotation_p, b, g)[:, None]
    scale = torch.where(_fires(cfg.scale_p, b, g), _uniform(cfg.scale, (b,), g), 1.0)
    # a shift of a fraction f of the edge is 2 f in normalised coordinates (edge = 2)
    shift = 2.0 * _uniform(cfg.shift, (b, 3), g) * _fires(cfg.shift_p, b, g)[:, None]
    gamma = torch.where(_fires(cfg.gamma_p, b, g), _uniform(cfg.gamma, (b,), g), 1.0)
    sharpen = _uniform(cfg.sharpen, (b,), g) * _fires(cfg.sharpen_p, b, g)
    blur = _uniform(cfg.blur, (b,), g) * _fires(cfg.blur_p, b, g)
    noise = _uniform(cfg.noise, (b,), g) * _fires(cfg.noise_p, b, g)
    seeds = torch.randint(0, 2**62, (b,), generator=g, dtype=torch.int64)
    f32 = torch.float32
    # drawn last, and only when on: a seed gives the same views as before the crop existed
    zoom, center = _draw_zoom(cfg, b, g) if cfg.zoom_p > 0 else (torch.ones(b), torch.zeros(b, 3))
    return AugmentParams(
        rot.to(f32),
        scale.to(f32),
        shift.to(f32),
        gamma.to(f32),
        sharpen.to(f32),
        blur.to(f32),
        noise.to(f32),
        seeds,
        zoom.to(f32),
        center.to(f32),
    )


def _draw_zoom(cfg: AugmentConfig, b: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Each sample's crop edge (B,) and centre (B, 3); the centre is uniform over the positions
    that keep the crop inside the volume."""
    edge = torch.where(_fires(cfg.zoom_p, b, g), _uniform(cfg.zoom, (b,), g), 1.0)
    center = (1.0 - edge)[:, None] * (2.0 * torch.rand((b, 3), generator=g, dtype=torch.float64) - 1.0)
    return edge, center


def rotation_matrix(angles: Tensor) -> Tensor:
    """(B, 3) angles (radians, about x, y, z) → (B, 3, 3) matrices ``Rz Ry Rx``."""
    a = angles.double()
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows: list[list[Tensor]]) -> Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = mat([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rz = mat([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def affine_theta(params: AugmentParams, size: tuple[int, int, int]) -> Tensor:
    """The (B, 3, 4) ``affine_grid`` matrix (output → input, normalised coordinates).

    ``size`` is the volume's ``(D, H, W)``. Rotation and scale act in voxel space; with
    ``S = diag(2/W, 2/H, 2/D)`` the normalised map is ``c S R^T S^-1 (n - t) / s + o``, where the
    zoom-in crop of edge ``c`` centred at ``o`` is taken last, from the input volume.
    """
    d, h, w = size
    sdiag = torch.tensor([2.0 / w, 2.0 / h, 2.0 / d], dtype=torch.float64)
    rt = rotation_matrix(params.rotation.cpu()).transpose(1, 2)
    a = sdiag[None, :, None] * rt / sdiag[None, None, :] / params.scale.cpu().double()[:, None, None]
    a = a * params.zoom.cpu().double()[:, None, None]
    t = params.zoom_center.cpu().double()[:, :, None] - a @ params.shift.cpu().double()[:, :, None]
    return torch.cat([a, t], dim=2).float()


def _affine(x: Tensor, params: AugmentParams, padding_mode: str) -> Tensor:
    moving = (params.rotation != 0).any(1) | (params.scale != 1) | (params.shift != 0).any(1) | (params.zoom != 1)
    idx = torch.nonzero(moving.cpu()).flatten()
    if len(idx) == 0:
        return x
    sub = AugmentParams(**{f.name: getattr(params, f.name)[idx] for f in dataclasses.fields(params)})
    theta = affine_theta(sub, tuple(x.shape[2:])).to(x.device)
    part = x[idx.to(x.device)]
    grid = F.affine_grid(theta, list(part.shape), align_corners=False)
    warped = F.grid_sample(part, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    out = x.clone()
    out[idx.to(x.device)] = warped
    return out


def gaussian_kernels(sigma: Tensor) -> tuple[Tensor, int]:
    """(n,) sigmas in voxels → (n, 2r+1) normalised 1D kernels on a common support of radius r.

    Each kernel is truncated at its own ``int(4 sigma + 0.5)``, as scipy does.
    """
    sig = sigma.double().cpu()
    radii = (4.0 * sig + 0.5).floor().long().clamp(min=0)
    r = int(radii.max())
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t[None, :] / sig[:, None].clamp(min=1e-12)) ** 2)
    k = k * (t.abs()[None, :] <= radii[:, None])
    return (k / k.sum(1, keepdim=True)).float(), r


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each sample of ``x`` (n, C, D, H, W) with its own sigma (n,) in voxels.

    Separable: three 1D grouped convolutions (one kernel per sample and channel) with
    replicated edges, equal to ``scipy.ndimage.gaussian_filter(mode='nearest')``.
    """
    n, c = x.shape[:2]
    kernels, r = gaussian_kernels(sigma)
    if r == 0:
        return x
    weight = kernels.to(x.device, x.dtype).repeat_interleave(c, dim=0)  # (n*C, K)
    y = x.reshape(1, n * c, *x.shape[2:])
    for axis in range(3):
        shape = [n * c, 1, 1, 1, 1]
        shape[2 + axis] = 2 * r + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r  # F.pad lists the last axis first
        y = F.conv3d(F.pad(y, pad, mode="replicate"), weight.reshape(shape), groups=n * c)
    return y.reshape(x.shape)


def _per_sample(x: Tensor, values: Tensor, fn, neutral: float = 0.0) -> Tensor:
    """Apply ``fn(part, values[idx])`` to the samples whose value is not ``neutral`` (the rest stay as they are)."""
    idx = torch.nonzero(values.cpu() != neutral).flatten()
    if len(idx) == 0:
        return x
    out = x.clone()
    dev_idx = idx.to(x.device)
    out[dev_idx] = fn(x[dev_idx], values.to(x.device)[dev_idx])
    return out


def _gamma(part: Tensor, gamma: Tensor) -> Tensor:
    g = gamma.to(part.dtype).view(-1, 1, 1, 1, 1)
    return 255.0 * (part.clamp(0.0, 255.0) / 255.0) ** g


def _sharpen(part: Tensor, amount: Tensor) -> Tensor:
    blurred = gaussian_blur(part, torch.full((part.shape[0],), SHARPEN_SIGMA))
    return part + amount.view(-1, 1, 1, 1, 1) * (part - blurred)


def _noise(x: Tensor, std: Tensor, seeds: Tensor) -> Tensor:
    idx = torch.nonzero(std.cpu() != 0).flatten().tolist()
    if not idx:
        return x
    out = x.clone()
    for i in idx:
        g = torch.Generator(device=x.device)
        g.manual_seed(int(seeds[i]))
        field = torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype)
        out[i] = x[i] + float(std[i]) * field
    return out


def apply_params(x: Tensor, params: AugmentParams, padding_mode: str = "border") -> Tensor:
    """Augment ``x`` (B, C, D, H, W) in [0, 255] with ``params`` (B samples); same shape, dtype, device.

    Samples whose parameters are all neutral are returned unchanged (bit for bit).
    ``padding_mode`` is grid_sample's ('border' by default, see the module notes).
    """
    if x.dim() != 5:
        raise ValueError(f"augmentation takes a (B, C, D, H, W) tensor; got shape {tuple(x.shape)}")
    if len(params) != x.shape[0]:
        raise ValueError(f"{len(params)} parameter sets for a batch of {x.shape[0]}")
    dtype = x.dtype
    y = x.float()
    y = _affine(y, params, padding_mode)
    y = _per_sample(y, params.gamma, _gamma, neutral=1.0)
    y = _per_sample(y, params.sharpen, _sharpen)
    y = _per_sample(y, params.blur, gaussian_blur)
    y = _noise(y, params.noise, params.noise_seed)
    return y.clamp(0.0, 255.0).to(dtype)  # not in place: y may be the caller's tensor


def augment(x: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Draw per-sample parameters on the CPU ``generator`` and apply them to ``x`` (B, C, D, H, W)."""
    return apply_params(x, draw_params(cfg, x.shape[0], generator))


def two_views(volume: np.ndarray, cfg: AugmentConfig, seed: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Two augmented views of one volume (C, D, H, W) or (D, H, W) in [0, 255], for previews.

    Deterministic for a given ``seed``; returns float32 arrays of the input's shape.
    """
    arr = np.asarray(volume, dtype=np.float32)
    if arr.ndim not in (3, 4):
        raise ValueError(f"a volume must be (D, H, W) or (C, D, H, W); got shape {arr.shape}")
    x = torch.from_numpy(arr if arr.ndim == 4 else arr[None]).to(device)
    g = torch.Generator().manual_seed(int(seed))
    views = augment(torch.stack([x, x]), cfg, g).cpu().numpy()
    if arr.ndim == 3:
        views = views[:, 0]
    return views[0], views[1]


def view_outlines(mask: np.ndarray, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The outline of ``mask`` (D, H, W) in each of :func:`two_views`' views of the same ``seed``.

    The mask moves with the views' draw (rotation, scale, shift: the only augmentations
    that move voxels), resampled at 0.5; the outline is its in-plane edge on every z slice,
    so that a 2D slice and a 3D rendering both show where the region went. Returns two
    uint8 (D, H, W) arrays, 1 on the outline.
    """
    from scipy import ndimage as ndi

    arr = np.asarray(mask) > 0
    if arr.ndim != 3:
        raise ValueError(f"a mask must be (D, H, W); got shape {arr.shape}")
    params = draw_params(cfg, 2, torch.Generator().manual_seed(int(seed)))  # two_views' draw
    x = torch.from_numpy(arr.astype(np.float32))[None, None].expand(2, 1, *arr.shape)
    moved = _affine(x.contiguous(), params, "zeros")[:, 0].numpy() > 0.5
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndi.generate_binary_structure(2, 1)  # erode within each z slice only
    outlines = [(m & ~ndi.binary_erosion(m, plane)).astype(np.uint8) for m in moved]
    return outlines[0], outlines[1]


__all__ = [
    "AugmentParams",
    "SHARPEN_SIGMA",
    "affine_theta",
    "apply_params",
    "augment",
    "draw_params",
    "gaussian_blur",
    "gaussian_kernels",
    "rotation_matrix",
    "two_views",
    "view_outlines",
]

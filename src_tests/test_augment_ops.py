"""Each augmentation against a reference: SimpleITK resampling, scipy's Gaussian filter, closed forms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from napari_ssl_radiomics.config import AugmentConfig
from napari_ssl_radiomics.core.augment import (
    SHARPEN_SIGMA,
    AugmentParams,
    apply_params,
    augment,
    draw_params,
    two_views,
    view_outlines,
)

SHAPE = (24, 28, 32)  # (D, H, W): non-cubic, so an axis mix-up cannot go unnoticed


def smooth_volume(shape=SHAPE) -> np.ndarray:
    """Two anisotropic Gaussian blobs off the centre plus a gentle ramp, in [0, 255]."""
    d, h, w = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    a = np.exp(-(((d - 9) / 4.0) ** 2 + ((h - 18) / 5.0) ** 2 + ((w - 12) / 3.0) ** 2) / 2)
    b = np.exp(-(((d - 15) / 3.0) ** 2 + ((h - 10) / 3.0) ** 2 + ((w - 21) / 6.0) ** 2) / 2)
    return (30 + 180 * a + 120 * b + 1.5 * w).clip(0, 255)


def params(batch: int = 1, **values) -> AugmentParams:
    p = AugmentParams.identity(batch)
    for name, value in values.items():
        setattr(p, name, torch.as_tensor(value, dtype=getattr(p, name).dtype).reshape(getattr(p, name).shape))
    return p


def run(vol: np.ndarray, p: AugmentParams) -> np.ndarray:
    x = torch.from_numpy(vol.astype(np.float32))[None, None]
    return apply_params(x, p)[0, 0].numpy().astype(np.float64)


def sitk_resample(vol: np.ndarray, forward: sitk.Transform) -> np.ndarray:
    """SimpleITK's linear resampling of ``vol`` moved by ``forward`` (a map input → output)."""
    img = sitk.GetImageFromArray(vol)
    out = sitk.Resample(img, img, forward.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    return sitk.GetArrayFromImage(out)


def centre_xyz(shape=SHAPE) -> tuple[float, float, float]:
    d, h, w = shape
    return ((w - 1) / 2, (h - 1) / 2, (d - 1) / 2)


def interior(radius: float, shape=SHAPE) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids)) < radius


@pytest.mark.parametrize(
    "degrees",
    [(15.0, 0.0, 0.0), (0.0, 0.0, -15.0), (0.0, 12.0, 0.0), (10.0, -15.0, 20.0)],
    ids=["about-x(W)", "about-z(D)", "about-y(H)", "all-three"],
)
def test_rotation_matches_simpleitk_euler(degrees):
    vol = smooth_volume()
    rad = np.deg2rad(degrees)
    ours = run(vol, params(rotation=rad))
    euler = sitk.Euler3DTransform(centre_xyz(), *rad, (0.0, 0.0, 0.0))
    euler.SetComputeZYX(True)  # R = Rz Ry Rx, the order documented in augment.py
    ref = sitk_resample(vol, euler)
    inside = interior(10.0)  # rotation about the centre keeps this ball inside the volume
    assert np.abs(ours - ref)[inside].max() < 5e-3
    assert np.abs(ours - vol)[inside].max() > 10  # the rotation did move the content


def test_scale_and_shift_match_simpleitk_affine():
    vol = smooth_volume()
    d, h, w = SHAPE
    scale, frac = 1.2, np.array([0.05, -0.04, 0.03])  # shift as a fraction of each edge (x, y, z)
    rad = np.deg2rad([0.0, 0.0, 8.0])
    ours = run(vol, params(rotation=rad, scale=scale, shift=2 * frac))
    affine = sitk.AffineTransform(3)
    euler = sitk.Euler3DTransform((0, 0, 0), *rad)
    euler.SetComputeZYX(True)
    affine.SetMatrix((scale * np.array(euler.GetMatrix()).reshape(3, 3)).ravel().tolist())
    affine.SetCenter(centre_xyz())
    affine.SetTranslation((frac * np.array([w, h, d])).tolist())
    ref = sitk_resample(vol, affine)
    inside = interior(9.0)
    assert np.abs(ours - ref)[inside].max() < 5e-3
    assert np.abs(ours - vol)[inside].max() > 10


def test_zoom_out_pads_with_the_border_value():
    vol = smooth_volume()
    ours = run(vol, params(scale=0.7))
    # sampling outside the volume repeats the edge voxel: the corner keeps the corner's value
    assert ours[0, 0, 0] == pytest.approx(vol[0, 0, 0], abs=1e-3)


def test_identity_parameters_return_the_input_exactly():
    x = torch.from_numpy(np.stack([smooth_volume(), 255 - smooth_volume()])[:, None].astype(np.float32))
    assert torch.equal(apply_params(x, AugmentParams.identity(2)), x)
    off = AugmentConfig(rotation_p=0, scale_p=0, shift_p=0, gamma_p=0, sharpen_p=0, blur_p=0, noise_p=0)
    assert torch.equal(augment(x, off, torch.Generator().manual_seed(1)), x)


def test_gamma_is_the_closed_form():
    vol = smooth_volume()
    x = torch.from_numpy(np.stack([vol, vol, vol])[:, None].astype(np.float32))
    gammas = [0.7, 1.0, 1.5]
    out = apply_params(x, params(3, gamma=gammas))[:, 0].numpy()
    for got, g in zip(out, gammas):
        np.testing.assert_allclose(got, 255 * (vol.astype(np.float32) / 255) ** g, rtol=1e-5, atol=1e-4)


def test_blur_matches_scipy_gaussian_filter_per_sample_and_channel():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(3, 2, *SHAPE)).astype(np.float32)
    sigmas = [0.8, 0.0, 1.5]
    out = apply_params(torch.from_numpy(x), params(3, blur=sigmas)).numpy()
    for i, s in enumerate(sigmas):
        for c in range(2):
            ref = ndimage.gaussian_filter(x[i, c].astype(np.float64), s, mode="nearest") if s else x[i, c]
            np.testing.assert_allclose(out[i, c], ref, atol=2e-3)


def test_sharpening_is_an_unsharp_mask():
    vol = smooth_volume()
    amount = 0.6
    ours = run(vol, params(sharpen=amount))
    ref = np.clip(vol + amount * (vol - ndimage.gaussian_filter(vol, SHARPEN_SIGMA, mode="nearest")), 0, 255)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_noise_has_the_drawn_std_and_differs_between_samples():
    x = torch.full((3, 1, 32, 32, 32), 128.0)
    p = params(3, noise=[5.0, 0.0, 5.0], noise_seed=[11, 12, 13])
    out = apply_params(x, p)
    residual = (out - 128.0).numpy()
    for i in (0, 2):
        assert residual[i].std() == pytest.approx(5.0, rel=0.03)
        assert abs(residual[i].mean()) < 0.1
    assert np.all(residual[1] == 0)
    assert not np.allclose(residual[0], residual[2])
    assert torch.equal(out, apply_params(x, p))  # same seeds, same field


def test_output_is_clamped_to_the_intensity_range():
    x = torch.full((1, 1, 16, 16, 16), 250.0)
    out = apply_params(x, params(noise=30.0, noise_seed=3))
    assert out.max() <= 255 and out.min() >= 0 and out.max() == 255
    outside = torch.tensor([-5.0, 300.0]).repeat(8 * 8 * 4).reshape(1, 1, 8, 8, 8)
    clamped = apply_params(outside, AugmentParams.identity(1))
    assert clamped.min() == 0 and clamped.max() == 255
    assert outside.max() == 300  # the caller's tensor is left alone


def test_parameters_are_seeded_and_independent_per_sample():
    cfg = AugmentConfig(gamma_p=1, sharpen_p=1, blur_p=1, noise_p=1, zoom_p=1)
    a = draw_params(cfg, 4, torch.Generator().manual_seed(5))
    b = draw_params(cfg, 4, torch.Generator().manual_seed(5))
    c = draw_params(cfg, 4, torch.Generator().manual_seed(6))
    for f in dataclasses.fields(AugmentParams):
        va, vb, vc = (getattr(p, f.name) for p in (a, b, c))
        assert torch.equal(va, vb), f.name
        assert not torch.equal(va, vc), f.name
        assert not torch.equal(va[0], va[1]), f"{f.name}: two samples got the same value"
    assert a.rotation.abs().max() <= np.deg2rad(20) + 1e-6
    assert ((a.scale >= 0.7) & (a.scale <= 1.3)).all()
    assert (a.shift.abs() <= 0.1 + 1e-6).all()  # ±0.05 of the edge = ±0.1 normalised
    assert ((a.gamma >= 0.7) & (a.gamma <= 1.5)).all()


def test_zoom_crop_takes_a_sub_cube_and_resamples_it_to_the_full_size():
    """A crop of edge c centred at o maps output voxel i to input c (i - (n-1)/2) + (n-1)/2 + o n/2
    along each axis of n voxels: exact on a linear ramp."""
    d, h, w = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    vol = 20 + 2.0 * w + 3.0 * h + 1.5 * d
    c, o = 0.5, (0.2, -0.1, 0.3)  # o along x, y, z

    def source(index: np.ndarray, n: int, offset: float) -> np.ndarray:
        return c * (index - (n - 1) / 2) + (n - 1) / 2 + offset * n / 2

    ours = run(vol, params(zoom=c, zoom_center=o))
    ref = 20 + 2.0 * source(w, SHAPE[2], o[0]) + 3.0 * source(h, SHAPE[1], o[1]) + 1.5 * source(d, SHAPE[0], o[2])
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_zoom_crop_lies_inside_the_volume_and_leaves_the_other_draws_alone():
    off = draw_params(AugmentConfig(), 64, torch.Generator().manual_seed(3))
    on = draw_params(AugmentConfig(zoom=(0.4, 0.9), zoom_p=1), 64, torch.Generator().manual_seed(3))
    for f in dataclasses.fields(AugmentParams):
        if not f.name.startswith("zoom"):  # a seed gives the same views as before the crop existed
            assert torch.equal(getattr(off, f.name), getattr(on, f.name)), f.name
    assert (off.zoom == 1).all() and (off.zoom_center == 0).all()
    assert ((on.zoom >= 0.4) & (on.zoom <= 0.9)).all()
    assert (on.zoom_center.abs() <= (1 - on.zoom)[:, None] + 1e-6).all()
    assert on.zoom_center.abs().max() > 0.2  # the centre moves, not only the zoom


def test_probabilities_switch_augmentations_on_and_off():
    cfg = AugmentConfig(gamma_p=0.5, blur_p=0.0, noise_p=1.0)
    p = draw_params(cfg, 400, torch.Generator().manual_seed(0))
    assert (p.blur == 0).all()
    assert (p.noise > 0).all()
    assert 150 < int((p.gamma != 1).sum()) < 250


def test_two_views_are_seeded_and_differ():
    vol = smooth_volume().astype(np.float32)
    a1, a2 = two_views(vol, AugmentConfig(), seed=1)
    b1, b2 = two_views(vol, AugmentConfig(), seed=1)
    c1, _ = two_views(vol, AugmentConfig(), seed=2)
    assert a1.shape == vol.shape and a1.dtype == np.float32
    assert np.array_equal(a1, b1) and np.array_equal(a2, b2)
    assert not np.allclose(a1, a2)
    assert not np.allclose(a1, c1)
    m1, m2 = two_views(np.stack([vol, vol]), AugmentConfig(), seed=1)
    assert m1.shape == (2, *SHAPE)
    with pytest.raises(ValueError, match="shape"):
        two_views(vol[0], AugmentConfig(), seed=1)


def test_view_outlines_follow_each_views_rotation_scale_and_shift():
    """The outline drawn over a view is the edge of where that view's draw moved the mask."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[8:16, 9:19, 10:22] = 1  # a box well inside the volume (no padding reaches it)
    image = (mask * 200).astype(np.float32)
    # only the moving augmentations, strong enough that the two draws differ
    cfg = AugmentConfig(gamma_p=0.0, sharpen_p=0.0, blur_p=0.0, noise_p=0.0, rotation=(-15.0, 15.0))
    views = two_views(image, cfg, seed=3)
    outlines = view_outlines(mask, cfg, seed=3)
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    for view, outline in zip(views, outlines):
        moved = view > 100
        expected = moved & ~ndimage.binary_erosion(moved, plane)
        assert outline.dtype == np.uint8 and outline.shape == SHAPE
        assert (outline.astype(bool) ^ expected).sum() <= 0.02 * expected.sum()  # resampling at the edge
    assert not np.array_equal(outlines[0], outlines[1])  # each view's own draw
    assert not np.array_equal(outlines[0], mask & ~ndimage.binary_erosion(mask, plane))  # moved, not the input's

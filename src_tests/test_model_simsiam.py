"""The encoder of Table 3, the predictor, and the loss of Eq. (1)-(2) with its stop-gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_ssl_radiomics.core.model import (
    Encoder,
    Predictor,
    SimSiam3D,
    collapse_metric,
    simsiam_loss,
    weighted_mean,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("channels", "shape"),
    [(1, (27, 27, 27)), (1, (32, 32, 32)), (1, (27, 30, 33)), (4, (28, 28, 28))],
)
def test_encoder_output_shape(channels, shape):
    enc = Encoder(in_channels=channels)
    x = torch.rand(2, channels, *shape) * 255
    assert enc(x).shape == (2, 256)


def test_encoder_rejects_too_small_input_naming_the_size():
    enc = Encoder()
    with pytest.raises(ValueError, match=r"26 voxels.*at least 27"):
        enc(torch.rand(2, 1, 32, 26, 32))
    with pytest.raises(ValueError, match="built for 1 channel"):
        enc(torch.rand(2, 3, 32, 32, 32))


def test_encoder_pooling_follows_table3():
    """96 → 32 → 10 → 3 through the encoder's three max-pools, as in Table 3."""
    pools = [m for m in Encoder().features if isinstance(m, torch.nn.MaxPool3d)]
    x, sizes = torch.zeros(1, 1, 96, 96, 96), []
    for pool in pools:  # the convolutions keep the size ('same' padding), checked above
        x = pool(x)
        sizes.append(x.shape[-1])
    assert sizes == [32, 10, 3]


def test_parameter_count_matches_table3_by_hand():
    def conv(cin, cout, k):  # no bias (BN follows) + BN's weight and bias
        return cin * cout * k**3 + 2 * cout

    block = conv(32, 32, 1) + conv(32, 32, 3) + conv(32, 32, 1)
    for c in (1, 4):
        by_hand = (
            conv(c, 32, 3)
            + 2 * block
            + conv(32, 64, 3)
            + conv(64, 128, 3)
            + conv(128, 256, 3)
            + 256 * 324
            + 2 * 324  # dense7 (no bias) + BN
            + 324 * 256
            + 256  # dense8
        )
        assert sum(p.numel() for p in Encoder(in_channels=c).parameters()) == by_hand
    predictor = 256 * 64 + 2 * 64 + 64 * 256 + 256
    assert sum(p.numel() for p in Predictor().parameters()) == predictor


def test_simsiam_forward_shapes_and_out_bn_variant():
    model = SimSiam3D(in_channels=2)
    x1, x2 = torch.rand(2, 2, 27, 27, 27), torch.rand(2, 2, 27, 27, 27)
    p1, p2, z1, z2 = model(x1, x2)
    assert all(t.shape == (2, 256) for t in (p1, p2, z1, z2))
    bn = Encoder(out_bn=True)
    z = bn(torch.rand(3, 1, 27, 27, 27))
    # a BatchNorm without affine parameters standardises every dimension over the batch
    assert torch.allclose(z.mean(0), torch.zeros(256), atol=1e-5)


def test_loss_is_negative_cosine_by_hand():
    rng = np.random.default_rng(1)
    p1, p2, z1, z2 = (rng.normal(size=(4, 5)) for _ in range(4))

    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    expected = -0.5 * cos(p1, z2) - 0.5 * cos(p2, z1)
    got = simsiam_loss(*(torch.from_numpy(a) for a in (p1, p2, z1, z2)))
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    same = torch.from_numpy(p1)
    assert torch.allclose(simsiam_loss(same, same, same, same), -torch.ones(4, dtype=torch.float32))


def test_stop_gradient_follows_eq2():
    """S(p1, z2) alone sends gradient to x1's encoder path and none to x2's; and vice versa."""
    model = SimSiam3D()
    x1 = (torch.rand(2, 1, 27, 27, 27) * 255).requires_grad_()
    x2 = (torch.rand(2, 1, 27, 27, 27) * 255).requires_grad_()
    p1, p2, z1, z2 = model(x1, x2)

    def grads(loss):
        g1, g2 = torch.autograd.grad(loss, [x1, x2], retain_graph=True, allow_unused=True)
        norm = lambda g: 0.0 if g is None else float(g.abs().sum())  # noqa: E731
        return norm(g1), norm(g2)

    first = simsiam_loss(p1, p2.detach(), z1, z2).sum()  # only S(p1, sg(z2)) can carry gradient
    g1, g2 = grads(first)
    assert g1 > 0 and g2 == 0
    second = simsiam_loss(p1.detach(), p2, z1, z2).sum()  # only S(p2, sg(z1))
    g1, g2 = grads(second)
    assert g1 == 0 and g2 > 0
    g1, g2 = grads(simsiam_loss(p1, p2, z1, z2).sum())
    assert g1 > 0 and g2 > 0
    # the test-only switch: without the stop-gradient, S(p1, z2) also reaches x2 through z2
    g1, g2 = grads(simsiam_loss(p1, p2.detach(), z1, z2, stop_gradient=False).sum())
    assert g1 > 0 and g2 > 0


def test_export_layers_and_predictor_width():
    model = SimSiam3D(pred_hidden=32, export="backbone").eval()
    x = torch.rand(3, 1, 27, 27, 27) * 255
    with torch.no_grad():
        pooled = model.encoder.backbone(x)
        assert torch.equal(model.encoder.represent(x), pooled)  # the global pool, before dense7
        assert torch.equal(model.encoder(x), model.encoder.head(pooled))  # the loss still sees dense8
    assert pooled.shape == (3, 256) and model.predictor.net[0].out_features == 32
    head = SimSiam3D().eval()
    with torch.no_grad():
        assert torch.equal(head.encoder.represent(x), head.encoder(x))  # the default exports dense8
    with pytest.raises(ValueError, match="export"):
        SimSiam3D(export="dense7")


def test_weighted_mean():
    losses = torch.tensor([0.5, -0.2, 0.1, -0.9])
    w = torch.tensor([1.0, 2.0, 4.0, 1.0])
    assert float(weighted_mean(losses, w)) == pytest.approx(float((w * losses).sum() / w.sum()))
    assert float(weighted_mean(losses, np.array([1.0, 2.0, 4.0, 1.0]))) == pytest.approx((0.5 - 0.4 + 0.4 - 0.9) / 8)
    assert float(weighted_mean(losses, None)) == pytest.approx(float(losses.mean()))
    with pytest.raises(ValueError, match="shape"):
        weighted_mean(losses, torch.ones(3))
    with pytest.raises(ValueError, match="sum"):
        weighted_mean(losses, torch.zeros(4))


def test_collapse_metric():
    torch.manual_seed(3)
    collapsed = torch.randn(1, 256).repeat(64, 1)
    assert collapse_metric(collapsed) < 1e-6
    healthy = torch.randn(2048, 256)
    assert collapse_metric(healthy) == pytest.approx(1 / math.sqrt(256), rel=0.03)
    assert math.isnan(collapse_metric(torch.randn(1, 256)))

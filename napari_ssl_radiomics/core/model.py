"""The 3D encoder of the paper (supplementary Table 3) and the 3DSiam network around it.

Shapes: volumes are ``(B, C, D, H, W)`` float tensors (intensities in [0, 255] from the
prepared cache); representations are ``(B, dim)``.

Choices where the paper is silent (the authors never published their 3DSiam code):

- Every convolution is followed by batch normalisation and ReLU (Table 3 writes "bn, relu"
  only for conv4-6; we add them after conv1 and inside the residual blocks as in a ResNet
  bottleneck). Convolutions followed by BN carry no bias.
- Residual blocks are ResNet bottlenecks: 1³ → 3³ → 1³ convolutions (32 channels each, the
  last one with BN but no ReLU), added to the block's input, then ReLU.
- Max-pooling is kernel 3, stride 3 (Table 3: 96 → 32 → 10 → 3, i.e. floor(n / 3)).
- "glob" is global *average* pooling.
- dense7 (324, bn) is Linear → BN → ReLU, the hidden layer of SimSiam's projector; the ReLU
  is ours (without it dense7 and dense8 would collapse into one linear map).
- dense8 (256) is a plain Linear with bias, as Table 3 writes it ("256", no bn). SimSiam's
  projector ends with a BN without affine parameters; ``out_bn=True`` gives that variant.
  We follow the table by default because its output is the exported representation:
  without a final BN its scale does not depend on batch statistics.
- Predictor as in SimSiam: Linear → BN → ReLU → Linear, bottleneck ``pred_hidden`` (64 for
  d = 256 by default), no BN on its output.
- Two layers can be exported as a case's representation (``export``): "head" is dense8,
  the encoder's output that Table 3 and the paper export; "backbone" is the 256-d global
  pool before dense7/dense8. Both are 256-d. SimSiam's loss acts on the head's output, so
  the head is where dimensional collapse shows first; the backbone keeps more of the
  cohort's variation (see benchmarks/README.md, "Representation quality").
- Loss as in SimSiam: ``-(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2`` per sample (Eq. 1-2),
  where the paper's E_f is the same encoder with its output detached (stop-gradient).
- The two views pass the encoder in two separate calls, so batch-norm statistics never
  mix the views (as in SimSiam's reference code).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(cin: int, cout: int, kernel: int, relu: bool = True) -> nn.Sequential:
    """Convolution ('same' padding, stride 1, no bias) → BN3d (→ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Residual block [1³ c, 3³ c, 1³ c] with an identity shortcut (Table 3, blocks 2-3)."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(channels, channels, 1),
            conv_bn(channels, channels, 3),
            conv_bn(channels, channels, 1, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class Encoder(nn.Module):
    """The paper's 3D encoder (supplementary Table 3).

    Parameters
    ----------
    in_channels
        Image channels (modalities, e.g. 4 for FLAIR/T1/T1c/T2).
    dim
        Size of the output representation (dense8), 256 in the paper.
    hidden
        Size of dense7, 324 in the paper.
    out_bn
        End with a BatchNorm1d without affine parameters (SimSiam's projector) instead of
        Table 3's plain dense layer.
    export
        The representation :meth:`represent` returns: "head" (dense8, the forward output)
        or "backbone" (the 256-d global pool before the head).

    Notes
    -----
    Input ``(B, C, D, H, W)``; any edge of at least :attr:`MIN_SIZE` = 27 voxels works (the
    three stride-3 max-pools need 27 → 9 → 3 → 1); the edges need not be equal. Output
    ``(B, dim)``. In training mode, batch norm needs ``B >= 2``.
    """

    MIN_SIZE = 27
    EXPORTS = ("head", "backbone")

    def __init__(
        self, in_channels: int = 1, dim: int = 256, hidden: int = 324, out_bn: bool = False, export: str = "head"
    ) -> None:
        super().__init__()
        if export not in self.EXPORTS:
            raise ValueError(f"export = {export!r}; choose one of {list(self.EXPORTS)}")
        self.in_channels = in_channels
        self.export = export
        self.features = nn.Sequential(
            conv_bn(in_channels, 32, 3),  # conv1
            Bottleneck(32),  # residual block 2
            Bottleneck(32),  # residual block 3
            nn.MaxPool3d(3),  # 96 -> 32
            conv_bn(32, 64, 3),  # conv4
            nn.MaxPool3d(3),  # 32 -> 10
            conv_bn(64, 128, 3),  # conv5
            nn.MaxPool3d(3),  # 10 -> 3
            conv_bn(128, 256, 3),  # conv6
            nn.AdaptiveAvgPool3d(1),  # glob
            nn.Flatten(),
        )
        head: list[nn.Module] = [
            nn.Linear(256, hidden, bias=False),  # dense7
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
        ]
        if out_bn:
            head += [nn.Linear(hidden, dim, bias=False), nn.BatchNorm1d(dim, affine=False)]
        else:
            head.append(nn.Linear(hidden, dim))  # dense8
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        """dense8, ``(B, dim)``: the output the SimSiam loss is computed on."""
        return self.head(self.backbone(x))

    def represent(self, x: Tensor) -> Tensor:
        """The exported representation (``export``): dense8 or the global pool, ``(B, 256)``."""
        pooled = self.backbone(x)
        return pooled if self.export == "backbone" else self.head(pooled)

    def backbone(self, x: Tensor) -> Tensor:
        """The global-pool features ``(B, 256)`` after checking the input's shape."""
        if x.dim() != 5:
            raise ValueError(f"the encoder takes a (B, C, D, H, W) tensor; got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the encoder was built for {self.in_channels} channel(s); the input has {x.shape[1]}")
        small = min(x.shape[2:])
        if small < self.MIN_SIZE:
            raise ValueError(
                f"input edge {small} voxels (shape {tuple(x.shape[2:])}) is too small for the encoder: "
                f"its three max-pools need at least {self.MIN_SIZE} voxels per edge; prepare larger crops"
            )
        return self.features(x)


class Predictor(nn.Module):
    """SimSiam's predictor: Linear → BN → ReLU → Linear, a bottleneck MLP (B, dim) → (B, dim)."""

    def __init__(self, dim: int = 256, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class SimSiam3D(nn.Module):
    """3DSiam: one encoder shared by both views, and a predictor on the active branch.

    ``forward(x1, x2)`` returns ``(p1, p2, z1, z2)``, each ``(B, dim)``: ``z = encoder(x)``
    (the representation that is exported), ``p = predictor(z)``. The stop-gradient of the
    paper's frozen encoder E_f is applied in :func:`simsiam_loss`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 256,
        pred_hidden: int = 64,
        out_bn: bool = False,
        export: str = "head",
    ) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, dim, out_bn=out_bn, export=export)
        self.predictor = Predictor(dim, pred_hidden)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z1 = self.encoder(x1)
        z2 = self.encoder(x2)
        return self.predictor(z1), self.predictor(z2), z1, z2


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, stop_gradient: bool = True) -> Tensor:
    """Symmetric negative cosine similarity of Eq. (1)-(2), one value per sample.

    ``l_i = -(cos(p1_i, sg(z2_i)) + cos(p2_i, sg(z1_i))) / 2`` with ``sg`` the stop-gradient,
    so each view's encoder pass gets gradient only through its own predictor output. All
    inputs ``(B, d)``; returns ``(B,)`` in [-1, 1], computed in float32. ``stop_gradient=False``
    is for tests only: without it SimSiam collapses (Chen & He 2021, Fig. 2).
    """

    def term(p: Tensor, z: Tensor) -> Tensor:
        target = z.detach() if stop_gradient else z
        return -F.cosine_similarity(p.float(), target.float(), dim=1)

    return 0.5 * term(p1, z2) + 0.5 * term(p2, z1)


def variance_covariance(z: Tensor, eps: float = 1e-4) -> Tensor:
    """VICReg's variance and covariance terms of a batch ``z`` (B, d), one scalar (Bardes et al. 2022).

    ``v = mean_j relu(1 - sqrt(var_j + eps))`` keeps every dimension's batch standard deviation
    at 1 or more; ``c = sum_{i != j} cov_ij^2 / d`` decorrelates the dimensions. Returns
    ``v + c / 25``: VICReg's weights (variance 25, covariance 1) relative to the variance term.
    Computed in float32; needs B >= 2.
    """
    z = z.float()
    b, d = z.shape
    if b < 2:
        raise ValueError(f"the variance-covariance term needs a batch of 2 or more; got {b}")
    variance = F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (b - 1)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return variance + off_diagonal / d / 25.0


def weighted_mean(losses: Tensor, weights: Tensor | None = None) -> Tensor:
    """``sum(w_i l_i) / sum(w_i)`` over the batch; the plain mean when ``weights`` is None.

    ``losses`` and ``weights`` are ``(B,)``; weights may be any array-like and are moved to
    the losses' device. Raises ValueError on a shape mismatch or (on the CPU) a non-positive
    weight sum.
    """
    if weights is None:
        return losses.mean()
    w = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)
    if w.shape != losses.shape:
        raise ValueError(f"weights have shape {tuple(w.shape)}; the losses have {tuple(losses.shape)}")
    total = w.sum()
    # checked only on the CPU: reading a GPU value back would stall the training step
    if total.device.type == "cpu" and not float(total) > 0:
        raise ValueError(f"the weights sum to {float(total)}; they must sum to a positive number")
    return (w * losses).sum() / total


def collapse_metric(z: Tensor) -> float:
    """Mean over dimensions of the batch standard deviation of the L2-normalised ``z`` (B, d).

    About ``1 / sqrt(d)`` (0.0625 for d = 256) for healthy, spread-out outputs; 0 when the
    network has collapsed to a constant. NaN for a batch of one (no spread to measure).
    """
    if z.shape[0] < 2:
        return math.nan
    zn = F.normalize(z.detach().float(), dim=1)
    return float(zn.std(dim=0).mean())

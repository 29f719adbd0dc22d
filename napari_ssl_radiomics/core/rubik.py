"""The Rubik's-cube pretext task (Zhuang et al., MICCAI 2019), the baseline of the paper's Table 2.

The same :class:`model.Encoder` as 3DSiam is trained to solve a scrambled 2×2×2 Rubik's
cube; the classifier head on top is discarded at export, so a Rubik run exports the same
256-d features (dense8, or the backbone pool per ``export``) and embeds, combines and
evaluates exactly as a 3DSiam run does.

Shapes: a batch of crops is ``(B, C, S, S, S)``; its sub-cubes ``(B, 8, C, c, c, c)`` in
grid order (index ``4 * d + 2 * h + w`` of the cell at ``(d, h, w)`` in {0, 1}³).

Choices the two papers leave open (the 3DSiam paper gives only the row of Table 2; Zhuang
et al. give the task, not every size):

- Sub-cubes with a random gap. The crop is cut into 2×2×2 cells of edge ``S // 2``; each
  sub-cube of edge ``c = S // 2 - g`` is taken at a random offset in ``[0, g]`` per axis
  inside its cell, independently per cube and case, so neighbouring cubes are separated by
  a random gap and the task cannot be solved from the continuity of edges (the paper's
  motivation for its gap). ``g = round(rubik_gap * S / 2)``, at least 1 voxel: 2 for 28³
  or 32³ crops, 6 for 96³.
- The encoder needs edges of at least ``Encoder.MIN_SIZE`` = 27 voxels (three stride-3
  pools), more than half of a 28³ or 32³ crop. A sub-cube smaller than that is resized to
  27³ (trilinear) before the encoder: it sees each half of the crop magnified about twice,
  the whole crop at export. At 96³ crops (the paper's size) no resizing is needed.
- Permutations: K = ``rubik_permutations`` (100, as in the paper) of the 8 cubes chosen
  greedily for maximal Hamming distance, the selection of Noroozi & Favaro's jigsaw that
  Zhuang et al. follow. The criterion is the minimum distance to the chosen set (max–min,
  so the set's minimum distance is guaranteed: 6 of 8 for K = 100, 8 for K <= 8); the
  start is the identity and ties go to the first permutation in lexicographic order, so
  the set is deterministic and needs no seed. Output slot ``j`` holds cube ``P[j]``.
- Rotations: Zhuang et al. allow each cube a 180° rotation in the horizontal or the
  vertical direction, one GT vector of 16 (8 cubes × 2 directions) with at most one 1 per
  cube, predicted by 16 sigmoids. Here "horizontal" is 180° about the depth axis (the
  in-plane rotation of axial slices: H and W reversed) and "vertical" is 180° about the W
  axis (D and H reversed); each cube is left as it is, rotated horizontally or vertically
  with probability 1/3 each (both at once would be a third rotation the labels cannot say).
  The flags refer to output slots (the cube found at slot ``j``).
- Augmentation: the crop gets one view of the run's 3D augmentation before it is cut, the
  same data diversity as 3DSiam's views (Zhuang et al. use none besides the task).
- Head: the 8 cubes' dense8 outputs (256 each) are concatenated in slot order and passed
  to Linear(2048, 512) → ReLU (no batch norm: over the B cases of a batch, 6 in the paper,
  its statistics are noise), then to a K-way permutation layer and a 16-way rotation layer. Loss per case: ``CE(permutation) + mean BCE(16 rotation flags)``, weights 1 and 1.
  Both terms are per case, so RE's weights and SE's selection (k-means on the encoder's
  un-augmented features, as for 3DSiam) apply unchanged.
- Every random draw (permutation class, flags, offsets) comes from the run's checkpointed
  augmentation generator, so a resumed run continues the same sequence.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Encoder

#: sub-cubes of the 2×2×2 puzzle
CUBES = 8
#: rotation directions per cube (horizontal, vertical): 2 sigmoid outputs each
DIRECTIONS = 2
#: (dims reversed by each direction) in a (B, C, D, H, W) cube: 180° about D, 180° about W
_ROTATION_DIMS = ((-2, -1), (-3, -2))


@lru_cache(maxsize=8)
def permutation_set(k: int) -> np.ndarray:
    """``k`` permutations of 8 with maximal minimum Hamming distance, greedily chosen, ``(k, 8)``.

    Deterministic: the identity first, then at each step the permutation farthest (in
    minimum Hamming distance) from those chosen, the first in lexicographic order on ties.
    """
    every = np.array(list(itertools.permutations(range(CUBES))), dtype=np.int8)
    if not 1 <= k <= len(every):
        raise ValueError(f"rubik_permutations = {k}; choose between 1 and {len(every)}")
    chosen = [0]
    nearest = (every != every[0]).sum(axis=1)  # each permutation's distance to the chosen set
    for _ in range(k - 1):
        best = int(np.argmax(nearest))
        chosen.append(best)
        nearest = np.minimum(nearest, (every != every[best]).sum(axis=1))
    return every[chosen].copy()


def min_distance(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two rows of ``perms`` (k, 8)."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(axis=2)
    np.fill_diagonal(d, CUBES + 1)
    return int(d.min())


def cube_geometry(size: int, gap: float) -> tuple[int, int]:
    """``(cube edge, maximal offset)`` of the sub-cubes of a ``size``³ crop (see module docstring)."""
    cell = size // 2
    offset = max(1, round(gap * cell))
    edge = cell - offset
    if edge < 4:
        raise ValueError(
            f"crops of {size}³ voxels leave sub-cubes of {edge}³ with rubik_gap = {gap}; "
            "prepare larger crops or lower --rubik-gap"
        )
    return edge, offset


def cut_cubes(x: Tensor, edge: int, offsets: Tensor) -> Tensor:
    """The 8 sub-cubes of ``x`` (B, C, S, S, S), ``(B, 8, C, edge, edge, edge)`` in grid order.

    ``offsets`` (B, 8, 3) integers: each cube's offset inside its cell of edge ``S // 2``.
    """
    cell = x.shape[-1] // 2
    cubes = []
    for b in range(x.shape[0]):
        row = []
        for i, (d, h, w) in enumerate(itertools.product((0, 1), repeat=3)):
            od, oh, ow = (int(v) for v in offsets[b, i])
            sd, sh, sw = d * cell + od, h * cell + oh, w * cell + ow
            row.append(x[b, :, sd : sd + edge, sh : sh + edge, sw : sw + edge])
        cubes.append(torch.stack(row))
    return torch.stack(cubes)


def rotate(cube: Tensor, direction: int) -> Tensor:
    """``cube`` (..., D, H, W) rotated 180° in ``direction`` (0 horizontal, 1 vertical); its own inverse."""
    return torch.flip(cube, _ROTATION_DIMS[direction])


def scramble(cubes: Tensor, perms: Tensor, rotations: Tensor) -> Tensor:
    """Shuffle and rotate the cubes (B, 8, C, c, c, c): slot ``j`` gets cube ``perms[b, j]``,
    rotated per ``rotations[b, j]`` (two 0/1 flags, at most one set)."""
    out = torch.stack([cubes[b, perms[b]] for b in range(cubes.shape[0])])
    return _apply_rotations(out, rotations)


def unscramble(scrambled: Tensor, perms: Tensor, rotations: Tensor) -> Tensor:
    """The inverse of :func:`scramble` given its labels: the cubes in grid order, unrotated."""
    cubes = _apply_rotations(scrambled, rotations)
    out = torch.empty_like(cubes)
    for b in range(cubes.shape[0]):
        out[b, perms[b]] = cubes[b]
    return out


def _apply_rotations(cubes: Tensor, rotations: Tensor) -> Tensor:
    rows = []
    for b in range(cubes.shape[0]):
        slots = []
        for j in range(CUBES):
            cube = cubes[b, j]
            for direction in range(DIRECTIONS):
                if rotations[b, j, direction]:
                    cube = rotate(cube, direction)
            slots.append(cube)
        rows.append(torch.stack(slots))
    return torch.stack(rows)


def make_puzzle(x: Tensor, perm_set: Tensor, gap: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """One scrambled puzzle per crop of ``x`` (B, C, S, S, S).

    Returns
    -------
    cubes : ``(B, 8, C, e, e, e)`` scrambled, with ``e = max(c, Encoder.MIN_SIZE)``
    labels : ``(B,)`` the permutation class (row of ``perm_set``)
    rotations : ``(B, 8, 2)`` float 0/1 flags of the cube at each slot
    """
    b = x.shape[0]
    edge, offset = cube_geometry(x.shape[-1], gap)
    offsets = torch.randint(0, offset + 1, (b, CUBES, 3), generator=generator)
    labels = torch.randint(0, len(perm_set), (b,), generator=generator)
    kind = torch.randint(0, DIRECTIONS + 1, (b, CUBES), generator=generator)  # 0 none, 1 horizontal, 2 vertical
    rotations = F.one_hot(kind, DIRECTIONS + 1)[..., 1:].to(torch.float32)
    cubes = scramble(cut_cubes(x, edge, offsets), perm_set[labels], rotations)
    if edge < Encoder.MIN_SIZE:  # the encoder's pools need 27 voxels per edge (module docstring)
        flat = cubes.flatten(0, 1)
        flat = F.interpolate(flat, size=(Encoder.MIN_SIZE,) * 3, mode="trilinear", align_corners=False)
        cubes = flat.unflatten(0, (b, CUBES))
    device = x.device
    return cubes, labels.to(device), rotations.to(device)


class RubikNet(nn.Module):
    """The shared encoder (8 siamese branches: one batched pass) and the puzzle's classifier.

    ``forward(cubes)`` takes the puzzles' cubes flattened case by case, ``(8B, C, e, e, e)``
    (flat, so that the training run can lay them out as channels_last_3d), and returns
    ``(perm_logits (B, K), rotation_logits (B, 16), z (8B, dim))``; ``z`` is the cubes'
    dense8. Only :attr:`encoder` is exported.
    """

    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 256,
        out_bn: bool = False,
        export: str = "head",
        permutations: int = 100,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, dim, out_bn=out_bn, export=export)
        # no batch norm here: its statistics would come from B cases only (the paper's batch 6)
        self.classifier = nn.Sequential(nn.Linear(CUBES * dim, hidden), nn.ReLU(inplace=True))
        self.permutation = nn.Linear(hidden, permutations)
        self.rotation = nn.Linear(hidden, CUBES * DIRECTIONS)

    def forward(self, cubes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if cubes.shape[0] % CUBES:
            raise ValueError(f"RubikNet takes {CUBES} cubes per case, flattened; got {cubes.shape[0]} cubes")
        z = self.encoder(cubes)
        h = self.classifier(z.reshape(cubes.shape[0] // CUBES, -1))
        return self.permutation(h), self.rotation(h), z


def rubik_loss(perm_logits: Tensor, rot_logits: Tensor, labels: Tensor, rotations: Tensor) -> Tensor:
    """Per case ``CE(permutation) + mean BCE(rotation flags)``, ``(B,)`` in float32."""
    ce = F.cross_entropy(perm_logits.float(), labels, reduction="none")
    bce = F.binary_cross_entropy_with_logits(rot_logits.float(), rotations.flatten(1).float(), reduction="none")
    return ce + bce.mean(dim=1)

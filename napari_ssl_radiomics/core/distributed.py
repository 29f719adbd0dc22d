"""Training on several processes under ``torchrun``: DistributedDataParallel with one global batch.

``torchrun --nproc-per-node N -m napari_ssl_radiomics train CACHE --out RUN ...`` starts N
copies of the training; each reads its rank from the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, set by torchrun) and :func:`context` joins them in one process group
(gloo for CPU tensors, NCCL for CUDA ones). Without torchrun the context is a single rank
and every helper here is the identity, so one-process training is unchanged to the bit.

How a step is shared (the choices, and why):

- **One global batch.** Every rank runs the same seeded sampler over the whole cohort, so
  every rank knows the global batch of ``N x m`` cases (``m = TrainConfig.batch_size``,
  the per-rank batch). Rank r trains on the r-th contiguous share (:meth:`Context.share`).
  The sequence of global batches is the one a single process draws with batch ``N x m``.
- **RE/SE on the global batch.** SE's default pool is sized for the global batch
  (:func:`.imbalance.default_pool`), so that SE still selects when the batch grows with N.
  The candidates (RE: the global batch; SE: the pool) are encoded in shares, one per
  rank, and all-gathered in order (:meth:`Context.gather_rows`), so the same seeded
  k-means runs on the same features on every rank and every rank selects the same cases
  and weights. A digest of the selection is compared across ranks
  (:meth:`Context.check_same`), and a disagreement stops the run with an error rather than
  training different batches silently.
- **The loss** of rank r is ``N * sum_r(w l) / sum_all(w)`` (:meth:`Context.local_loss`):
  DDP averages the gradients over the N ranks, which gives the gradient of the global
  batch's weighted loss ``sum_all(w l) / sum_all(w)``, exactly as one process would. The
  logged loss is the global one (the mean over ranks of the rank losses).
- **Batch norm.** On CUDA the model's BatchNorm layers become ``SyncBatchNorm``: the
  statistics are those of the global batch, as in one process. On the CPU (gloo) PyTorch
  has no SyncBatchNorm, so each rank normalises with the statistics of its own m cases,
  and DDP copies rank 0's running averages to the others at every forward. The loss then
  differs slightly from a one-process run with the same global batch (BN over m instead of
  N x m cases), which the tests measure.
- **Augmentation** draws come from a generator seeded with (seed, rank), so ranks augment
  their shares independently; the checkpoint keeps every rank's generator state, so a
  resume with the same N continues each rank's stream.
- **Rank 0 alone writes** the checkpoint, the history table, the run's recorded config and the progress bar;
  the others wait at a barrier, so no rank runs ahead of a checkpoint being written.
- **Stopping.** A stop request (Ctrl-C) on any rank stops every rank at the same step
  (:meth:`Context.any`), or the ranks would wait on each other for ever.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether several processes train together."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and shows progress."""
        return self.rank == 0

    # -- devices and the model --

    def device(self, device: torch.device) -> torch.device:
        """``cuda`` becomes this process's GPU (``cuda:LOCAL_RANK``); other devices stay."""
        if self.active and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to call for training steps: ``model`` itself, or a DDP wrapper of it.

        On CUDA the BatchNorm layers of ``model`` are first replaced by SyncBatchNorm (in
        place: ``model`` keeps its parameters and its state_dict keys).
        """
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            _sync_batchnorm_in_place(model)
            return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
        return DistributedDataParallel(model)

    # -- the global batch --

    def share(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` items (the shares of ranks 0..N-1 in
        order make up all of them; sizes differ by at most one)."""
        bounds = np.linspace(0, count, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def gather_rows(self, encode: Callable[[np.ndarray], np.ndarray], positions: np.ndarray) -> np.ndarray:
        """``encode(positions)`` for all positions, each rank encoding its share.

        Parameters
        ----------
        encode : positions (n,) -> features (n, d) float32
        positions : (N,) the same on every rank

        Returns
        -------
        (N, d) float32, identical on every rank, rows in the order of ``positions``
        """
        if not self.active:
            return encode(positions)
        import torch.distributed as dist

        mine = positions[self.share(len(positions))]
        local = encode(mine) if len(mine) else None
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, local)
        return np.concatenate([p for p in parts if p is not None]).astype(np.float32, copy=False)

    def local_loss(self, losses: torch.Tensor, weights: torch.Tensor | None, total_weight: float) -> torch.Tensor:
        """This rank's loss: ``N * sum(w l) / total_weight`` (see the module docstring).

        Parameters
        ----------
        losses : (b,) per-sample losses of this rank's share
        weights : (b,) this share's weights, or None for equal weights
        total_weight : the sum of the weights over the global batch (its size when equal)
        """
        summed = losses.sum() if weights is None else (weights * losses).sum()
        return summed * (self.world / total_weight)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (``value`` itself on one rank)."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def check_same(self, what: str, values: Any) -> None:
        """Raise RuntimeError when ``values`` (e.g. the selected cases) differ between ranks."""
        if not self.active:
            return
        import torch.distributed as dist

        digest = hashlib.sha256(repr(values).encode()).hexdigest()
        digests: list[Any] = [None] * self.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"the ranks disagree on {what} (rank digests {digests}); every rank must read the same cache "
                "with the same settings and seed"
            )

    def gather_object(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order (``[value]`` on one rank)."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (e.g. building a cache file once)."""
        if not self.active:
            return fn()
        if self.is_main:
            value = fn()
            self.barrier()
            return value
        self.barrier()
        return fn()


def _sync_batchnorm_in_place(model: torch.nn.Module) -> None:
    for name, child in model.named_children():
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
        if converted is not child:
            setattr(model, name, converted)


_CONTEXT: Context | None = None


def context() -> Context:
    """This process's :class:`Context`, joining torchrun's process group on first use.

    The environment of ``torchrun`` (``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``) selects distributed training; without it, rank 0 of 1.
    The backend is gloo for CPU tensors and NCCL for CUDA tensors where NCCL exists.
    """
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CONTEXT = Context()
        return _CONTEXT
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_leave)
    _CONTEXT = Context(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    return _CONTEXT


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def augment_seed(seed: int, rank: int) -> int:
    """The augmentation generator's seed of a rank: ``seed`` itself on rank 0 (so one
    process draws what it always drew), an independent stream on the others."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([abs(int(seed)), int(rank)]).generate_state(1)[0])

"""Where training runs: the device, the autocast precision, the cohort's placement, CPU threads.

Speed: the cohort lives on the device when it takes < ``DEVICE_COHORT_SHARE`` of free device
memory (else it stays in pinned host memory and each batch is copied); autocast (bf16, or
fp16 with a grad scaler) on CUDA; channels_last_3d on every device (1.4x per step on a
2-core Zen 4 at 32³ in fp32); cudnn.benchmark. bf16 autocast on a CPU with native bf16
units is faster still (2.7x at 32³) but opt-in: it diverged within 4 steps at 64³ (see
benchmarks/README.md). A cohort beyond the
memory budget streams from its memory map, the next batch read ahead (:class:`TrainingCrops`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .cache import PreparedCohort, StreamedCrops, is_streamed
from .utils import cpu_count

#: the cohort is kept on a CUDA device when it needs less than this share of free memory
DEVICE_COHORT_SHARE = 0.4


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; check that a requested CUDA device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
    return device


#: /proc/cpuinfo flags of x86 units that compute in bf16 natively (without them bf16 is emulated, slower than fp32)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), from ``/proc/cpuinfo``.

    ``cpuinfo``: the text to read instead (tests). False where the file is missing (macOS, Windows),
    so ``precision: auto`` stays fp32 there.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split() for flag in NATIVE_BF16_FLAGS)
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: fp32, no autocast).

    ``auto``: bf16 (or fp16 where bf16 is missing) on CUDA; fp32 on the CPU, where bf16
    autocast is opt-in (``bf16``): 2.7x faster per step at 32³ on a CPU with native bf16, but
    its weights became NaN within 4 steps at 64³ on the benchmark's cohort.
    """
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def place_cohort(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The cohort (N,C,S,S,S) float32 as a tensor on ``device`` when it fits, else pinned on the host."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if device.type != "cuda":
        return tensor
    free, _total = torch.cuda.mem_get_info(device)
    if tensor.nbytes < DEVICE_COHORT_SHARE * free:
        return tensor.to(device)
    return tensor.pin_memory()


def set_cpu_threads() -> None:
    """Never use more torch threads than this process may run on.

    torch defaults to the machine's physical cores, which oversubscribes a container or a job
    limited to fewer cores.
    """
    wanted = max(1, min(torch.get_num_threads(), cpu_count()))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


class TrainingCrops:
    """The cohort's crops as a training run reads them, on its device and in its layout.

    In device memory, in pinned host memory (:func:`place_cohort`), or streamed from the
    cache's memory map (:class:`cache.StreamedCrops`). ``augment_on`` "host" keeps the fetched
    crops on the CPU (augmentation there, for benchmarks); ``channels_last`` (default: on;
    1.4x per step in fp32 and 1.5x in bf16 on a 2-core Zen 4 at 32³) lays the views out as
    channels_last_3d; ``amp_dtype`` is the autocast dtype.
    """

    def __init__(
        self,
        data: PreparedCohort,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        augment_on: str = "device",
        channels_last: bool | None = None,
    ) -> None:
        self.device, self.amp_dtype, self.augment_on = device, amp_dtype, augment_on
        self.channels_last = True if channels_last is None else channels_last
        self.streamed = is_streamed(data)
        if self.streamed:  # beyond the memory budget: batches from the memory map, read ahead
            self.cohort: Any = StreamedCrops(data.images, pin=device.type == "cuda")
        else:
            self.cohort = place_cohort(data.images, device if augment_on == "device" else torch.device("cpu"))

    def fetch(self, positions: np.ndarray) -> torch.Tensor:
        """Crops at ``positions`` on the training device, (B,C,S,S,S) float32."""
        if self.streamed:
            x = self.cohort.take(positions)
            return x if self.augment_on == "host" else x.to(self.device, non_blocking=True)
        index = torch.from_numpy(positions)
        if self.cohort.device == self.device:
            return self.cohort[index.to(self.device, non_blocking=True)]
        x = self.cohort[index]
        if self.augment_on == "host":
            return x
        return x.to(self.device, non_blocking=True)

    def prefetch(self, positions: Callable[[], np.ndarray]) -> None:
        """Read the crops at ``positions()`` ahead, when streamed (else nothing to do, nothing drawn)."""
        if self.streamed:
            self.cohort.prefetch(positions())

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )


#: the crop edge proposed on a machine without CUDA (the paper's 96³ is GPU-sized: a CPU step
#: at 96³ costs about 27 times one at 32³, and the sample cohort's volumes are 48³)
CPU_CROP = 32
#: the training settings proposed on a machine without CUDA: a run of minutes on the sample
#: cohort (48 cases at 32³; an SE step there takes 2-8 s on 2 busy cores, 60 steps took 14 min
#: at load 12, benchmarks/bench_viewer.py) with three health checks of the whole cohort in small
#: batches, so that a Stop during a check waits for one batch only
CPU_TRAIN = {"iterations": 40, "checkpoint_every": 20, "health_cases": 48, "embed_batch_size": 4}


def cuda_present() -> bool:
    """Whether a CUDA device is usable here (the GPU path keeps the paper's sizes)."""
    return torch.cuda.is_available()


def cpu_proposal(cfg: Any) -> Any:
    """``cfg`` (a TrainConfig) with :data:`CPU_TRAIN`'s settings, where they are smaller than its own.

    Parameters
    ----------
    cfg : the TrainConfig to start from (the paper's sizes)

    Returns
    -------
    TrainConfig
        the same settings, except iterations, checkpoint interval, health cases and embedding
        batch, each cut to :data:`CPU_TRAIN` (0 health cases, i.e. off, stays off)
    """
    import dataclasses

    changes = {k: min(getattr(cfg, k), v) for k, v in CPU_TRAIN.items()}
    if cfg.health_cases == 0:
        changes["health_cases"] = 0
    return dataclasses.replace(cfg, **changes)

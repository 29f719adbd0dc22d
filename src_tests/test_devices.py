"""The CPU fast path: bf16 autocast only where the CPU computes bf16 natively."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_ssl_radiomics.core.cache import PreparedCohort
from napari_ssl_radiomics.core.devices import TrainingCrops, cpu_has_native_bf16, resolve_precision

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f amx_bf16 amx_tile\n"
SKYLAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512bw\n"


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_has_native_bf16(ZEN4)
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS)
    # AVX-512 alone emulates bf16, which is slower than fp32
    assert not cpu_has_native_bf16(SKYLAKE)
    assert not cpu_has_native_bf16("")


def test_auto_precision_on_the_cpu_is_fp32_and_bf16_is_opt_in() -> None:
    cpu = torch.device("cpu")
    # bf16 diverged at 64³ on the CPU (benchmarks/README.md): never chosen for the user
    assert resolve_precision("auto", cpu) is None
    # an explicit choice is kept whatever the CPU
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_channels_last_is_the_default_layout_on_the_cpu() -> None:
    images = np.zeros((2, 1, 8, 8, 8), np.float32)
    tiny_cohort = PreparedCohort(
        root=Path("<t>"), ids=["a", "b"], images=images, masks=np.zeros((2, 8, 8, 8), np.uint8)
    )
    cpu = torch.device("cpu")
    assert TrainingCrops(tiny_cohort, cpu, torch.bfloat16).channels_last
    assert TrainingCrops(tiny_cohort, cpu, None).channels_last
    assert not TrainingCrops(tiny_cohort, cpu, torch.bfloat16, channels_last=False).channels_last

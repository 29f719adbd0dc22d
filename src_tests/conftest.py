"""Shared fixtures: where the real data lives (``../shared/data`` beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SSL_RADIOMICS_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
PYRADIOMICS_DATA = DATA / "pyradiomics"
ADRENAL = DATA / "adrenalmnist3d"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the repository expects ../shared/data beside it)")
    return path


@pytest.fixture(scope="session")
def pyradiomics_data() -> Path:
    """Folder with pyradiomics' five clinical cases, the phantom and the baseline values."""
    return _need(PYRADIOMICS_DATA)


@pytest.fixture(scope="session")
def adrenal_data() -> Path:
    """Folder with AdrenalMNIST3D (28³ and 64³ npz files)."""
    return _need(ADRENAL)


#: torch intra-op thread counts every ``learning`` test runs under: float rounding differs
#: between them (and between CPUs), so a learned effect asserted on a knife edge flips
#: with the thread count; both counts in one run show it on any machine.
LEARNING_THREADS = (1, 2)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("learning"):
        metafunc.fixturenames.append("torch_threads")
        metafunc.parametrize(
            "torch_threads", LEARNING_THREADS, ids=[f"{n}thread" for n in LEARNING_THREADS], indirect=True
        )


@pytest.fixture
def torch_threads(request: pytest.FixtureRequest):
    """Run the test with ``request.param`` torch threads, then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)

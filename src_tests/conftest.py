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

"""The plugin installs as napari expects: a valid npe2 manifest, found from the install and the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = {"Cohort", "Augmentation preview", "Training (3DSiam + RE/SE)", "Clusters (UMAP)", "Features and evaluation"}


def test_root_manifest_validates_and_is_the_one_the_package_ships():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-ssl-radiomics"
    shipped = resources.files("napari_ssl_radiomics").joinpath("napari.yaml").read_text(encoding="utf-8")
    assert shipped == (ROOT / "napari.yaml").read_text(encoding="utf-8")


def test_napari_finds_the_installed_plugin_with_its_widgets_and_sample_data():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-ssl-radiomics")
    assert {w.display_name for w in manifest.contributions.widgets} == WIDGETS
    assert [s.key for s in manifest.contributions.sample_data] == ["synthetic_tumour"]


def test_every_manifest_command_imports():
    import importlib

    data = yaml.safe_load((ROOT / "napari.yaml").read_text(encoding="utf-8"))
    for command in data["contributions"]["commands"]:
        module, _, name = command["python_name"].partition(":")
        assert callable(getattr(importlib.import_module(module), name)), command["id"]


def test_cli_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "napari_ssl_radiomics", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    ).stdout
    for command in ("sample", "prepare", "train", "embed", "radiomics", "combine", "evaluate", "demo", "run", "config"):
        assert command in out


@pytest.mark.slow
def test_built_wheel_carries_the_manifest_and_entry_points(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_ssl_radiomics-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("napari_ssl_radiomics/napari.yaml").decode() == (ROOT / "napari.yaml").read_text(
            encoding="utf-8"
        )
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
    assert "napari-ssl-radiomics = napari_ssl_radiomics:napari.yaml" in text
    assert "ssl-radiomics = napari_ssl_radiomics.cli:main" in text
    assert "Classifier: Framework :: napari" in metadata
    # No Qt binding in the base dependencies: napari plugins leave that to the user.
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in base if any(q in line.lower() for q in ("pyqt", "pyside"))]


def test_the_core_imports_without_qt_or_napari():
    code = (
        "import importlib, pkgutil, sys, napari_ssl_radiomics.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module(f'napari_ssl_radiomics.core.{m.name}')\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'napari', 'qtpy', 'PyQt6', 'PySide6', 'magicgui', 'superqt'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True
    ).stdout
    assert out.strip() == "[]"

#!/usr/bin/env bash
# Build the wheel, install it in a scratch venv and check that napari finds the plugin from
# it (its widgets and sample data), and that the manifest validates there: the editable
# install can hide a file missing from the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m build --wheel --outdir "$work/dist" . >/dev/null
python3 -m venv "$work/venv"
quiet() { grep -v '^WARNING: Location' || true; }
"$work/venv/bin/pip" install -q torch==2.13.0 2>&1 | quiet
"$work/venv/bin/pip" install -q "$work"/dist/napari_ssl_radiomics-*.whl 2>&1 | quiet
cd "$work"  # away from the source tree, so only the installed wheel can answer
"$work/venv/bin/npe2" validate napari-ssl-radiomics
"$work/venv/bin/python" - <<'PY'
from npe2 import PluginManager
import napari_ssl_radiomics, pathlib
assert "site-packages" in napari_ssl_radiomics.__file__, napari_ssl_radiomics.__file__
pm = PluginManager(); pm.discover()
m = pm.get_manifest("napari-ssl-radiomics")
widgets = [w.display_name for w in m.contributions.widgets]
samples = [s.key for s in m.contributions.sample_data]
assert len(widgets) == 5 and samples == ["synthetic_tumour"], (widgets, samples)
print("wheel check: napari finds", len(widgets), "widgets and sample data", samples)
PY
"$work/venv/bin/ssl-radiomics" --version

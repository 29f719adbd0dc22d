"""The dock widgets clicked through the whole flow on a tiny sample cohort, in a real viewer.

load → prepare → select a case → preview augmentations → train (start, events, stop,
resume) → clusters (one point per case, features on the mask layer) → features, evaluation
and export. Runs under Xvfb (pytest-xvfb, QT_QPA_PLATFORM=xcb): image layers need OpenGL.
One cohort and one short training run are shared by the later tests (module fixture).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")
from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from napari_ssl_radiomics.config import PrepareConfig, SampleConfig, TrainConfig  # noqa: E402
from napari_ssl_radiomics.widgets._state import (  # noqa: E402
    COHORT_MASKS,
    IMAGE_LAYER,
    MASK_LAYER,
    VIEW_LAYERS,
    get_state,
)

pytestmark = pytest.mark.gui

CASES, SIZE, CROP = 12, 32, 28  # 28³ crops: the encoder's smallest edge is 27
WAIT_MS = 120_000


def idle(qtbot, widget, timeout: int = WAIT_MS) -> None:
    """Wait until the widget's background worker has finished (it clears ``_worker``)."""
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


class Errors:
    """Collects the napari error notifications shown while it is connected."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        notification_manager.notification_ready.connect(self._got)

    def _got(self, event) -> None:
        note = getattr(event, "value", event)
        if str(getattr(note, "severity", "")).lower().endswith("error"):
            self.messages.append(str(note.message))

    def close(self) -> None:
        notification_manager.notification_ready.disconnect(self._got)


@pytest.fixture
def errors():
    err = Errors()
    yield err
    err.close()


def set_form(form, **values) -> None:
    """Set controls of a ConfigForm as a user would (through the widgets)."""
    cfg = form.value()
    import dataclasses

    form.set_value(dataclasses.replace(cfg, **values))


def load_and_prepare(qtbot, viewer, workdir: Path):
    from napari_ssl_radiomics.widgets.cohort import CohortWidget

    widget = CohortWidget(viewer)
    qtbot.addWidget(widget)
    widget.workdir.setText(str(workdir))
    set_form(widget.sample_form, cases=CASES, size=SIZE)
    set_form(widget.prepare_form, size=CROP)
    widget.load_button.click()
    idle(qtbot, widget)
    widget.prepare_button.click()
    idle(qtbot, widget)
    return widget


# --- cohort -----------------------------------------------------------------------------


def test_cohort_load_prepare_and_show(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = load_and_prepare(qtbot, viewer, tmp_path)
    state = get_state(viewer)
    assert not errors.messages
    assert widget.table.rowCount() == CASES
    statuses = [widget.table.item(r, 3).text() for r in range(CASES)]
    assert statuses == ["ok"] * CASES
    assert len(state.ok_ids()) == CASES
    labels = {widget.table.item(r, 1).text() for r in range(CASES)}
    assert labels == {"0", "1"}

    # selecting a row shows the full volume at the physical scale of its image
    widget.table.selectRow(2)
    case_id = widget.table.item(2, 0).text()
    assert state.case_id == case_id
    image = viewer.layers[IMAGE_LAYER]
    assert image.data.shape == (SIZE,) * 3
    assert np.allclose(image.scale, 1.0)  # the sample cohort has 1 mm spacing
    assert viewer.layers[MASK_LAYER].data.max() == 1

    # the toggle shows the prepared crop instead
    widget.crop.setChecked(True)
    assert viewer.layers[IMAGE_LAYER].data.shape == (CROP,) * 3
    assert np.allclose(viewer.layers[IMAGE_LAYER].scale, PrepareConfig().spacing)


def test_cohort_reports_bad_rows_and_bad_paths(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_ssl_radiomics.core.sample import write_sample_cohort
    from napari_ssl_radiomics.widgets.cohort import FILES, CohortWidget

    manifest = write_sample_cohort(tmp_path / "c", SampleConfig(cases=4, size=SIZE))
    table = pd.read_csv(manifest)
    table.loc[1, "Image"] = "missing.nii.gz"  # one broken case must not sink the cohort
    table.to_csv(manifest, index=False)
    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    qtbot.addWidget(widget)
    widget.source.setCurrentText(FILES)
    widget.workdir.setText(str(tmp_path / "work"))
    widget.path.setText(str(manifest))
    widget.load_button.click()
    idle(qtbot, widget)
    set_form(widget.prepare_form, size=CROP)
    widget.prepare_button.click()
    idle(qtbot, widget)
    statuses = {widget.table.item(r, 0).text(): widget.table.item(r, 3).text() for r in range(widget.table.rowCount())}
    broken = table.loc[1, "ID"]
    assert statuses[broken].startswith("skipped") and "missing.nii.gz" in statuses[broken]
    assert sum(s == "ok" for s in statuses.values()) == 3

    widget.path.setText(str(tmp_path / "nowhere.csv"))
    widget.load_button.click()
    idle(qtbot, widget)
    assert any("nowhere.csv" in m for m in errors.messages)


# --- augmentation ---------------------------------------------------------------------


def test_augment_preview_side_by_side_and_shared(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_ssl_radiomics.widgets.augment import AugmentWidget

    viewer = make_napari_viewer()
    cohort = load_and_prepare(qtbot, viewer, tmp_path)
    cohort.table.selectRow(0)
    widget = AugmentWidget(viewer)
    qtbot.addWidget(widget)
    set_form(widget.form, rotation_p=0.0, noise=(5.0, 5.0), noise_p=1.0)
    state = get_state(viewer)
    assert state.augment.noise_p == 1.0 and state.augment.rotation_p == 0.0  # shared with training

    widget.preview_button.click()
    idle(qtbot, widget)
    assert not errors.messages
    one, two = (viewer.layers[name] for name in VIEW_LAYERS)
    assert one.data.shape == two.data.shape == (CROP,) * 3
    assert not np.array_equal(one.data, two.data)  # two independent draws
    assert two.translate[-1] - one.translate[-1] >= CROP  # side by side, not overlapping
    first = one.data.copy()
    widget.reroll_button.click()
    idle(qtbot, widget)
    assert widget.seed.value() == 1
    assert not np.array_equal(first, viewer.layers[VIEW_LAYERS[0]].data)

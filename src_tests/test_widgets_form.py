"""The controls built from the config dataclasses: one per field, help as tool tip, round trip."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("qtpy")
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox  # noqa: E402

from napari_ssl_radiomics.config import SECTIONS, AugmentConfig, EvaluateConfig, TrainConfig  # noqa: E402
from napari_ssl_radiomics.widgets._form import ConfigForm  # noqa: E402


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_field_has_a_control_with_its_help(qtbot, name):
    cls = SECTIONS[name]
    form = ConfigForm(cls())
    qtbot.addWidget(form)
    fields = dataclasses.fields(cls)
    assert list(form.controls) == [f.name for f in fields]
    for f in fields:
        assert form.controls[f.name].toolTip() == f.metadata["help"]
    assert form.value() == cls()  # the defaults survive the trip through the controls


def test_values_round_trip_and_small_floats_keep_their_digits(qtbot):
    cfg = TrainConfig(mode="re", clusters=4, iterations=123456, lr=3e-4, weight_decay=1e-5, device="cuda:1")
    form = ConfigForm(TrainConfig(), suggestions={"device": ("auto", "cuda", "cpu")})
    qtbot.addWidget(form)
    form.set_value(cfg)
    assert form.value() == cfg
    assert isinstance(form.controls["mode"], QComboBox) and isinstance(form.controls["iterations"], QSpinBox)
    assert isinstance(form.controls["lr"], QDoubleSpinBox)


def test_ranges_and_lists(qtbot):
    form = ConfigForm(AugmentConfig())
    qtbot.addWidget(form)
    form.controls["rotation"].setValue((-5.0, 7.5))
    assert form.value().rotation == (-5.0, 7.5)
    ev = ConfigForm(EvaluateConfig())
    qtbot.addWidget(ev)
    box = ev.controls["label_fractions"]
    assert isinstance(box, QLineEdit)
    box.setText("1, 0.25")
    assert ev.value().label_fractions == (1.0, 0.25)
    box.setText("1, half")
    with pytest.raises(ValueError, match="label_fractions"):
        ev.value()


def test_only_some_fields_keep_the_others(qtbot):
    base = TrainConfig(lr=0.5)
    form = ConfigForm(base, only=["clusters", "seed"])
    qtbot.addWidget(form)
    form.controls["clusters"].setValue(5)
    assert list(form.controls) == ["clusters", "seed"]
    assert form.value() == dataclasses.replace(base, clusters=5)

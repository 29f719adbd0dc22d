"""The magicgui forms built from the config dataclasses: one widget per field, its help and range."""

from __future__ import annotations

import dataclasses
import typing

import pytest

pytest.importorskip("magicgui")
from magicgui.widgets import ComboBox, FloatSpinBox, LineEdit, SpinBox, TupleEdit  # noqa: E402

from napari_ssl_radiomics.config import (  # noqa: E402
    SECTIONS,
    AugmentConfig,
    EvaluateConfig,
    TrainConfig,
    check_value,
    public_fields,
    resolve_recipe,
)
from napari_ssl_radiomics.widgets._form import ConfigForm  # noqa: E402


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_field_has_a_widget_with_its_help(qtbot, name):
    cls = SECTIONS[name]
    form = ConfigForm(cls())
    qtbot.addWidget(form)
    fields = public_fields(cls)  # an internal field (TrainConfig.recipe_applied) has no control
    assert list(form.controls) == [f.name for f in fields]
    assert list(form.container.asdict()) == [f.name for f in fields]  # a magicgui Container
    for f in fields:
        assert form.controls[f.name].tooltip.startswith(f.metadata["help"])
    assert form.value() == cls()  # the defaults survive the trip through the widgets


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_numeric_widgets_refuse_what_validate_refuses(qtbot, name):
    """Each spin box's bounds are the field's range: the bound is accepted, one step past it is not."""
    cls = SECTIONS[name]
    form = ConfigForm(cls())
    qtbot.addWidget(form)
    hints = typing.get_type_hints(cls)
    for f in public_fields(cls):
        widget = form.controls[f.name]
        boxes = list(widget) if isinstance(widget, TupleEdit) else [widget]
        for box in boxes:
            if not isinstance(box, (SpinBox, FloatSpinBox)):
                continue
            item = int if hints[f.name] is int else float
            lo, hi = box.min, box.max
            assert check_value(f, item(lo)) is None and check_value(f, item(hi)) is None, f.name
            if "min" in f.metadata or "gt" in f.metadata:
                below = lo - (1 if item is int else 10 ** -box.native.decimals())
                assert check_value(f, item(below)) is not None, f.name  # validate refuses it too
                with pytest.raises(ValueError):
                    box.value = below
            if "max" in f.metadata:
                assert hi == f.metadata["max"]
                with pytest.raises(ValueError):
                    box.value = hi + 1


def test_the_ranges_the_issue_names(qtbot):
    form = ConfigForm(TrainConfig())
    qtbot.addWidget(form)
    assert form.controls["batch_size"].min == 2 and form.controls["clusters"].min == 1
    aug = ConfigForm(AugmentConfig())
    qtbot.addWidget(aug)
    for f in dataclasses.fields(AugmentConfig):
        if f.name.endswith("_p"):
            assert (aug.controls[f.name].min, aug.controls[f.name].max) == (0.0, 1.0)
    assert all(box.min > 0 for box in aug.controls["scale"])  # scale > 0


def test_values_round_trip_and_small_floats_keep_their_digits(qtbot):
    cfg = TrainConfig(mode="re", clusters=4, iterations=123456, lr=3e-4, weight_decay=1e-5, device="cuda:1")
    form = ConfigForm(TrainConfig(), suggestions={"device": ("auto", "cuda", "cpu")})
    qtbot.addWidget(form)
    form.set_value(cfg)
    assert form.value() == cfg
    assert isinstance(form.controls["mode"], ComboBox) and isinstance(form.controls["iterations"], SpinBox)
    assert isinstance(form.controls["lr"], FloatSpinBox) and isinstance(form.controls["device"], LineEdit)
    seen = []
    form.changed.connect(lambda: seen.append(1))
    form.controls["lr"].value = 0.5
    assert seen and form.value().lr == 0.5


def test_ranges_and_lists(qtbot):
    form = ConfigForm(AugmentConfig())
    qtbot.addWidget(form)
    form.controls["rotation"].value = (-5.0, 7.5)
    assert form.value().rotation == (-5.0, 7.5)
    ev = ConfigForm(EvaluateConfig())
    qtbot.addWidget(ev)
    box = ev.controls["label_fractions"]
    assert isinstance(box, LineEdit)
    box.value = "1, 0.25"
    assert ev.value().label_fractions == (1.0, 0.25)
    box.value = "1, half"
    with pytest.raises(ValueError, match="label_fractions"):
        ev.value()
    box.value = "1, 2"  # outside (0, 1]: the same message as the CLI's and the YAML's
    with pytest.raises(ValueError, match="at most 1"):
        ev.value()


def test_only_some_fields_keep_the_others(qtbot):
    base = TrainConfig(lr=0.5)
    form = ConfigForm(base, only=["clusters", "seed"])
    qtbot.addWidget(form)
    form.controls["clusters"].value = 5
    assert list(form.controls) == ["clusters", "seed"]
    assert form.value() == dataclasses.replace(base, clusters=5)


def test_choosing_a_recipe_shows_its_values_and_a_changed_control_wins(qtbot):
    form = ConfigForm(TrainConfig())
    qtbot.addWidget(form)
    form.controls["recipe"].value = "paper"  # what the form shows is what runs
    shown = {name: form.controls[name].value for name in ("optimizer", "schedule", "lr_warmup", "fix_pred_lr")}
    assert shown == {"optimizer": "adam", "schedule": "constant", "lr_warmup": 0, "fix_pred_lr": False}
    form.controls["optimizer"].value = "sgd"  # the user's choice, equal to the default
    cfg = form.value()
    assert (cfg.recipe, cfg.optimizer, cfg.schedule) == ("paper", "sgd", "constant")
    assert resolve_recipe(cfg).optimizer == "sgd"  # the engine does not put the preset back
    form.controls["recipe"].value = "default"
    assert form.value() == TrainConfig()
    # a config with a recipe shows it resolved, and setting a whole config keeps every value of it
    assert ConfigForm(TrainConfig(recipe="paper")).controls["optimizer"].value == "adam"
    form.set_value(cfg)
    assert form.value() == cfg and form.value().optimizer == "sgd"


def test_the_training_widget_says_the_probe_must_not_steer_tuning(make_napari_viewer, qtbot, tmp_path):
    from test_train_engine import make_cache

    from napari_ssl_radiomics.core.health import BELOW, COLLAPSING, HEALTHY, PROBE_CAVEAT
    from napari_ssl_radiomics.core.train import train
    from napari_ssl_radiomics.widgets.train import TrainWidget

    widget = TrainWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    assert widget.probe_caveat.isHidden()  # no probe yet: nothing to warn about
    cfg = TrainConfig(mode="none", iterations=1, batch_size=4, device="cpu", lr_warmup=0)
    for event in train(make_cache(tmp_path / "cache", cases=15), tmp_path / "run", cfg, AugmentConfig()):
        widget._event(event)  # the run's real events, as the worker hands them to the GUI thread
    assert "probe AUC (monitoring only)" in widget.health_info.text()
    # the last check (step 1) gets a verdict in words, from the label-free figures
    assert any(f"<b>{word}</b>" in widget.health_info.text() for word in (HEALTHY, COLLAPSING, BELOW))
    assert not widget.probe_caveat.isHidden()
    assert "test folds included" in widget.probe_caveat.text() and "optimistic" in widget.probe_caveat.text()
    assert widget.probe_caveat.toolTip() == PROBE_CAVEAT


def test_training_eta_and_the_cpu_proposal_in_one_line(make_napari_viewer, qtbot):
    from napari_ssl_radiomics.core.devices import CPU_TRAIN, cuda_present
    from napari_ssl_radiomics.widgets.train import TrainWidget, eta_text

    assert eta_text(6 * 60 + 10) == "≈ 6 min left" and eta_text(42) == "≈ 40 s left" and eta_text(2) == "≈ 10 s left"
    widget = TrainWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    cfg = widget.form.value()
    if cuda_present():  # the GPU keeps the paper's sizes
        assert cfg.iterations == TrainConfig().iterations and "GPU found" in widget.device_note.text()
    else:
        assert (cfg.iterations, cfg.health_cases) == (CPU_TRAIN["iterations"], CPU_TRAIN["health_cases"])
        assert widget.device_note.text().startswith("No GPU here") and "\n" not in widget.device_note.text()


def test_floats_show_no_trailing_zeros_and_still_take_small_values(qtbot):
    """'0.0001', not '0.000100'; typing a value a decade below the default still reads back."""
    form = ConfigForm(TrainConfig(lr=0.01, weight_decay=1e-4, momentum=0.9))
    qtbot.addWidget(form)
    shown = {name: form.controls[name].native.text() for name in ("lr", "weight_decay", "momentum")}
    assert shown == {"lr": "0.01", "weight_decay": "0.0001", "momentum": "0.9"}
    box = form.controls["lr"].native
    box.lineEdit().setText("0.00005")
    box.interpretText()
    assert form.value().lr == 5e-5 and box.text() == "0.00005"
    aug = ConfigForm(AugmentConfig(rotation_p=1.0))
    qtbot.addWidget(aug)
    assert aug.controls["rotation_p"].native.text() == "1.0"

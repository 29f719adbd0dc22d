"""Qt controls built from a config dataclass, so that no parameter is defined twice.

:class:`ConfigForm` turns every field of a section of :mod:`napari_ssl_radiomics.config`
into one control: ``int`` → spin box, ``float`` → double spin box, ``bool`` → check box,
``str`` with ``choices`` → combo box, other ``str`` → line edit, ``tuple[float, float]`` →
two double spin boxes, ``tuple[float, ...]`` → a line edit of comma-separated numbers. The
field's help text becomes the tool tip; :meth:`ConfigForm.value` builds the dataclass back
(validated by :func:`napari_ssl_radiomics.config.validate`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ..config import validate

INT_MAX = 10**9


def _decimals(value: float) -> int:
    """Enough decimals to show ``value`` and a step of a tenth of it (1e-4 → 5)."""
    if value == 0 or abs(value) >= 1:
        return 3
    digits = 0
    while abs(value) * 10**digits < 1 and digits < 8:
        digits += 1
    return min(digits + 2, 8)


def _float_box(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(_decimals(value))
    box.setRange(-1e9, 1e9)
    box.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
    box.setValue(float(value))
    return box


class _Pair(QWidget):
    """Two double spin boxes for a ``(low, high)`` range."""

    changed = Signal()

    def __init__(self, value: tuple[float, float]) -> None:
        super().__init__()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.boxes = [_float_box(v) for v in value]
        for box in self.boxes:
            row.addWidget(box)
            box.valueChanged.connect(self.changed)

    def value(self) -> tuple[float, float]:
        return tuple(box.value() for box in self.boxes)  # type: ignore[return-value]

    def setValue(self, value: Iterable[float]) -> None:  # noqa: N802 (Qt naming)
        for box, v in zip(self.boxes, value):
            box.setValue(float(v))


def _control(hint: Any, value: Any, choices: tuple | None, suggestions: tuple | None = None) -> QWidget:
    if suggestions:  # free text with common values offered
        box = QComboBox()
        box.setEditable(True)
        box.addItems([str(c) for c in suggestions])
        box.setCurrentText(str(value))
        return box
    if choices:
        box = QComboBox()
        box.addItems([str(c) for c in choices])
        box.setCurrentText(str(value))
        return box
    if hint is bool:
        check = QCheckBox()
        check.setChecked(bool(value))
        return check
    if hint is int:
        spin = QSpinBox()
        spin.setRange(-INT_MAX, INT_MAX)
        spin.setValue(int(value))
        return spin
    if hint is float:
        return _float_box(value)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is not Ellipsis:
            return _Pair(value)
        return QLineEdit(", ".join(str(v) for v in value))
    return QLineEdit(str(value))


def _read(widget: QWidget, hint: Any) -> Any:
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, (QSpinBox, QDoubleSpinBox, _Pair)):
        return widget.value()
    text = widget.text()  # type: ignore[attr-defined]
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return tuple(item(v) for v in text.replace(",", " ").split())
    return text


def _write(widget: QWidget, value: Any) -> None:
    if isinstance(widget, QComboBox):
        widget.setCurrentText(str(value))
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox, _Pair)):
        widget.setValue(value)
    elif isinstance(value, tuple):
        widget.setText(", ".join(str(v) for v in value))  # type: ignore[attr-defined]
    else:
        widget.setText(str(value))  # type: ignore[attr-defined]


def _signal(widget: QWidget) -> Any:
    if isinstance(widget, QComboBox):
        return widget.currentTextChanged
    if isinstance(widget, QCheckBox):
        return widget.toggled
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.valueChanged
    if isinstance(widget, _Pair):
        return widget.changed
    return widget.editingFinished  # type: ignore[attr-defined]


class ConfigForm(QWidget):
    """A form with one control per field of a config dataclass.

    Parameters
    ----------
    cfg : an instance of a config dataclass (its values fill the controls)
    only : field names to show (default: all); hidden fields keep ``cfg``'s values
    labels : display labels by field name (default: the field name with spaces)
    suggestions : for free-text fields, values offered in an editable combo box
    """

    changed = Signal()

    def __init__(
        self,
        cfg: Any,
        only: Iterable[str] | None = None,
        labels: dict[str, str] | None = None,
        suggestions: dict[str, tuple] | None = None,
    ) -> None:
        super().__init__()
        self._cfg = cfg
        self._hints = typing.get_type_hints(type(cfg))
        self.controls: dict[str, QWidget] = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        names = list(only) if only is not None else [f.name for f in dataclasses.fields(cfg)]
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        for name in names:
            f = fields[name]
            control = _control(
                self._hints[name], getattr(cfg, name), f.metadata.get("choices"), (suggestions or {}).get(name)
            )
            control.setToolTip(f.metadata.get("help", ""))
            control.setObjectName(name)
            _signal(control).connect(self.changed)
            label = (labels or {}).get(name, name.replace("_", " "))
            layout.addRow(label, control)
            layout.labelForField(control).setToolTip(f.metadata.get("help", ""))
            self.controls[name] = control

    def value(self) -> Any:
        """The dataclass with the controls' values.

        Raises
        ------
        ValueError
            For a value outside a field's choices or a malformed list of numbers.
        """
        changes = {}
        for name, control in self.controls.items():
            try:
                changes[name] = _read(control, self._hints[name])
            except ValueError:
                raise ValueError(
                    f"{type(self._cfg).__name__}.{name}: cannot read {control.text()!r} as numbers"
                ) from None  # type: ignore[attr-defined]
        cfg = dataclasses.replace(self._cfg, **changes)
        validate(cfg)
        return cfg

    def set_value(self, cfg: Any) -> None:
        """Show the values of ``cfg`` (fields without a control are kept from ``cfg``)."""
        self._cfg = cfg
        for name, control in self.controls.items():
            _write(control, getattr(cfg, name))

    def on_change(self, callback: Callable[[], None]) -> None:
        self.changed.connect(callback)

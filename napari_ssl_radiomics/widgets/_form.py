"""magicgui forms built from a config dataclass, so that no parameter is defined twice.

:class:`ConfigForm` turns every field of a section of :mod:`napari_ssl_radiomics.config`
into one magicgui widget, with the range the field's metadata gives (``min``, ``max``,
``gt``: the same bounds :func:`napari_ssl_radiomics.config.validate` checks for the CLI
and the YAML file):

magicgui's ``create_widget`` picks each widget from the field's type: ``int`` → ``SpinBox``,
``float`` → ``FloatSpinBox``, ``bool`` → ``CheckBox``, ``str`` with ``choices`` →
``ComboBox``, other ``str`` → ``LineEdit``, ``tuple[float, float]`` → ``TupleEdit``. This
module adds what the type does not say: the field's range on every spin box (both of a
``TupleEdit``'s), completions for free text, and a ``LineEdit`` of comma-separated values
for ``tuple[float, ...]`` (checked on read). A ``float`` field's spin box shows its value
without trailing zeros ("0.0001", not "0.000100"; :class:`ShortFloatSpinBox`).

The field's help (and its range in words) becomes the tool tip. :meth:`ConfigForm.value`
builds the dataclass back and validates it.

Presets: what the form shows is what runs. A TrainConfig form shows its recipe resolved
(:func:`napari_ssl_radiomics.config.resolve_recipe`), and choosing another recipe in its
combo box writes that preset's values into the controls; a control the user then changes
keeps the user's value. :meth:`ConfigForm.value` treats every control as given, so the
training engine never applies the preset over what the form shows.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from typing import Any

from magicgui.widgets import Container, FloatSpinBox, LineEdit, TupleEdit, Widget, create_widget
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QAbstractSpinBox, QCompleter, QDoubleSpinBox, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..config import RECIPES, TrainConfig, apply_presets, describe_range, public_fields, validate

INT_LIMIT = 2**31 - 1  # Qt spin boxes hold a C int
FLOAT_LIMIT = 1e9


class _ShortDoubleSpinBox(QDoubleSpinBox):
    """A QDoubleSpinBox that shows no trailing zeros past the first decimal: "0.0001", "1.0",
    not "0.000100", "1.000" (it still takes as many decimals as it is given, so a user can
    type a smaller learning rate)."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt naming)
        text = super().textFromValue(value)
        point = self.locale().decimalPoint()
        if point not in text:
            return text
        whole, frac = text.split(point, 1)
        return f"{whole}{point}{frac.rstrip('0') or '0'}"


def _short_backend() -> type:
    """magicgui's Qt FloatSpinBox backend around :class:`_ShortDoubleSpinBox`."""
    from magicgui.backends._qtpy import widgets as qt_backend

    class Backend(qt_backend.FloatSpinBox):
        def __init__(self, **kwargs: Any) -> None:
            qt_backend.QBaseRangedWidget.__init__(self, _ShortDoubleSpinBox, **kwargs)

    return Backend


class ShortFloatSpinBox(FloatSpinBox):
    """magicgui's FloatSpinBox showing its value without trailing zeros."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["widget_type"] = _short_backend()
        super(FloatSpinBox, self).__init__(**kwargs)  # past the decorator that sets the stock backend


def decimals(value: float, lo: float | None, hi: float | None, gt: float | None = None) -> int:
    """Decimals to show for a float field holding ``value``.

    3 for probabilities and for values of 0.01 or more; a positive-only field (``gt``, e.g.
    a learning rate) or a small value gets at least 6, so that a user can go a few decades
    below the default (the spin box's lower bound is one unit of the last decimal).
    """
    if lo is not None and hi is not None and hi <= 1 and lo >= 0:
        return 3
    small = value != 0 and abs(value) < 0.01
    if gt is None and not small:
        return 3
    digits = math.ceil(-math.log10(abs(value))) if value else 1
    return min(max(digits + 2, 6), 10)


def bounds(f: dataclasses.Field, hint: Any, places: int = 0) -> tuple[float, float]:
    """The inclusive (low, high) a spin box may take for field ``f``.

    ``gt`` (an exclusive bound) becomes the next representable value: ``gt + 1`` for an
    int, ``gt + 10**-places`` for a float shown with ``places`` decimals.
    """
    limit = INT_LIMIT if hint is int else FLOAT_LIMIT
    lo, hi, gt = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("gt")
    low = -limit if lo is None else lo
    if gt is not None:
        low = max(low, gt + (1 if hint is int else 10**-places))
    return low, (limit if hi is None else hi)


def _bound_float(box: FloatSpinBox, value: float, f: dataclasses.Field) -> FloatSpinBox:
    """Give a float spin box the field's range, enough decimals and an adaptive step."""
    places = decimals(value, f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("gt"))
    low, high = bounds(f, float, places)
    box.native.setDecimals(places)  # before the range: Qt rounds the bounds to the decimals
    box.min, box.max = low, high
    box.step = 10 ** -min(places, 3)
    box.native.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
    box.value = float(value)
    return box


def make_widget(f: dataclasses.Field, hint: Any, value: Any, suggestions: tuple | None = None) -> Widget:
    """The magicgui widget of one config field, holding ``value``.

    magicgui's :func:`~magicgui.widgets.create_widget` picks the widget from the type (and
    ``choices``); this adds the field's range, the float decimals, a comma-separated line for
    a variable-length tuple, and completions for free text.
    """
    name = f.name
    choices = f.metadata.get("choices")
    variable = typing.get_origin(hint) is tuple and Ellipsis in typing.get_args(hint)
    if choices and typing.get_origin(hint) is not tuple:
        return create_widget(value, annotation=hint, name=name, options={"choices": list(choices)})
    if variable:  # a list of numbers or names: one line, checked on read
        return create_widget(", ".join(str(v) for v in value), annotation=str, name=name)
    if hint is int:
        low, high = bounds(f, int)
        return create_widget(int(value), annotation=int, name=name, options={"min": int(low), "max": int(high)})
    if typing.get_origin(hint) is tuple:
        value = tuple(float(v) for v in value)
    if hint is float:
        widget: Widget = ShortFloatSpinBox(value=float(value), name=name)
    else:
        widget = create_widget(value, annotation=hint, name=name)
    if isinstance(widget, FloatSpinBox):
        _bound_float(widget, value, f)
    elif isinstance(widget, TupleEdit):
        for box, v in zip(widget, value):  # one bounded spin box per end of the range
            _bound_float(box, v, f)
    elif isinstance(widget, LineEdit) and suggestions:
        widget.native.setCompleter(QCompleter([str(s) for s in suggestions], widget.native))
    return widget


def _read(widget: Widget, hint: Any, where: str) -> Any:
    value = widget.value
    if typing.get_origin(hint) is tuple and isinstance(value, str):
        item = typing.get_args(hint)[0]
        try:
            return tuple(item(v) for v in value.replace(",", " ").split())
        except ValueError:
            raise ValueError(f"{where}: cannot read {value!r} as numbers separated by commas") from None
    if isinstance(value, tuple):
        return tuple(float(v) for v in value)
    return value


def _write(widget: Widget, hint: Any, value: Any) -> None:
    if isinstance(widget, LineEdit) and isinstance(value, tuple):
        widget.value = ", ".join(str(v) for v in value)
    elif isinstance(widget, TupleEdit):
        for box, v in zip(widget, value):
            box.value = float(v)
    elif isinstance(widget, LineEdit):
        widget.value = str(value)
    else:
        widget.value = value


class ConfigForm(QWidget):
    """A magicgui form with one widget per field of a config dataclass.

    Parameters
    ----------
    cfg : an instance of a config dataclass (its values fill the widgets)
    only : field names to show (default: all); hidden fields keep ``cfg``'s values
    labels : display labels by field name (default: the field name with spaces)
    suggestions : for free-text fields, values offered as completions
    advanced : field names shown in a collapsed "Advanced settings" section (``advanced_box``),
        so that a dock's main controls, its Start button and its plot fit a 768 px screen

    Attributes
    ----------
    container : the magicgui ``Container`` holding the widgets
    controls : field name → magicgui widget
    """

    changed = Signal()

    def __init__(
        self,
        cfg: Any,
        only: Iterable[str] | None = None,
        labels: dict[str, str] | None = None,
        suggestions: dict[str, tuple] | None = None,
        advanced: Iterable[str] = (),
    ) -> None:
        super().__init__()
        cfg = apply_presets(cfg)  # show the recipe's values, not the defaults it replaces
        self._cfg = cfg
        self._loading = False  # set_value writes a whole config: its recipe must not rewrite the others
        self._hints = typing.get_type_hints(type(cfg))
        fields = {f.name: f for f in public_fields(cfg)}
        names = list(only) if only is not None else list(fields)
        self.controls: dict[str, Widget] = {}
        for name in names:
            f = fields[name]
            widget = make_widget(f, self._hints[name], getattr(cfg, name), (suggestions or {}).get(name))
            widget.label = (labels or {}).get(name, name.replace("_", " "))
            rng = describe_range(f)
            widget.tooltip = f.metadata.get("help", "") + (f" ({rng})" if rng else "")
            self.controls[name] = widget
        hidden = [n for n in names if n in set(advanced)]
        self.container = Container(widgets=[w for n, w in self.controls.items() if n not in hidden], labels=True)
        self.advanced = Container(widgets=[self.controls[n] for n in hidden], labels=True)
        self.advanced_box: QCollapsible | None = None
        for box in (self.container, self.advanced):
            box.margins = (0, 0, 0, 0)
            box.changed.connect(lambda *_: self.changed.emit())
        if isinstance(cfg, TrainConfig) and "recipe" in self.controls:
            self.controls["recipe"].changed.connect(self._show_recipe)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.container.native)
        if hidden:
            self.advanced_box = QCollapsible(f"Advanced settings ({len(hidden)})")
            self.advanced_box.addWidget(self.advanced.native)
            layout.addWidget(self.advanced_box)

    def _show_recipe(self, recipe: str) -> None:
        """Write the chosen recipe's preset into its controls (what the form shows is what runs)."""
        if self._loading:
            return
        for name, value in RECIPES[recipe].items():
            if name in self.controls:
                _write(self.controls[name], self._hints[name], value)

    def value(self) -> Any:
        """The dataclass with the widgets' values (every control counts as given: presets do not override it).

        Raises
        ------
        ValueError
            For a value outside a field's choices or range, or a malformed list of numbers.
        """
        where = type(self._cfg).__name__
        changes = {n: _read(w, self._hints[n], f"{where}.{n}") for n, w in self.controls.items()}
        cfg = dataclasses.replace(self._cfg, **changes)
        validate(cfg)
        return apply_presets(cfg, given=self.controls)

    def set_value(self, cfg: Any) -> None:
        """Show the values of ``cfg`` (fields without a widget are kept from ``cfg``; a recipe resolved)."""
        cfg = apply_presets(cfg)
        self._cfg = cfg
        self._loading = True
        try:
            for name, widget in self.controls.items():
                _write(widget, self._hints[name], getattr(cfg, name))
        finally:
            self._loading = False

    def on_change(self, callback: Callable[[], None]) -> None:
        self.changed.connect(callback)

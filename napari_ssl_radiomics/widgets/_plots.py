"""Matplotlib canvases themed like the viewer (napari-matplotlib), and scrolling docks.

:class:`ThemedFigure` wraps napari-matplotlib's ``BaseNapariMPLWidget``: its figure, axes
and text take the colours of the viewer's theme (dark by default) and follow a theme
change; the toolbar gives zoom, pan and save. :class:`ScrollDock` is the base of every dock
widget: its controls sit in a scroll area, so five docks fit a 1366×768 screen together
without growing the window (a dock asks only for a small minimum height).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib.style as mplstyle
from napari_matplotlib.base import BaseNapariMPLWidget
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

#: smallest height a dock asks for, pixels (its content scrolls below that)
DOCK_MIN_HEIGHT = 64


class ThemedFigure(BaseNapariMPLWidget):
    """A figure in the viewer's theme, with napari-matplotlib's toolbar.

    Parameters
    ----------
    viewer : the napari viewer whose theme the figure follows
    height : minimum height of the canvas, pixels
    fast : True for a figure redrawn often (live plots): fixed margins instead of the
        constrained layout, which measures every label on every draw
    """

    def __init__(self, viewer: Any, height: int = 260, fast: bool = False) -> None:
        super().__init__(viewer)
        if fast:
            self.figure.set_layout_engine("none")
        self.canvas.setMinimumHeight(height)
        self.layout().setContentsMargins(0, 0, 0, 0)

    def themed(self, make: Callable[[], Any]) -> Any:
        """Call ``make`` (which creates axes or artists) inside the theme's style."""
        with mplstyle.context(self.napari_theme_style_sheet):
            return make()

    def subplots(self, *args: Any, **kw: Any) -> Any:
        """``figure.subplots`` in the theme's style."""
        return self.themed(lambda: self.figure.subplots(*args, **kw))

    def text_colour(self) -> str:
        """The theme's text colour (for artists drawn outside :meth:`themed`)."""
        return self.napari_theme_style_sheet.get("axes.labelcolor", "black")

    def _on_napari_theme_changed(self, event: Any) -> None:
        super()._on_napari_theme_changed(event)
        self.on_theme()

    def on_theme(self) -> None:
        """Redraw after a theme change (subclasses rebuild their axes here)."""
        self.canvas.draw_idle()


class ScrollDock(QWidget):
    """A dock widget whose controls scroll: ``self.body`` is the layout to fill.

    Why: napari sizes a dock to its content's minimum height; five docks of 500–1000 px
    each grew the window past the screen. Inside a scroll area the content keeps its
    natural size and the dock asks for :data:`DOCK_MIN_HEIGHT` only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.content = QWidget()
        self.body = QVBoxLayout(self.content)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.content)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        self.setMinimumHeight(DOCK_MIN_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def minimumSizeHint(self) -> Any:  # noqa: N802 (Qt naming)
        hint = super().minimumSizeHint()
        hint.setHeight(DOCK_MIN_HEIGHT)
        return hint

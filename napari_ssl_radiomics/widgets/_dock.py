"""The base of the five dock widgets: the viewer, its shared state, one worker, scrolling controls."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget, QWidget

from ._plots import ScrollDock
from ._state import get_state


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


class Dock(ScrollDock):
    """A dock of one viewer: ``viewer``, its :class:`._state.State` (``state``), the background
    worker it runs (``_worker``, None when idle) and a scrolling ``body`` to fill.

    The first time it is shown in the viewer's window it joins the tabs of this plugin's other
    docks on the same side: napari's Plugins menu stacks docks one under another, which at
    768 px leaves each 84–226 px tall (a tab per step reads like the workflow it is). Its dock
    is titled ``TAB_TITLE``, one short word: napari's "Training (3DSiam + RE/SE)
    (napari-ssl-radiomics)" left five tabs of a 400 px dock cut to "Coh…", "Trai…".
    """

    TAB_TITLE = ""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self._worker: Any = None
        self._tabbed = False

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if not self._tabbed:
            self._tabbed = True
            QTimer.singleShot(0, self.tabify)  # after napari has placed the new dock

    def tabify(self) -> bool:
        """Put this dock into a tab beside the last of the plugin's docks on its side; whether it moved."""
        dock = _dock_of(self)
        window = dock.parent() if dock is not None else None
        if dock is not None and self.TAB_TITLE:
            dock.setWindowTitle(self.TAB_TITLE)  # the tab's text; napari keys its docks by name, not title
        if dock is None or window is None or dock.isFloating() or not hasattr(window, "tabifyDockWidget"):
            return False
        area = window.dockWidgetArea(dock)
        ours = [
            other
            for other in window.findChildren(QDockWidget)
            if other is not dock
            and not other.isFloating()
            and other.isVisible()
            and window.dockWidgetArea(other) == area
            and other.findChild(Dock) is not None
        ]
        if not ours:
            return False
        window.tabifyDockWidget(ours[-1], dock)
        dock.show()
        dock.raise_()
        return True

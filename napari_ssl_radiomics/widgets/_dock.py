"""The base of the five dock widgets: the viewer, its shared state, one worker, scrolling controls."""

from __future__ import annotations

from typing import Any

from ._plots import ScrollDock
from ._state import get_state


class Dock(ScrollDock):
    """A dock of one viewer: ``viewer``, its :class:`._state.State` (``state``), the background
    worker it runs (``_worker``, None when idle) and a scrolling ``body`` to fill."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self._worker: Any = None

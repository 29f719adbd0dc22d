"""Augmentation preview: the seven augmentations, each with its range and probability.

Preview draws two random views of the selected (prepared) case with the core's
``two_views`` and shows them as two image layers of their own, placed beside the case
(right of the case layers' extent along x, aligned with them in z and y) with a gap
between them, so that neither covers the other or the case, in 2D and in 3D. Over each
view a yellow layer carries the mask's outline, moved by that view's rotation, scale and
shift (``view_outlines``). The arrays are all made in the worker. The case
layers (and the cohort stack, if shown) are hidden while previewing, the z slider is moved
to the views' middle slice and the camera is fitted to them. Reroll draws again with the
next seed. Showing a case again (Cohort widget) hides the views. The settings are stored
in the shared state, where the training widget reads them: what is previewed is what
training uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox

from ..config import AugmentConfig
from . import _workers
from ._dock import Dock
from ._form import ConfigForm
from ._layers import _zyx, put_layer
from ._state import COHORT_MASKS, IMAGE_LAYER, MASK_LAYER, VIEW_LAYERS, VIEW_OUTLINES

GAP = 4  # voxels between the case and the views, and between the two views
#: layers hidden while previewing (they would share the views' world space or cover them)
HIDDEN_WHILE_PREVIEWING = (IMAGE_LAYER, MASK_LAYER, "cohort images", COHORT_MASKS)


class AugmentWidget(Dock):
    """Set and preview the training augmentations (dock widget)."""

    TAB_TITLE = "Augment"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        labels = {f.name: "  probability" for f in dataclasses.fields(AugmentConfig) if f.name.endswith("_p")}
        self.form = ConfigForm(self.state.augment, labels=labels)
        self.form.changed.connect(self._changed)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("seed of the preview's random draw (Reroll takes the next one)")
        self.preview_button = QPushButton("Preview")
        self.preview_button.clicked.connect(self.preview)
        self.reroll_button = QPushButton("Reroll")
        self.reroll_button.clicked.connect(self.reroll)
        self.info = QLabel("Select a prepared case in the Cohort widget, then Preview.")
        self.info.setWordWrap(True)

        layout = self.body
        layout.addWidget(self.form)
        row = QHBoxLayout()
        row.addWidget(QLabel("seed"))
        row.addWidget(self.seed)
        row.addWidget(self.preview_button)
        row.addWidget(self.reroll_button)
        layout.addLayout(row)
        layout.addWidget(self.info)
        self.state.case_changed.connect(self._case_changed)
        self.state.augment_changed.connect(self._shared_changed)

    def _shared_changed(self) -> None:
        """Another dock set the augmentations (Resume loads a run's): show them."""
        try:
            shown = self.form.value()
        except ValueError:  # a half-typed value: the run's settings replace it
            shown = None
        if shown != self.state.augment:
            self.form.set_value(self.state.augment)

    def _case_changed(self, *_: Any) -> None:
        """Another case was selected: the views shown are no longer of it, so say what Preview does."""
        case = self.state.case_id
        self.info.setText(f"Case {case} selected: Preview draws two views of it." if case else self.info.text())

    def _changed(self) -> None:
        try:
            self.state.set_augment(self.form.value())
        except ValueError as exc:
            show_error(str(exc))

    def reroll(self) -> Any:
        self.seed.setValue(self.seed.value() + 1)
        return self.preview()

    def preview(self) -> Any:
        """Draw two views of the selected case in a worker; returns the worker (or None)."""
        state = self.state
        case_id = state.case_id or next(iter(state.ok_ids()), None)
        if case_id is None or case_id not in state.ok_ids():
            show_error("no prepared case selected: load and prepare a cohort, then select a case in the Cohort widget")
            return None
        try:
            cfg = self.form.value()
        except ValueError as exc:
            show_error(str(exc))
            return None
        state.set_augment(cfg)
        seed, cache = self.seed.value(), state.cache_dir

        def work() -> Any:
            # all the arrays are made here, off the GUI thread: the GUI only swaps layer data
            from ..core.augment import two_views, view_outlines
            from ..core.cache import read_crop

            image, mask, meta = read_crop(cache, case_id)
            return case_id, two_views(image, cfg, seed), view_outlines(mask, cfg, seed), meta

        self.preview_button.setEnabled(False)
        self.reroll_button.setEnabled(False)
        return _workers.start(work, owner=self, on_return=self._show, on_finish=self._done)

    def _done(self) -> None:
        self.preview_button.setEnabled(True)
        self.reroll_button.setEnabled(True)

    def _show(self, result: tuple[str, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], dict]) -> None:
        case_id, views, outlines, meta = result
        spacing = _zyx(meta.get("spacing", self.state.prepare.spacing))  # per case for crop='bbox'
        origin = self._beside_the_case(spacing)
        width = views[0].shape[-1]
        for name in HIDDEN_WHILE_PREVIEWING:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
        for i, (name, view, outline_name, outline) in enumerate(zip(VIEW_LAYERS, views, VIEW_OUTLINES, outlines)):
            view = np.asarray(view)
            view = view[0] if view.ndim == 4 else view  # the primary channel
            place = dict(scale=spacing, translate=(origin[0], origin[1], origin[2] + i * (width + GAP) * spacing[2]))
            layer = put_layer(self.viewer, name, view, colormap="gray", contrast_limits=(0.0, 255.0), **place)
            # an additive yellow image, not a Labels layer: half the GUI-thread cost to create
            line = put_layer(
                self.viewer,
                outline_name,
                outline,
                colormap="yellow",
                contrast_limits=(0, 1),
                blending="additive",
                **place,
            )
            layer.visible = line.visible = True
        self.info.setText(
            f"Case {case_id}, seed {self.seed.value()}: two independent draws of the augmentations "
            "(layers 'view 1' and 'view 2', beside the case, each with the mask's outline moved as its view; "
            "the case layers are hidden meanwhile)."
        )
        self._look_at_views(views[0].shape[-3], spacing[0], origin[0])

    def _beside_the_case(self, spacing: tuple) -> tuple[float, float, float]:
        """World (z, y, x) of the first view's corner: right of the case image, aligned in z and y."""
        if IMAGE_LAYER not in self.viewer.layers:
            return (0.0, 0.0, 0.0)
        case = self.viewer.layers[IMAGE_LAYER]
        lo, hi = np.asarray(case.extent.world)[:, -3:]
        return (float(lo[0]), float(lo[1]), float(hi[2]) + GAP * spacing[2])

    def _look_at_views(self, depth: int, dz: float, z0: float) -> None:
        """Move the z slider to the views' middle slice and fit the camera to the two views."""
        dims = self.viewer.dims
        if dims.ndim >= 3:
            dims.set_point(dims.ndim - 3, z0 + (depth // 2) * dz)
        self.viewer.reset_view(layers=[self.viewer.layers[n] for n in VIEW_LAYERS])

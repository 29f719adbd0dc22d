"""Features and evaluation: pyradiomics + SSL features, the paper's SVM evaluation, export.

Extract runs the core's ``extract`` generator (pyradiomics on the original images and
masks) in a worker with a progress bar, then the SSL representations of the prepared crops
from a checkpoint (``embed``), and joins them with the cohort's labels (``combine``).
Cases missing from either table (a failed extraction, a case skipped in preparation) are
left out of all of them, and named. Evaluate runs ``evaluate`` on three feature sets
(traditional, SSL, both; the rows of the paper's Table 2) in a worker and shows the summary
and the ROC plot; Export writes features.csv, results.csv, predictions.csv, summary.md and
the plots into a chosen folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QTextOption
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
)

from ..config import EvaluateConfig, RadiomicsConfig
from ..core.runs import RunFolder
from ..core.tables import feature_sets, label_columns
from . import _workers
from ._dock import Dock
from ._form import ConfigForm
from ._plots import ThemedFigure

#: what the two views of the evaluation show (they are different quantities)
TABLE_NOTE = "Table: mean ± sd over the test folds (and repeats): the fold mean."
ROC_NOTE = (
    "ROC: the out-of-fold scores of all test folds pooled into one curve per feature set; its "
    "legend gives that pooled AUC beside the fold-mean AUC of the table. The two differ: a "
    "fold's AUC ranks only its own cases, the pooled curve ranks every case against every other."
)


def fold_mean_auc(results: pd.DataFrame, name: str, fraction: float) -> float:
    """Mean AUC over the test folds (and repeats) of one feature set at one label fraction."""
    sel = results[
        (results["feature_set"] == name)
        & (results["metric"] == "auc")
        & (results["label_fraction"].astype(float).sub(fraction).abs() < 1e-9)
    ]
    if "fold" in sel.columns:  # per-fold rows only (a pooled row, if any, has no fold number)
        sel = sel[pd.to_numeric(sel["fold"], errors="coerce").notna()]
    return float(sel["value"].mean()) if len(sel) else float("nan")


def check_labels(sets: dict[str, pd.DataFrame], cfg: EvaluateConfig) -> None:
    """Raise ``ValueError`` (the evaluation's own message) for labels or groups it would refuse."""
    import warnings

    from ..core.folds import labels_of

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes come again, with the result
        labels_of(sets, cfg)


def dock_markdown(text: str) -> str:
    """The summary's markdown with its headings two levels down, to suit a narrow dock."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", text, flags=re.MULTILINE)


class RocPlot(ThemedFigure):
    """ROC curves of the feature sets at one label fraction, pooled over folds, in the viewer's theme."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(viewer, height=300)
        self.ax = self.subplots(1, 1)
        self.result: Any = None

    def on_theme(self) -> None:
        self.figure.clear()
        self.ax = self.subplots(1, 1)
        if self.result is not None:
            self.show_result(self.result)
        self.canvas.draw_idle()

    def show_result(self, result: Any) -> None:
        """Draw the pooled ROC of every feature set at the largest label fraction."""
        self.result = result
        self.themed(lambda: self._draw(result))
        self.canvas.draw_idle()

    def _draw(self, result: Any) -> None:
        from sklearn.metrics import roc_auc_score, roc_curve

        ax = self.ax
        ax.clear()
        preds = result.predictions
        fraction = float(preds["label_fraction"].astype(float).max())
        sel = preds[(preds["label_fraction"].astype(float) - fraction).abs() < 1e-9]
        col = "score" if len(result.classes) == 2 else f"score_{result.positive}"
        for name, g in sel.groupby("feature_set", sort=False):
            truth = g["y_true"].astype(str).to_numpy() == str(result.positive)
            if truth.all() or not truth.any() or col not in g:
                continue
            fpr, tpr, _ = roc_curve(truth, g[col].to_numpy(float))
            pooled = roc_auc_score(truth, g[col].to_numpy(float))
            mean = fold_mean_auc(result.results, name, fraction)
            ax.plot(fpr, tpr, lw=1.5, label=f"{name}: pooled AUC {pooled:.2f} (fold mean {mean:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        ax.set_xlabel("1 - specificity", fontsize=8)
        ax.set_ylabel(f"sensitivity ({result.positive})", fontsize=8)
        ax.set_title(f"ROC, {fraction:.0%} of the labels, all test folds pooled", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(loc="lower right", fontsize=7, framealpha=0.3)


class FeaturesWidget(Dock):
    """Extract, combine, evaluate and export features (dock widget)."""

    TAB_TITLE = "Features"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self._bar: Any = None
        self.sets: dict[str, pd.DataFrame] = {}
        self.result: Any = None
        self.plots: list[Path] = []
        self.progress_seen: list[tuple[int, int]] = []  # (k, n) of the extraction's and encoding's events

        self.use_trad = QCheckBox("traditional (pyradiomics)")
        self.use_trad.setChecked(True)
        self.use_ssl = QCheckBox("SSL (encoder of a checkpoint)")
        self.use_ssl.setChecked(True)
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("checkpoint or run folder (default: the current run)")
        self.radiomics_form = ConfigForm(RadiomicsConfig())
        self.evaluate_form = ConfigForm(EvaluateConfig())
        self.extract_button = QPushButton("Extract")
        self.extract_button.clicked.connect(self.extract)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._export_dialog)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        # the summary shows whole (it grows with its text); the dock scrolls, not the box
        self.summary = QTextBrowser()
        self.summary.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # break lines between words only ("specificit y" in a narrow dock); a wide table scrolls sideways
        option = self.summary.document().defaultTextOption()
        option.setWrapMode(QTextOption.WrapMode.WordWrap)
        self.summary.document().setDefaultTextOption(option)
        self.summary.setVisible(False)
        self.note = QLabel(f"{TABLE_NOTE} {ROC_NOTE}")
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.roc = RocPlot(napari_viewer)
        self.roc.setVisible(False)

        layout = self.body
        layout.addWidget(self.use_trad)
        box = QGroupBox("pyradiomics")
        QVBoxLayout(box).addWidget(self.radiomics_form)
        layout.addWidget(box)
        layout.addWidget(self.use_ssl)
        layout.addWidget(self.checkpoint)
        layout.addWidget(self.extract_button)
        box = QGroupBox("Evaluation (linear SVM, cross-validation)")
        QVBoxLayout(box).addWidget(self.evaluate_form)
        layout.addWidget(box)
        row = QHBoxLayout()
        row.addWidget(self.evaluate_button)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        layout.addWidget(self.info)
        layout.addWidget(self.note)
        layout.addWidget(self.summary)
        layout.addWidget(self.roc)
        self._busy(False)

    def _busy(self, busy: bool) -> None:
        self.extract_button.setEnabled(not busy)
        self.evaluate_button.setEnabled(not busy and bool(self.sets))
        self.export_button.setEnabled(not busy and self.result is not None)

    def run(self) -> Path | None:
        text = self.checkpoint.text().strip()
        return Path(text).expanduser() if text else self.state.run_dir

    # --- extraction -----------------------------------------------------------------
    def extract(self) -> Any:
        """Extract the chosen feature tables in a worker; returns the worker (None if refused)."""
        state = self.state
        trad, ssl, run = self.use_trad.isChecked(), self.use_ssl.isChecked(), self.run()
        try:
            if state.cohort is None or state.cases is None:
                raise FileNotFoundError("load and prepare a cohort in the Cohort widget first")
            if not (trad or ssl):
                raise ValueError("tick at least one kind of features")
            if ssl and run is None:
                raise FileNotFoundError("no checkpoint for SSL features: train in the Training widget or choose one")
            cfg = self.radiomics_form.value()
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return None
        cohort, cache, rad_cache = state.cohort, state.cache_dir, state.workdir / "radiomics_cache"
        cases = state.cases
        name = RunFolder.of(run).display_name if ssl and run is not None else "SSL"
        self._bar = progress(total=len(cohort.cases), desc="pyradiomics features") if trad else None

        def work() -> Any:
            from ..core.embed import embed_iter
            from ..core.radiomics import extract

            tables: dict[str, pd.DataFrame] = {}
            failures = pd.DataFrame(columns=["ID", "reason"])
            if trad:
                tables["trad"], failures = yield from extract(cohort, cfg, rad_cache, checks=state.prepare)
            if ssl:
                tables["ssl"] = yield from embed_iter(run, cache, device="cpu")
            return tables, failures

        def on_return(out: tuple[dict[str, pd.DataFrame], pd.DataFrame]) -> None:
            tables, failures = out
            ok = cases[cases["status"] == "ok"]
            ssl = {name: tables["ssl"]} if "ssl" in tables else {}
            self.sets, dropped = feature_sets(ok, tables.get("trad"), ssl)
            widest = max(self.sets.values(), key=lambda t: t.shape[1])
            state.set_features(widest)
            meta = len(label_columns(ok).columns)
            text = f"{len(widest)} cases, " + ", ".join(
                f"{k}: {t.shape[1] - meta} features" for k, t in self.sets.items()
            )
            if dropped:
                text += f"; left out {len(dropped)} case(s) missing from a table: {', '.join(dropped[:5])}"
                show_warning(
                    f"{len(dropped)} case(s) left out of the features (failed or skipped): {', '.join(dropped[:5])}"
                )
            for row in failures.itertuples():
                show_warning(f"pyradiomics failed on case {row.ID}: {row.reason}")
            self.info.setText(text)

        def on_finish() -> None:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._busy(False)

        def on_event(ev: Any) -> None:
            # every core event carries index (k), total (n) and message (core/events.py)
            from ..core.embed import EmbedEvent

            self.progress_seen.append((int(ev.index), int(ev.total)))
            if isinstance(ev, EmbedEvent):
                self.info.setText(f"Encoding: {ev.index} of {ev.total} cases …")
                return
            if self._bar is not None:
                self._bar.update(max(0, int(ev.index) - self._bar.n))
            self.info.setText(
                f"pyradiomics: case {ev.index} of {ev.total}" + (f" ({ev.message})" if ev.message else "")
            )

        self._busy(True)
        self.info.setText(f"Extracting: case 0 of {len(cohort.cases)} …" if trad else "Encoding the cases …")
        return _workers.start(
            work,
            on_yield=on_event,
            on_return=on_return,
            on_finish=on_finish,
            owner=self,
        )

    # --- evaluation -----------------------------------------------------------------
    def evaluate(self) -> Any:
        """Evaluate every feature set in a worker, writing the outputs to WORK/results.

        Returns the worker, or None when refused: no features yet, a bad setting, or labels
        and groups the evaluation cannot use (e.g. fewer groups than folds), checked here
        first so that the refusal shows at once, in the notification and the status line.
        """
        try:
            if not self.sets:
                raise ValueError("extract features first")
            cfg = self.evaluate_form.value()
            check_labels(self.sets, cfg)
        except ValueError as exc:
            show_error(str(exc))
            self.info.setText(f"Not evaluated: {exc}")
            return None
        sets, out = dict(self.sets), self.state.workdir / "results"

        def work() -> Any:
            from ..core.evaluate import evaluate_iter
            from ..core.summary import write_outputs

            result = yield from evaluate_iter(sets, cfg)
            return result, write_outputs(result, out)

        bars: dict[str, Any] = {}

        def on_yield(event: Any) -> None:
            # One step per SVM fit; napari's bar shows the ETA.
            bar = bars.get("bar") or bars.setdefault("bar", progress(total=event.total, desc="evaluate"))
            bar.update(1)
            self.info.setText(f"Evaluating {event.index}/{event.total}: {event.message}")

        def on_finish() -> None:
            if "bar" in bars:
                bars.pop("bar").close()
            self._busy(False)

        self._busy(True)
        self.info.setText("Evaluating (linear SVM under cross-validation) …")
        return _workers.start(work, owner=self, on_yield=on_yield, on_return=self._evaluated, on_finish=on_finish)

    def _evaluated(self, out: tuple[Any, list[Path]]) -> None:
        self.result, files = out
        self.plots = [Path(p) for p in files if str(p).endswith(".png")]
        self.summary.setMarkdown(dock_markdown(self.result.summary))
        self.summary.setVisible(True)
        self.note.setVisible(True)
        self._fit_summary()
        self.roc.setVisible(True)
        self.roc.show_result(self.result)
        self.info.setText(f"Evaluated {len(self.sets)} feature sets; outputs in {files[0].parent if files else ''}")

    def _fit_summary(self) -> None:
        """Make the summary box as tall as its text, so that it reads without scrolling."""
        doc = self.summary.document()
        width = max(200, self.summary.viewport().width())
        doc.setTextWidth(width)
        bar = self.summary.horizontalScrollBar().sizeHint().height() if doc.size().width() > width else 0
        self.summary.setFixedHeight(int(doc.size().height()) + 2 * self.summary.frameWidth() + 8 + bar)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        if self.summary.isVisible():
            self._fit_summary()

    # --- export ---------------------------------------------------------------------
    def _export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder")
        if folder:
            self.export(folder)

    def export(self, folder: str | Path) -> list[Path]:
        """Write features.csv and the evaluation's outputs (results, predictions, summary, plots)."""
        from ..core.summary import write_outputs
        from ..core.utils import write_csv

        if self.result is None or self.state.features is None:
            show_error("extract and evaluate first; then export")
            return []
        folder = Path(folder)
        try:
            write_csv(folder / "features.csv", self.state.features)
            files = [folder / "features.csv", *write_outputs(self.result, folder)]
        except OSError as exc:
            show_error(f"cannot write to {folder}: {exc}")
            return []
        show_info(f"Exported {len(files)} files to {folder}")
        return files

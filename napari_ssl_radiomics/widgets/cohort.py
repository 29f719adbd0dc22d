"""Cohort widget: load a manifest, a folder or the built-in sample cohort; prepare it; browse cases.

Load reads the cohort (rows the reader rejects appear as ``skipped`` with their reason);
Prepare runs the core's ``prepare`` generator in a worker thread with a napari progress
bar, filling in each case's status (``ok``, ``cached`` or why it was skipped). Selecting a
row shows the case's image and mask at their physical scale, as read or as prepared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..config import PrepareConfig, SampleConfig
from ..core.devices import CPU_CROP, cuda_present
from . import _workers
from ._dock import Dock
from ._form import ConfigForm
from ._layers import show_case

SAMPLE, FILES = "built-in sample cohort", "manifest CSV or folder"
COLUMNS = ["ID", "Label", "Group", "status"]
#: preparation settings folded away, so the case table is on screen at 768 px
PREPARE_ADVANCED = (
    "interpolator",
    "percentiles",
    "window",
    "resample_mask",
    "mask_label",
    "tolerance",
    "jobs",
    "margin",
)


def _group(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    QVBoxLayout(box).addWidget(widget)
    return box


class CohortWidget(Dock):
    """Choose, prepare and browse a cohort (dock widget)."""

    TAB_TITLE = "Cohort"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self._rows: dict[str, int] = {}

        self.source = QComboBox()
        self.source.addItems([SAMPLE, FILES])
        self.path = QLineEdit()
        self.path.setPlaceholderText(
            "manifest.csv (ID, Image, Mask[, Label, Group: the patient]) or a folder of image/mask pairs"
        )
        browse_file, browse_dir = QPushButton("File…"), QPushButton("Folder…")
        browse_file.clicked.connect(self._browse_file)
        browse_dir.clicked.connect(self._browse_dir)
        self.sample_form = ConfigForm(SampleConfig())
        self.workdir = QLineEdit(str(self.state.workdir))
        self.workdir.setToolTip("folder for the sample cohort, the prepared cache, the runs and the results")
        workdir_browse = QPushButton("…")
        workdir_browse.clicked.connect(self._browse_workdir)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self.load)

        cpu = not cuda_present()
        # on a CPU the paper's 96³ crops of the 48³ sample volumes are mostly padding and cost 27× a 32³ step
        self.prepare_form = ConfigForm(
            PrepareConfig(size=CPU_CROP) if cpu else PrepareConfig(), advanced=PREPARE_ADVANCED
        )
        self.device_note = QLabel(
            f"No GPU here: crop size {CPU_CROP} proposed (the paper's 96 needs a GPU)." if cpu else ""
        )
        self.device_note.setWordWrap(True)
        self.device_note.setVisible(cpu)
        self.prepare_button = QPushButton("Prepare")
        self.prepare_button.clicked.connect(self.prepare)
        self.prepare_button.setEnabled(False)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(220)
        self.table.itemSelectionChanged.connect(self._row_selected)
        self.crop = QCheckBox("show the prepared crop (else the full volume)")
        self.crop.toggled.connect(lambda _: self._show(self.state.case_id))
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        layout = self.body
        layout.addWidget(self.source)
        row = QHBoxLayout()
        for w in (self.path, browse_file, browse_dir):
            row.addWidget(w)
        layout.addLayout(row)
        self.sample_box = _group("Sample cohort", self.sample_form)
        layout.addWidget(self.sample_box)
        row = QHBoxLayout()
        row.addWidget(QLabel("work folder"))
        row.addWidget(self.workdir)
        row.addWidget(workdir_browse)
        layout.addLayout(row)
        layout.addWidget(self.load_button)
        layout.addWidget(_group("Preparation", self.prepare_form))
        layout.addWidget(self.device_note)
        layout.addWidget(self.prepare_button)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(self.crop)
        self.source.currentTextChanged.connect(self._source_changed)
        self._source_changed(self.source.currentText())
        self.state.case_changed.connect(self._case_changed)

    # --- choosing -------------------------------------------------------------------
    def _source_changed(self, text: str) -> None:
        self.sample_box.setVisible(text == SAMPLE)
        self.path.setEnabled(text == FILES)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Manifest", "", "CSV (*.csv);;All files (*)")
        if path:
            self.path.setText(path)
            self.source.setCurrentText(FILES)

    def _browse_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Cohort folder")
        if path:
            self.path.setText(path)
            self.source.setCurrentText(FILES)

    def _browse_workdir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Work folder")
        if path:
            self.workdir.setText(path)

    def _busy(self, busy: bool) -> None:
        self.load_button.setEnabled(not busy)
        self.prepare_button.setEnabled(not busy and self.state.cohort is not None)

    # --- loading --------------------------------------------------------------------
    def load(self) -> Any:
        """Read the cohort (writing the sample cohort first) in a worker; returns the worker."""
        self.state.workdir = Path(self.workdir.text()).expanduser()
        source = self.source.currentText()
        try:
            sample_cfg = self.sample_form.value()
        except ValueError as exc:
            show_error(str(exc))
            return None
        path, workdir = self.path.text().strip(), self.state.workdir
        if source == FILES and not path:
            show_error("choose a manifest CSV or a folder of image/mask pairs first")
            return None

        def work() -> Any:
            from ..core.cohort import load_cohort

            if source == SAMPLE:
                from ..core.sample import write_sample_cohort

                return load_cohort(write_sample_cohort(workdir / "sample", sample_cfg))
            return load_cohort(path)

        self._busy(True)
        return _workers.start(work, owner=self, on_return=self._loaded, on_finish=lambda: self._busy(False))

    def _loaded(self, cohort: Any) -> None:
        self.state.set_cohort(cohort)
        self.table.setRowCount(0)
        self._rows = {}
        for case in cohort.cases:
            self._add_row(case.id, case.label, case.group, "not prepared")
        for where, message in cohort.problems:
            self._add_row(str(where), "", "", f"skipped: {message}")
        self.summary.setText(
            f"{len(cohort.cases)} cases from {cohort.source}"
            + (f"; {len(cohort.problems)} rows rejected" if cohort.problems else "")
        )
        if cohort.problems:
            show_info(f"{len(cohort.problems)} manifest rows were rejected; see their status in the table")

    def _add_row(self, case_id: str, label: str, group: str, status: str) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        for col, text in enumerate((case_id, label, group, status)):
            item = QTableWidgetItem(str(text))
            item.setToolTip(str(text))
            self.table.setItem(row, col, item)
        self._rows[case_id] = row

    def _set_status(self, case_id: str, status: str) -> None:
        row = self._rows.get(case_id)
        if row is not None:
            self.table.item(row, 3).setText(status)
            self.table.item(row, 3).setToolTip(status)

    # --- preparing ------------------------------------------------------------------
    def prepare(self) -> Any:
        """Prepare the loaded cohort into the work folder's cache in a worker; returns the worker."""
        try:
            cfg = self.prepare_form.value()
        except ValueError as exc:
            show_error(str(exc))
            return None
        cohort, cache = self.state.cohort, self.state.cache_dir
        bar = progress(total=len(cohort.cases), desc="Preparing cases")

        def work() -> Any:
            from ..core.preprocess import prepare

            return prepare(cohort, cfg, cache)

        def on_event(event: Any) -> None:
            bar.update(max(0, int(event.index) - bar.n))
            self.summary.setText(f"Preparing: case {event.index} of {event.total} ({event.case_id})")
            status = event.status if event.status != "skipped" else f"skipped: {event.reason}"
            self._set_status(event.case_id, status)

        def on_return(cases: Any) -> None:
            self.state.set_cases(cases, cfg)
            ok = int((cases["status"] != "skipped").sum())
            self.summary.setText(f"{ok} of {len(cases)} cases prepared in {cache}")

        def on_finish() -> None:
            bar.close()
            self._busy(False)

        self._busy(True)
        return _workers.start(work, owner=self, on_yield=on_event, on_return=on_return, on_finish=on_finish)

    # --- browsing -------------------------------------------------------------------
    def _row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            case_id = self.table.item(rows[0].row(), 0).text()
            if self.state.cohort is not None and any(c.id == case_id for c in self.state.cohort.cases):
                self.state.set_case(case_id)

    def _case_changed(self, case_id: str) -> None:
        row = self._rows.get(case_id)
        if row is not None and self.table.currentRow() != row:
            self.table.selectRow(row)
        self._show(case_id)

    def _show(self, case_id: str | None) -> None:
        if not case_id:
            return
        crop = self.crop.isChecked()
        if crop and case_id not in self.state.ok_ids():
            show_error(f"case {case_id} has no prepared crop (not prepared yet, or skipped)")
            return
        try:
            show_case(self.viewer, self.state, case_id, crop)
        except Exception as exc:  # a broken case: the reader's message names it and the fix
            show_error(str(exc))

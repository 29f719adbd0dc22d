"""Training widget: 3DSiam with the RE/SE module, run in the background with a live plot.

Start turns into Stop. The run is the core's ``train`` generator inside a napari
``thread_worker``: each step's event goes to the GUI thread, which moves a napari progress
bar and collects the loss and the collapse metric; a timer redraws the plot at most
:data:`REDRAW_S` apart, so a fast run cannot flood the event loop. Stop asks the core to
stop (its ``stop`` callable), which saves the checkpoint and the log; Resume continues a
run from its checkpoint. The augmentations are the ones set in the Augmentation widget.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.utils import progress
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from ..config import TrainConfig
from . import _workers
from ._form import ConfigForm
from ._state import get_state

REDRAW_S = 0.3  # shortest time between two redraws of the live plot, seconds


def torch_threads() -> int:
    """Threads for torch in the worker: all cores but one, so the GUI thread keeps a core.

    The GIL is released inside torch's kernels, but with every core busy in them the GUI
    thread still waits for the OS scheduler; leaving one core free keeps the viewer fluid.
    """
    from ..core.utils import cpu_count

    return max(1, cpu_count() - 1)


class LossPlot(FigureCanvasQTAgg):
    """Loss and collapse metric against the iteration (two stacked axes).

    Every redraw runs in the GUI thread, so it is kept cheap: the lines are created once
    and only their data change, and the margins are fixed (``tight_layout`` would measure
    every tick label on every draw, which doubles the cost).
    """

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4, 3))
        super().__init__(self.figure)
        self.ax_loss, self.ax_collapse = self.figure.subplots(2, 1, sharex=True)
        self.figure.subplots_adjust(left=0.2, right=0.97, top=0.96, bottom=0.15, hspace=0.12)
        (self.loss_line,) = self.ax_loss.plot([], [], color="tab:blue", lw=1)
        (self.collapse_line,) = self.ax_collapse.plot([], [], color="tab:orange", lw=1)
        self.ax_loss.set_ylabel("loss")
        # a healthy representation has a std of about 1/sqrt(d) (d = 256); collapse drives it to 0
        self.ax_collapse.axhline(1 / 16, color="grey", lw=0.8, ls="--")
        self.ax_collapse.set_ylabel("collapse (std)")
        self.ax_collapse.set_xlabel("iteration")
        self.clear()

    def clear(self) -> None:
        self.iterations: list[int] = []
        self.loss: list[float] = []
        self.collapse: list[float] = []
        self.draws = 0
        self.redraw()

    def add(self, iteration: int, loss: float, collapse: float) -> None:
        self.iterations.append(iteration)
        self.loss.append(loss)
        self.collapse.append(collapse)

    def redraw(self) -> None:
        self.loss_line.set_data(self.iterations, self.loss)
        self.collapse_line.set_data(self.iterations, self.collapse)
        for ax in (self.ax_loss, self.ax_collapse):
            ax.relim()
            ax.autoscale_view()
        self.draw_idle()
        self.draws += 1


class TrainWidget(QWidget):
    """Train 3DSiam (none / RE / SE) on the prepared cohort (dock widget)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self._worker: Any = None
        self._stop = threading.Event()
        self._bar: Any = None
        self._dirty = False
        self.events: list[Any] = []  # the events of the current run, in order
        self.result: Any = None

        self.form = ConfigForm(
            TrainConfig(),
            labels={
                "clusters": "k (clusters)",
                "pool": "pool size",
                "lr": "learning rate",
                "precision": "mixed precision",
            },
            suggestions={"device": ("auto", "cuda", "cpu")},
        )
        self.out = QLineEdit()
        self.out.setPlaceholderText("run folder (default: WORK/runs/MODE)")
        self.out.setToolTip("folder of the run: checkpoint.pt, history.csv, config.json")
        self.resume = QCheckBox("resume from the run folder's checkpoint")
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self._toggle)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        self.plot.setMinimumHeight(220)
        self._timer = QTimer(self)
        self._timer.setInterval(int(REDRAW_S * 1000))
        self._timer.timeout.connect(self._redraw)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form)
        row = QHBoxLayout()
        row.addWidget(QLabel("output folder"))
        row.addWidget(self.out)
        layout.addLayout(row)
        layout.addWidget(self.resume)
        layout.addWidget(self.start_button)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def run_dir(self, cfg: TrainConfig, resume: bool) -> Path:
        """The folder given, else the current run (to resume) or a new WORK/runs/MODE[-n]."""
        text = self.out.text().strip()
        if text:
            return Path(text).expanduser()
        if resume and self.state.run_dir is not None:
            return self.state.run_dir
        base = self.state.workdir / "runs" / cfg.mode
        n = 1
        out = base
        while (out / "checkpoint.pt").exists():
            n += 1
            out = base.with_name(f"{cfg.mode}-{n}")
        return out

    def _toggle(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self) -> Any:
        """Start (or resume) training in a worker; returns the worker (None if refused)."""
        from napari.utils.notifications import show_error

        try:
            cfg = self.form.value()
            if not self.state.ok_ids():
                raise FileNotFoundError(
                    "no prepared cohort: load a cohort and press Prepare in the Cohort widget first"
                )
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return None
        resume = self.resume.isChecked()
        out, augment, cache = self.run_dir(cfg, resume), self.state.augment, self.state.cache_dir
        self._stop.clear()
        self.events = []
        self.result = None
        self.plot.clear()
        history = out / "history.csv"
        if resume and history.exists():  # continue the curve of the run being resumed
            import pandas as pd

            for row in pd.read_csv(history).itertuples():
                self.plot.add(int(row.iteration), float(row.loss), float(row.collapse))
            self.plot.redraw()
        self._bar = progress(total=cfg.iterations, desc=f"Training ({cfg.mode})")
        stop = self._stop.is_set

        def work() -> Any:
            import torch

            from ..core.train import train

            torch.set_num_threads(torch_threads())
            return train(cache, out, cfg, augment, resume=resume, stop=stop)

        self.start_button.setText("Stop")
        self.status.setText(f"Starting {cfg.mode} training in {out} …")
        self._timer.start()
        return _workers.start(work, owner=self, on_yield=self._event, on_return=self._finished, on_finish=self._ended)

    def stop(self) -> None:
        """Ask the run to stop; the core saves the checkpoint and the log, then the worker ends."""
        self._stop.set()
        self.start_button.setEnabled(False)
        self.status.setText("Stopping: saving the checkpoint …")

    def _event(self, ev: Any) -> None:
        self.events.append(ev)
        if ev.kind == "step":
            self.plot.add(ev.iteration, ev.loss, ev.collapse)
            self._dirty = True
            if self._bar is not None:
                self._bar.update(max(0, ev.iteration - self._bar.n))
            sizes = f", clusters {ev.cluster_sizes}" if ev.cluster_sizes else ""
            self.status.setText(
                f"iteration {ev.iteration}/{ev.total} ({ev.phase}): loss {ev.loss:.4f}, "
                f"collapse {ev.collapse:.4f}, {ev.samples_per_s:.1f} samples/s{sizes}"
            )
        elif ev.kind == "warning":
            show_warning(ev.message)
        elif ev.kind == "checkpoint":
            self.status.setText(f"checkpoint at iteration {ev.iteration}")

    def _redraw(self) -> None:
        if self._dirty:
            self._dirty = False
            self.plot.redraw()

    def _finished(self, result: Any) -> None:
        self.result = result
        self.state.set_run(result.run_dir)
        self.resume.setChecked(False)
        what = "stopped" if result.stopped else "finished"
        show_info(f"Training {what}; checkpoint and history in {result.run_dir}")
        self.status.setText(f"Training {what}: {result.checkpoint}")

    def _ended(self) -> None:
        self._timer.stop()
        self._dirty = True
        self._redraw()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.start_button.setText("Start")
        self.start_button.setEnabled(True)

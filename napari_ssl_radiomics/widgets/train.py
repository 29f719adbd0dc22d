"""Training widget: 3DSiam with the RE/SE module, run in the background with a live plot.

Start turns into Stop; Resume continues the current run (or the output folder's) from its
checkpoint, with the run's own settings (loaded into the form). The run is the core's ``train`` generator inside a napari ``thread_worker``:
each step's event goes to the GUI thread, which moves a napari progress bar and collects
the loss and the collapse metric; a timer redraws the plot at most :data:`REDRAW_S` apart,
so a fast run cannot flood the event loop. Stop asks the core to stop (its ``stop``
callable), which saves the checkpoint and the log. The status line ends in what happened:
stopped, finished, diverged or failed. The augmentations are the ones set in the
Augmentation widget.

The live plot (themed like the viewer, napari-matplotlib) has three panels: the loss, the
collapse metric (the train-mode spread, which sees only complete collapse) and the
representation health of the core's checks (``health`` events: effective rank and, with
labels, the linear-probe AUC of a fixed probe set, step 0 being the untrained encoder).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any

from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton

from ..config import TrainConfig
from ..core.devices import CPU_CROP, CPU_TRAIN, cpu_proposal, cuda_present
from ..core.health import PROBE_CAVEAT, verdict
from ..core.runs import CHECKPOINT, CONFIG_JSON, HEALTH_CSV, HISTORY_CSV, RUNS_DIR, RunFolder
from . import _workers
from ._dock import Dock
from ._form import ConfigForm
from ._plots import ThemedFigure

REDRAW_S = 0.3  # shortest time between two redraws of the live plot, seconds
#: at most this share of the GUI thread's time goes to redrawing the live plot: on a loaded
#: machine one redraw of the three panels takes 0.1-0.6 s, so the interval grows with it
REDRAW_SHARE = 0.2
RANK_COLOUR, AUC_COLOUR = "tab:green", "tab:purple"
#: the caveat line under the health figures (its tool tip: the whole :data:`PROBE_CAVEAT`)
PROBE_CAVEAT_SHORT = (
    "The verdict uses no labels. The probe AUC uses every label, test folds included: it monitors the run; "
    "tuning the learning rate or iterations on it makes the cross-validated results optimistic."
)


#: the settings in the collapsed "Advanced settings" section: Start, the status and the plot
#: stay on screen at 768 px
ADVANCED = (
    "pool",
    "warmup_epochs",
    "optimizer",
    "momentum",
    "weight_decay",
    "schedule",
    "lr_warmup",
    "out_bn",
    "vc_weight",
    "pred_hidden",
    "fix_pred_lr",
    "export",
    "health_cases",
    "rubik_permutations",
    "rubik_gap",
    "device",
    "precision",
    "seed",
    "checkpoint_every",
    "embed_batch_size",
    "memory_gb",
)
CPU_NOTE = (
    f"No GPU here: proposed a CPU run of minutes ({CPU_TRAIN['iterations']} steps, {CPU_TRAIN['health_cases']} "
    f"health cases; crop {CPU_CROP}³ in Cohort › Prepare). The paper's sizes (2000 steps, 96³) need a GPU."
)
GPU_NOTE = "GPU found: the paper's sizes (2000 steps, 96³ crops, 256 health cases)."


def eta_text(seconds: float) -> str:
    """'≈ 6 min left' (minutes from 2 min on, else seconds rounded to 10)."""
    if seconds >= 90:
        return f"≈ {round(seconds / 60)} min left"
    return f"≈ {max(10, round(seconds / 10) * 10)} s left"


def torch_threads() -> int:
    """Threads for torch in the worker: all cores but one, so the GUI thread keeps a core.

    The GIL is released inside torch's kernels, but with every core busy in them the GUI
    thread still waits for the OS scheduler; leaving one core free keeps the viewer fluid.
    """
    from ..core.utils import cpu_count

    return max(1, cpu_count() - 1)


class LossPlot(ThemedFigure):
    """Loss, collapse metric and representation health against the iteration.

    Every redraw runs in the GUI thread, so it is kept cheap: the lines are created once
    and only their data change, and the margins are fixed (a layout engine would measure
    every tick label on every draw, which doubles the cost).
    """

    def __init__(self, viewer: Any) -> None:
        super().__init__(viewer, height=380, fast=True)
        self._build()
        self.clear()

    def _build(self) -> None:
        self.figure.clear()
        # margins on the grid itself: the figure's (placeholder) layout engine refuses subplots_adjust
        margins = {"left": 0.2, "right": 0.84, "top": 0.98, "bottom": 0.09, "hspace": 0.12}
        self.ax_loss, self.ax_collapse, self.ax_health = self.subplots(3, 1, sharex=True, gridspec_kw=margins)
        self.ax_auc = self.themed(self.ax_health.twinx)

        def lines() -> None:
            (self.loss_line,) = self.ax_loss.plot([], [], color="tab:blue", lw=1)
            (self.collapse_line,) = self.ax_collapse.plot([], [], color="tab:orange", lw=1)
            (self.rank_line,) = self.ax_health.plot([], [], "o-", color=RANK_COLOUR, lw=1, ms=3)
            (self.auc_line,) = self.ax_auc.plot([], [], "s-", color=AUC_COLOUR, lw=1, ms=3)
            (self.rank_start,) = self.ax_health.plot([], [], ls="--", color=RANK_COLOUR, lw=0.8)
            (self.auc_start,) = self.ax_auc.plot([], [], ls="--", color=AUC_COLOUR, lw=0.8)
            self.ax_loss.set_ylabel("loss", fontsize=8)
            # a healthy representation has a std of about 1/sqrt(d) (d = 256); collapse drives it to 0
            self.ax_collapse.axhline(1 / 16, color="grey", lw=0.8, ls="--")
            self.ax_collapse.set_ylabel("collapse (std)", fontsize=8)
            self.ax_health.set_ylabel("effective rank", fontsize=8, color=RANK_COLOUR)
            self.ax_auc.set_ylabel("probe AUC", fontsize=8, color=AUC_COLOUR)
            self.ax_health.set_xlabel("iteration", fontsize=8)
            # inside the health panel: the collapse panel's dashed line means something else
            self.ax_health.text(
                0.02, 0.06, "dashed: untrained encoder", transform=self.ax_health.transAxes, fontsize=7, alpha=0.8
            )
            for ax in (self.ax_loss, self.ax_collapse, self.ax_health, self.ax_auc):
                ax.tick_params(labelsize=7)

        self.themed(lines)

    def on_theme(self) -> None:
        self._build()
        self.redraw()

    def clear(self, total: int = 1) -> None:
        """Empty the curves and reset the axes (a new run must not keep the last run's scales)."""
        self.iterations: list[int] = []
        self.loss: list[float] = []
        self.collapse: list[float] = []
        self.health: list[tuple[int, dict[str, float]]] = []
        self.draws = 0
        # relim() of empty lines keeps the old limits: set neutral ones, then let the data rescale them
        for ax in (self.ax_loss, self.ax_collapse, self.ax_health, self.ax_auc):
            ax.set_ylim(0, 1)
        self.ax_health.set_xlim(0, max(1, total))
        for ax in (self.ax_loss, self.ax_collapse, self.ax_health, self.ax_auc):
            ax.set_autoscale_on(True)
        self.redraw()

    def add(self, iteration: int, loss: float, collapse: float) -> None:
        self.iterations.append(iteration)
        self.loss.append(loss)
        self.collapse.append(collapse)

    def add_health(self, iteration: int, figures: dict[str, float]) -> None:
        """Add the check at ``iteration``, or replace the one held there; the series stays in order.

        A resumed run yields its earlier checks again (for a consumer that starts fresh),
        while the widget has already read them from the health table: appending them would draw
        a false line back to iteration 0.
        """
        self.health = [(i, f) for i, f in self.health if i != iteration]
        self.health.append((iteration, dict(figures)))
        self.health.sort(key=lambda pair: pair[0])

    def _health_series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = [(i, f[key]) for i, f in self.health if key in f and not math.isnan(float(f[key]))]
        return [p[0] for p in pairs], [float(p[1]) for p in pairs]

    def redraw(self) -> None:
        self.loss_line.set_data(self.iterations, self.loss)
        self.collapse_line.set_data(self.iterations, self.collapse)
        for line, start, key in (
            (self.rank_line, self.rank_start, "effective_rank"),
            (self.auc_line, self.auc_start, "probe_auc"),
        ):
            x, y = self._health_series(key)
            line.set_data(x, y)
            last = max([*x, *self.iterations, 1])
            start.set_data(([0, last], [y[0], y[0]]) if x and x[0] == 0 else ([], []))
        for ax in (self.ax_loss, self.ax_collapse, self.ax_health, self.ax_auc):
            ax.relim()
            ax.autoscale_view()
        self.canvas.draw_idle()
        self.draws += 1


def describe_health(figures: dict[str, float], first: dict[str, float] | None) -> str:
    """The verdict in words (label-free figures only, which its reason quotes), then the probe AUC
    as a monitoring figure; for the untrained encoder itself, its figures."""
    word, why = verdict(figures, first)
    head = f"<b>{word}</b>: {why}." if word else f"{why[0].upper()}{why[1:]}:"
    shown = [("probe_auc", "probe AUC (monitoring only)", "{:.2f}")]
    if not word:
        shown = [("effective_rank", "effective rank", "{:.1f}"), ("top_pc_share", "top-PC share", "{:.2f}"), *shown]
    parts = []
    for key, name, fmt in shown:
        if key in figures:
            text = f"{name} {fmt.format(figures[key])}"
            if first and key in first and first is not figures:
                text += f" (untrained {fmt.format(first[key])})"
            parts.append(text)
    return f"{head} {', '.join(parts)}".strip()


class TrainWidget(Dock):
    """Train 3DSiam (none / RE / SE) on the prepared cohort (dock widget)."""

    TAB_TITLE = "Training"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self._stop = threading.Event()
        self._bar: Any = None
        self._dirty = False
        self._outcome = ""  # the final status, once known (later events never overwrite it)
        self._eta_from: tuple[float, int] | None = None  # (time, iteration) of the run's first step seen
        self.events: list[Any] = []  # the events of the current run, in order
        self.draw_seconds: list[float] = []  # how long each redraw of the live plot took
        self.result: Any = None

        cpu = not cuda_present()
        self.form = ConfigForm(
            cpu_proposal(TrainConfig()) if cpu else TrainConfig(),
            advanced=ADVANCED,
            labels={
                "clusters": "k (clusters)",
                "pool": "pool size",
                "lr": "learning rate",
                "precision": "mixed precision",
            },
            suggestions={"device": ("auto", "cuda", "cpu")},
        )
        # one line saying what the machine gets: a run of minutes on a CPU, the paper's sizes on a GPU
        self.device_note = QLabel(CPU_NOTE if cpu else GPU_NOTE)
        self.device_note.setWordWrap(True)
        self.out = QLineEdit()
        self.out.setPlaceholderText("run folder (default: WORK/runs/MODE)")
        self.out.setToolTip(f"folder of the run: {CHECKPOINT}, {HISTORY_CSV}, {HEALTH_CSV}, {CONFIG_JSON}")
        self.out.textChanged.connect(lambda _: self._buttons())
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("start a new run (Stop while it runs)")
        self.start_button.clicked.connect(self._toggle)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(
            "continue the run folder's (or the last run's) checkpoint with the run's own settings (loaded into the "
            "form), to the iterations set if more"
        )
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.health_info = QLabel("")
        self.health_info.setWordWrap(True)
        # the probe uses every label, test folds included: say so wherever it is shown (core/health.py)
        self.probe_caveat = QLabel(PROBE_CAVEAT_SHORT)
        self.probe_caveat.setWordWrap(True)
        self.probe_caveat.setToolTip(PROBE_CAVEAT)
        self.probe_caveat.setVisible(False)
        self.plot = LossPlot(napari_viewer)
        self._timer = QTimer(self)
        self._timer.setInterval(int(REDRAW_S * 1000))
        self._timer.timeout.connect(self._redraw)

        self.body.addWidget(self.device_note)
        self.body.addWidget(self.form)
        row = QHBoxLayout()
        row.addWidget(QLabel("output folder"))
        row.addWidget(self.out)
        self.body.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.resume_button)
        self.body.addLayout(row)
        self.body.addWidget(self.status)
        self.body.addWidget(self.plot)
        self.body.addWidget(self.health_info)
        self.body.addWidget(self.probe_caveat)
        self.state.run_changed.connect(self._buttons)
        self._buttons()

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _resumable(self) -> Path | None:
        text = self.out.text().strip()
        folder = Path(text).expanduser() if text else self.state.run_dir
        return folder if folder is not None and RunFolder(folder).has_checkpoint else None

    def _buttons(self) -> None:
        self.resume_button.setEnabled(not self.running and self._resumable() is not None)

    def run_dir(self, cfg: TrainConfig, resume: bool) -> Path:
        """The folder given, else the current run (to resume) or a new WORK/runs/MODE[-n]."""
        text = self.out.text().strip()
        if text:
            return Path(text).expanduser()
        if resume and self.state.run_dir is not None:
            return self.state.run_dir
        return RunFolder.next_free(self.state.workdir / RUNS_DIR, cfg.mode).path

    def _toggle(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def start(self, resume: bool = False) -> Any:
        """Start (or resume) training in a worker; returns the worker (None if refused)."""
        try:
            cfg = self.form.value()
            if not self.state.ok_ids():
                raise FileNotFoundError(
                    "no prepared cohort: load a cohort and press Prepare in the Cohort widget first"
                )
        except (ValueError, FileNotFoundError) as exc:
            show_error(str(exc))
            return None
        out = self.run_dir(cfg, resume)
        loaded = ""
        if resume:
            cfg, loaded = self._run_settings(out, cfg)
        augment, cache = self.state.augment, self.state.cache_dir
        self._stop.clear()
        self.events = []
        self.result = None
        self._outcome = ""
        self._eta_from = None
        self.health_info.setText("")
        self.plot.clear(cfg.iterations)
        if resume:
            self._load_curves(out)
        self._bar = progress(total=cfg.iterations, desc=f"Training ({cfg.mode})")
        stop = self._stop.is_set

        def work() -> Any:
            import torch

            from ..core.train import train

            torch.set_num_threads(torch_threads())
            return train(cache, out, cfg, augment, resume=resume, stop=stop)

        self.start_button.setText("Stop")
        self.start_button.setToolTip("stop after the current step; the checkpoint and the log are kept")
        self.resume_button.setEnabled(False)
        self.status.setText(f"{loaded}{'Resuming' if resume else 'Starting'} {cfg.mode} training in {out} …")
        if loaded:
            show_info(loaded.strip())
        self._timer.start()
        return _workers.start(
            work,
            owner=self,
            on_yield=self._event,
            on_return=self._finished,
            on_error=self._failed,
            on_finish=self._ended,
        )

    def _run_settings(self, out: Path, cfg: TrainConfig) -> tuple[TrainConfig, str]:
        """The settings to resume ``out`` with, and a sentence when they differ from the form's.

        A run continues with the settings it was trained with (its ``config.json``): they
        are loaded into the form and the shared augmentations, so that resuming a run made
        with other settings (a GPU's, an older proposal's) is not refused. The form keeps
        the settings a run may change (``RESUMABLE``), ``iterations`` only upwards.
        """
        from ..core.train import RESUMABLE, saved_config

        try:
            saved, augment = saved_config(out)
        except (OSError, ValueError, KeyError, TypeError):
            return cfg, ""  # no usable record: the engine's own check names the problem
        keep = {name: getattr(cfg, name) for name in RESUMABLE}
        keep["iterations"] = max(cfg.iterations, saved.iterations)
        run_cfg = dataclasses.replace(saved, **keep)
        changed = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(run_cfg, f.name)]
        changed += ["augmentations"] if augment != self.state.augment else []
        if not changed:
            return run_cfg, ""
        self.form.set_value(run_cfg)
        self.state.set_augment(augment)
        names = ", ".join(name.replace("_", " ") for name in changed)
        return run_cfg, f"Loaded the run's own settings into the form ({names}). "

    def _load_curves(self, out: Path) -> None:
        """Continue the curves of the run being resumed (its history and health checks)."""
        run = RunFolder(out)
        if run.has_history:
            for row in run.history().itertuples():
                self.plot.add(int(row.iteration), float(row.loss), float(row.collapse))
        health = run.health()
        if health is not None:
            keys = [c for c in health.columns if c not in ("iteration", "cases")]
            for row in health.to_dict("records"):
                self.plot.add_health(int(row["iteration"]), {k: float(row[k]) for k in keys})
        self.plot.redraw()

    def stop(self) -> None:
        """Ask the run to stop; the core saves the checkpoint and the log, then the worker ends."""
        self._stop.set()
        self.start_button.setEnabled(False)
        self.status.setText("Stopping: saving the checkpoint …")

    def _event(self, ev: Any) -> None:
        self.events.append(ev)
        kind = ev.kind
        if ev.level == "warning":
            show_warning(ev.message)
        elif kind == "step":
            row = ev.row
            self.plot.add(ev.iteration, row.loss, row.collapse)
            self._dirty = True
            if self._bar is not None:
                self._bar.update(max(0, ev.iteration - self._bar.n))
            sizes = f", clusters {row.cluster_sizes}" if row.cluster_sizes else ""
            self._say(
                f"iteration {ev.index} of {ev.total} ({row.phase}){self._eta(ev.iteration, ev.total)}: "
                f"loss {row.loss:.4f}, collapse {row.collapse:.4f}, {row.samples_per_s:.1f} samples/s{sizes}"
            )
        elif kind == "progress":
            self._say(ev.message)
        elif kind == "health":
            figures = dict(ev.health)
            if figures:
                self.plot.add_health(ev.iteration, figures)
                self._dirty = True
                first = self.plot.health[0][1] if self.plot.health and self.plot.health[0][0] == 0 else None
                what = "untrained encoder" if ev.iteration == 0 else f"iteration {ev.iteration}"
                self.health_info.setText(f"Health ({what}): {describe_health(figures, first)}")
                self.probe_caveat.setVisible("probe_auc" in figures)
        elif kind == "checkpoint":
            self._say(f"checkpoint at iteration {ev.iteration} of {ev.total}")
        elif kind == "stopped":
            self._say(f"stopping at iteration {ev.iteration} of {ev.total}: saving …", stopping=True)

    def _eta(self, iteration: int, total: int) -> str:
        """', ≈ 6 min left' from the wall-clock pace since the first step seen (checks included)."""
        now = time.perf_counter()
        if self._eta_from is None:
            self._eta_from = (now, iteration)
            return ""
        began, first = self._eta_from
        if iteration <= first or iteration >= total:
            return ""
        return ", " + eta_text((now - began) / (iteration - first) * (total - iteration))

    def _say(self, text: str, stopping: bool = False) -> None:
        """Show a progress line, unless the run's outcome is known or a Stop was asked for (the
        steps already queued must not overwrite "Stopping …")."""
        if not self._outcome and (stopping or not self._stop.is_set()):
            self.status.setText(text)

    def _redraw(self) -> None:
        if self._dirty:
            self._dirty = False
            began = time.perf_counter()
            self.plot.redraw()
            self.plot.canvas.draw()  # now, so that its cost is measured (draw_idle would defer it)
            spent = time.perf_counter() - began
            self.draw_seconds.append(spent)
            self._timer.setInterval(int(1000 * max(REDRAW_S, spent / REDRAW_SHARE)))

    def _finished(self, result: Any) -> None:
        self.result = result
        self.state.set_run(result.run_dir)
        done = int(result.history["iteration"].max()) if len(result.history) else 0
        total = self.events[-1].total if self.events else done
        if result.stopped:
            self._outcome = f"Stopped at iteration {done} of {total}; Resume continues from {result.checkpoint}"
        else:
            self._outcome = f"Finished: {done} of {total} iterations; checkpoint {result.checkpoint}"
        show_info(self._outcome)

    def _failed(self, exc: Exception) -> None:
        cause = exc.__cause__ or exc
        if type(cause).__name__ == "TrainingDiverged":
            self._outcome = f"Diverged: {exc}. The last good checkpoint was kept."
        else:
            self._outcome = f"Failed: {exc}"

    def _ended(self) -> None:
        self._timer.stop()
        self._dirty = True
        self._redraw()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.status.setText(self._outcome or "Training ended.")
        self.start_button.setText("Start")
        self.start_button.setToolTip("start a new run (Stop while it runs)")
        self.start_button.setEnabled(True)
        self._buttons()

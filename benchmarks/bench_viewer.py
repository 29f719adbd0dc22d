"""The Training dock as a new user meets it: a scripted GUI run with the dock's own settings.

Opens a real napari viewer (1366×768), prepares the built-in sample cohort at the crop the
dock proposes for this machine, then clicks the Training dock's buttons and measures the
issue-18 targets:

- the first step's figures after Start (the first "step" event drawn), target ≤ 15 s;
- Stop latency during the step-0 health check, during training and inside an SE step
  (while it encodes its candidate pool), target ≤ 3 s;
- the default run's total (the settings the dock proposes here, untouched), target ≤ 10 min
  on a CPU, and whether an ETA ("≈ … left") was shown from the second step on;
- the longest stall of the GUI thread (a 10 ms QTimer's largest gap), target < 0.5 s.

Needs a display: ``xvfb-run -s "-screen 0 1366x768x24" python benchmarks/bench_viewer.py``
(``QT_QPA_PLATFORM=xcb``). ``--skip-full`` leaves out the whole default run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


class Ticks:
    """The largest gap between ticks of a 10 ms QTimer: how long the GUI thread stalled."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.last = time.perf_counter()
        self.worst = 0.0
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


def wait(until: Callable[[], bool], timeout: float) -> float:
    """Run the event loop until ``until()`` holds; the seconds it took (inf on timeout)."""
    from qtpy.QtWidgets import QApplication

    began = time.perf_counter()
    while not until():
        if time.perf_counter() - began > timeout:
            return float("inf")
        QApplication.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - began


def machine() -> str:
    import torch

    from napari_ssl_radiomics.core.utils import cpu_count, cpu_model

    load = "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_model()}, {cpu_count()} cores, {gpu}, {load}; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}"
    )


def prepare(work: Path) -> Path:
    """The sample cohort prepared at the crop the Cohort dock proposes on this machine."""
    from napari_ssl_radiomics.config import PrepareConfig, SampleConfig
    from napari_ssl_radiomics.core.devices import CPU_CROP, cuda_present
    from napari_ssl_radiomics.core.preprocess import prepare_all
    from napari_ssl_radiomics.core.sample import write_sample_cohort

    manifest = write_sample_cohort(work / "sample", SampleConfig())
    crop = PrepareConfig().size if cuda_present() else CPU_CROP
    prepare_all(manifest, PrepareConfig(size=crop), work / "prepared")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true", help="leave out the whole default run")
    args = parser.parse_args()

    import napari

    from napari_ssl_radiomics.config import PrepareConfig
    from napari_ssl_radiomics.core.cache import read_cases
    from napari_ssl_radiomics.core.cohort import load_cohort
    from napari_ssl_radiomics.core.devices import CPU_CROP, cuda_present
    from napari_ssl_radiomics.widgets._state import get_state

    work = Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    manifest = prepare(work)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    state = get_state(viewer)
    state.workdir = work
    state.set_cohort(load_cohort(manifest))
    state.set_cases(
        read_cases(work / "prepared"), PrepareConfig(size=PrepareConfig().size if cuda_present() else CPU_CROP)
    )
    _, dock = viewer.window.add_plugin_dock_widget("napari-ssl-radiomics", "Training (3DSiam + RE/SE)")
    wait(lambda: False, 0.5)
    cfg = dock.form.value()
    rows: list[tuple[str, str, str]] = []

    def run_until(what: Callable[[], bool], name: str) -> float:
        dock.out.setText(str(work / "runs" / name))
        dock.start_button.click()
        return wait(what, 600)

    def stop_latency() -> float:
        clicked = time.perf_counter()
        dock.start_button.click()
        wait(lambda: dock._worker is None, 600)
        return time.perf_counter() - clicked

    # 1. Stop during the step-0 health check
    run_until(lambda: any(e.kind == "progress" for e in dock.events), "stop-in-check")
    rows.append(("Stop latency, during the step-0 health check", f"{stop_latency():.2f} s", "≤ 3 s"))
    # 2. the first step's figures after Start, then Stop during training
    ticks = Ticks()
    began = time.perf_counter()
    run_until(lambda: any(e.kind == "step" for e in dock.events), "first-step")
    first = time.perf_counter() - began
    wait(lambda: dock.plot.draws > 1 and len(dock.plot.loss) > 0, 30)  # drawn, not only received
    rows.append(
        ("first step's figures after Start", f"{time.perf_counter() - began:.1f} s (event {first:.1f} s)", "≤ 15 s")
    )
    wait(lambda: sum(e.kind == "step" for e in dock.events) >= 2, 120)
    rows.append(("Stop latency, during training", f"{stop_latency():.2f} s", "≤ 3 s"))
    stall = ticks.stop()
    # 2b. Stop inside an SE step (its pool of candidates being encoded): the slowest step to stop
    if cfg.mode == "se":
        run_until(lambda: any(e.kind == "step" and e.row.phase == "se" for e in dock.events), "stop-in-se")
        wait(lambda: False, 0.5)  # into the next SE step's pool encoding
        rows.append(("Stop latency, during an SE step's pool encoding", f"{stop_latency():.2f} s", "≤ 3 s"))
    # 3. the whole default run
    if not args.skip_full:
        etas: list[bool] = []
        ticks = Ticks()
        began = time.perf_counter()
        dock.out.setText(str(work / "runs" / "full"))
        dock.start_button.click()
        seen = 0

        def done() -> bool:
            nonlocal seen
            steps = sum(e.kind == "step" for e in dock.events)
            if steps > seen:
                seen = steps
                if steps >= 2:
                    etas.append("left" in dock.status.text())
            return dock._worker is None

        wait(done, 3600)
        total = time.perf_counter() - began
        stall = max(stall, ticks.stop())
        eta = f"ETA on {sum(etas)} of {len(etas)} steps from the 2nd"
        rows.append(
            (
                f"default run ({cfg.mode}, {cfg.iterations} steps, {CPU_CROP}³)",
                f"{total / 60:.1f} min; {eta}",
                "≤ 10 min",
            )
        )
    rows.append(("longest GUI-thread stall while training", f"{stall * 1000:.0f} ms", "< 0.5 s"))
    redraw = max(dock.draw_seconds) if dock.draw_seconds else 0.0
    rows.append(("longest redraw of the live plot", f"{redraw * 1000:.0f} ms", "(part of the stall)"))

    print(f"\nmachine: {machine()}")
    print(f"dock's settings: {dock.device_note.text()}")
    print("\n| measure | value | target |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    viewer.close()


if __name__ == "__main__":
    main()

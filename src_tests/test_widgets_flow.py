"""The dock widgets clicked through the whole flow on a tiny sample cohort, in a real viewer.

load → prepare → select a case → preview augmentations → train (start, events, stop,
resume) → clusters (one point per case, features on the mask layer) → features, evaluation
and export. Runs under Xvfb (pytest-xvfb, QT_QPA_PLATFORM=xcb): image layers need OpenGL.
One cohort and one short training run are shared by the later tests (module fixture).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("napari")
from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from napari_ssl_radiomics.config import PrepareConfig, SampleConfig, TrainConfig  # noqa: E402
from napari_ssl_radiomics.core.devices import cpu_proposal, cuda_present  # noqa: E402
from napari_ssl_radiomics.widgets._state import (  # noqa: E402
    COHORT_MASKS,
    IMAGE_LAYER,
    MASK_LAYER,
    VIEW_LAYERS,
    VIEW_OUTLINES,
    get_state,
)

pytestmark = pytest.mark.gui

CASES, SIZE, CROP = 12, 32, 28  # 28³ crops: the encoder's smallest edge is 27
WAIT_MS = 120_000


def idle(qtbot, widget, timeout: int = WAIT_MS) -> None:
    """Wait until the widget's background worker has finished (it clears ``_worker``)."""
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)


class Errors:
    """Collects the napari error notifications shown while it is connected."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        notification_manager.notification_ready.connect(self._got)

    def _got(self, event) -> None:
        note = getattr(event, "value", event)
        if str(getattr(note, "severity", "")).lower().endswith("error"):
            self.messages.append(str(note.message))

    def close(self) -> None:
        notification_manager.notification_ready.disconnect(self._got)


@pytest.fixture
def errors():
    err = Errors()
    yield err
    err.close()


def set_form(form, **values) -> None:
    """Set controls of a ConfigForm as a user would (through the widgets)."""
    cfg = form.value()
    import dataclasses

    form.set_value(dataclasses.replace(cfg, **values))


def load_and_prepare(qtbot, viewer, workdir: Path):
    from napari_ssl_radiomics.widgets.cohort import CohortWidget

    widget = CohortWidget(viewer)
    qtbot.addWidget(widget)
    widget.workdir.setText(str(workdir))
    set_form(widget.sample_form, cases=CASES, size=SIZE)
    set_form(widget.prepare_form, size=CROP)
    widget.load_button.click()
    idle(qtbot, widget)
    widget.prepare_button.click()
    idle(qtbot, widget)
    return widget


# --- cohort -----------------------------------------------------------------------------


def test_cohort_load_prepare_and_show(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = load_and_prepare(qtbot, viewer, tmp_path)
    state = get_state(viewer)
    assert not errors.messages
    assert widget.table.rowCount() == CASES
    statuses = [widget.table.item(r, 3).text() for r in range(CASES)]
    assert statuses == ["ok"] * CASES
    assert len(state.ok_ids()) == CASES
    labels = {widget.table.item(r, 1).text() for r in range(CASES)}
    assert labels == {"0", "1"}

    # selecting a row shows the full volume at the physical scale of its image
    widget.table.selectRow(2)
    case_id = widget.table.item(2, 0).text()
    assert state.case_id == case_id
    image = viewer.layers[IMAGE_LAYER]
    assert image.data.shape == (SIZE,) * 3
    assert np.allclose(image.scale, 1.0)  # the sample cohort has 1 mm spacing
    assert viewer.layers[MASK_LAYER].data.max() == 1

    # the toggle shows the prepared crop instead
    widget.crop.setChecked(True)
    assert viewer.layers[IMAGE_LAYER].data.shape == (CROP,) * 3
    assert np.allclose(viewer.layers[IMAGE_LAYER].scale, PrepareConfig().spacing)


def test_cohort_reports_bad_rows_and_bad_paths(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_ssl_radiomics.core.sample import write_sample_cohort
    from napari_ssl_radiomics.widgets.cohort import FILES, CohortWidget

    manifest = write_sample_cohort(tmp_path / "c", SampleConfig(cases=4, size=SIZE))
    table = pd.read_csv(manifest)
    table.loc[1, "Image"] = "missing.nii.gz"  # one broken case must not sink the cohort
    table.to_csv(manifest, index=False)
    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    qtbot.addWidget(widget)
    widget.source.setCurrentText(FILES)
    widget.workdir.setText(str(tmp_path / "work"))
    widget.path.setText(str(manifest))
    widget.load_button.click()
    idle(qtbot, widget)
    set_form(widget.prepare_form, size=CROP)
    widget.prepare_button.click()
    idle(qtbot, widget)
    statuses = {widget.table.item(r, 0).text(): widget.table.item(r, 3).text() for r in range(widget.table.rowCount())}
    broken = table.loc[1, "ID"]
    assert statuses[broken].startswith("skipped") and "missing.nii.gz" in statuses[broken]
    assert sum(s == "ok" for s in statuses.values()) == 3

    widget.path.setText(str(tmp_path / "nowhere.csv"))
    widget.load_button.click()
    idle(qtbot, widget)
    assert any("nowhere.csv" in m for m in errors.messages)


# --- augmentation ---------------------------------------------------------------------


def extent(layer) -> np.ndarray:
    """(2, 3) world min and max (z, y, x) of a 3D layer."""
    return np.asarray(layer.extent.world)[:, -3:]


def apart(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two world boxes are disjoint along at least one axis."""
    return bool(np.any((a[1] <= b[0]) | (b[1] <= a[0])))


def test_augment_preview_beside_the_case_in_2d_and_3d(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_ssl_radiomics.widgets.augment import AugmentWidget

    viewer = make_napari_viewer()
    cohort = load_and_prepare(qtbot, viewer, tmp_path)
    cohort.table.selectRow(0)  # the full volume, at its physical position
    widget = AugmentWidget(viewer)
    qtbot.addWidget(widget)
    set_form(widget.form, rotation_p=0.0, noise=(5.0, 5.0), noise_p=1.0)
    state = get_state(viewer)
    assert state.augment.noise_p == 1.0 and state.augment.rotation_p == 0.0  # shared with training

    for ndisplay in (2, 3):
        viewer.dims.ndisplay = ndisplay
        widget.preview_button.click()
        idle(qtbot, widget)
        assert not errors.messages
        one, two = (viewer.layers[name] for name in VIEW_LAYERS)
        case = viewer.layers[IMAGE_LAYER]
        assert one.data.shape == two.data.shape == (CROP,) * 3
        assert not np.array_equal(one.data, two.data)  # two independent draws
        # their own place: apart from each other and from the case, level with the case in z and y
        assert apart(extent(one), extent(two)) and apart(extent(one), extent(case))
        assert apart(extent(two), extent(case))
        assert np.allclose(extent(one)[0, :2], extent(case)[0, :2])
        assert one.visible and two.visible and not case.visible and not viewer.layers[MASK_LAYER].visible
        # the z slider is inside the views (in 2D it picks the slice shown)
        z = viewer.dims.point[-3]
        assert extent(one)[0, 0] <= z <= extent(one)[1, 0]
        assert viewer.dims.ndisplay == ndisplay
        # each view carries the mask's outline, on the view (same place), drawn on its own layer
        for view, name in zip((one, two), VIEW_OUTLINES):
            outline = viewer.layers[name]
            assert outline.visible and set(np.unique(outline.data)) == {0, 1}
            assert outline.data.shape == view.data.shape and 0 < outline.data.sum() < outline.data.size // 4
            assert np.allclose(extent(outline), extent(view))

    first = viewer.layers[VIEW_LAYERS[0]].data.copy()
    widget.reroll_button.click()
    idle(qtbot, widget)
    assert widget.seed.value() == 1
    assert not np.array_equal(first, viewer.layers[VIEW_LAYERS[0]].data)
    # showing a case again brings its layers back and puts the views away
    cohort.table.selectRow(1)
    assert viewer.layers[IMAGE_LAYER].visible and not viewer.layers[VIEW_LAYERS[0]].visible
    assert not any(viewer.layers[name].visible for name in VIEW_OUTLINES)
    # ... and the augmentation info no longer describes the previous case's views
    assert widget.info.text().startswith(f"Case {cohort.table.item(1, 0).text()} selected")


# --- training -------------------------------------------------------------------------

TRAIN = dict(
    mode="se", clusters=2, pool=4, batch_size=2, iterations=8, warmup_epochs=0, checkpoint_every=4, seed=0, device="cpu"
)


class Ticks:
    """The largest gap between ticks of a 10 ms QTimer: how long the event loop stalled."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.gaps: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now

    def stop(self) -> float:
        self.timer.stop()
        return max(self.gaps) if self.gaps else float("inf")


def test_train_start_stop_resume_and_responsive(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_ssl_radiomics.widgets.augment import AugmentWidget
    from napari_ssl_radiomics.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    load_and_prepare(qtbot, viewer, tmp_path)
    state = get_state(viewer)
    augment = AugmentWidget(viewer)
    qtbot.addWidget(augment)
    set_form(augment.form, blur_p=0.55)  # what the preview shows is what training uses
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    set_form(widget.form, **TRAIN)
    proposed = TrainConfig() if cuda_present() else cpu_proposal(TrainConfig())  # a CPU gets minutes-long settings
    assert widget.form.value() == TrainConfig(**{**proposed.__dict__, **TRAIN})

    widget.start_button.click()
    assert widget.start_button.text() == "Stop"
    qtbot.waitUntil(lambda: sum(e.kind == "step" for e in widget.events) >= 2, timeout=WAIT_MS)
    widget.start_button.click()  # Stop
    idle(qtbot, widget)
    assert not errors.messages, errors.messages
    assert widget.start_button.text() == "Start"
    first = widget.result
    # the status ends in the truth, whatever step events arrived after the click
    assert widget.status.text().startswith("Stopped at iteration"), widget.status.text()
    assert widget.resume_button.isEnabled()
    assert first.stopped and first.checkpoint.exists()
    stopped_at = [e for e in widget.events if e.kind == "stopped"][0].iteration
    assert 2 <= stopped_at < TRAIN["iterations"]  # stopped between steps, not at the end
    history = pd.read_csv(first.run_dir / "history.csv")
    assert list(history["iteration"]) == list(range(1, stopped_at + 1))  # the log was saved with the checkpoint
    assert state.run_dir == first.run_dir
    run_config = json.loads((first.run_dir / "config.json").read_text(encoding="utf-8"))
    assert run_config["config"]["augment"]["blur_p"] == 0.55
    assert len(widget.plot.loss) == stopped_at

    # resume from the checkpoint, measuring how long the event loop stalls while it trains
    idle_gap = Ticks()  # the machine's own stall (other processes), for comparison
    qtbot.wait(1000)
    idle_stall = idle_gap.stop()
    whole = Ticks()  # from the click on: includes the worker's start (imports, model, cache)
    widget.resume_button.click()
    assert widget.status.text().startswith("Resuming se training")  # the form held the run's settings
    qtbot.waitUntil(lambda: any(e.kind == "step" for e in widget.events[-1:]), timeout=WAIT_MS)
    ticks = Ticks()
    qtbot.waitUntil(lambda: widget.events[-1].kind == "done", timeout=WAIT_MS)
    stall, start_stall = ticks.stop(), whole.stop()
    idle(qtbot, widget)
    print(
        f"\nlongest event-loop stall while training: {stall * 1000:.0f} ms over {len(ticks.gaps)} ticks "
        f"(idle, before training: {idle_stall * 1000:.0f} ms; from the click, start-up included: "
        f"{start_stall * 1000:.0f} ms; longest redraw of the live plot: {max(widget.draw_seconds) * 1000:.0f} ms)"
    )
    assert not errors.messages, errors.messages
    second = widget.result
    assert not second.stopped and second.run_dir == first.run_dir
    steps = [e.iteration for e in widget.events if e.kind == "step"]
    assert steps == list(range(stopped_at + 1, TRAIN["iterations"] + 1))
    history = pd.read_csv(second.run_dir / "history.csv")
    assert list(history["iteration"]) == list(range(1, TRAIN["iterations"] + 1))
    assert history["phase"].iloc[-1] == "se"
    assert widget.plot.draws >= 2
    assert widget.plot.iterations == list(range(1, TRAIN["iterations"] + 1))  # the resumed curve continues
    assert widget.status.text().startswith(f"Finished: {TRAIN['iterations']} of {TRAIN['iterations']}")
    # the health panel holds every health check of both parts of the run (none if the engine has none)
    checks = [e for e in widget.events if e.kind == "health"]
    assert [i for i, _ in widget.plot.health][-len(checks) :] == [e.iteration for e in checks] if checks else True
    if checks:
        assert widget.plot.health[0][0] == 0  # the untrained encoder's, read back from health.csv
        assert widget.plot.rank_line.get_xdata()[0] == 0 and widget.health_info.text()


def test_train_error_arrives_as_notification(make_napari_viewer, qtbot, tmp_path, errors):
    from napari_ssl_radiomics.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    load_and_prepare(qtbot, viewer, tmp_path)
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    set_form(widget.form, **TRAIN)
    widget.out.setText(str(tmp_path / "no-run-here"))
    assert not widget.resume_button.isEnabled()  # nothing to resume there
    widget.start(resume=True)
    idle(qtbot, widget)
    assert any("no checkpoint to resume" in m for m in errors.messages), errors.messages
    assert widget.start_button.text() == "Start" and widget.start_button.isEnabled()
    assert widget.status.text().startswith("Failed:") and "no checkpoint to resume" in widget.status.text()


def test_train_status_says_diverged(make_napari_viewer, qtbot, errors):
    """A run that diverges (the core raises TrainingDiverged in the worker) ends in 'Diverged'."""
    from napari_ssl_radiomics.core.train import TrainingDiverged
    from napari_ssl_radiomics.widgets import _workers
    from napari_ssl_radiomics.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)

    def diverging():
        yield from ()
        raise TrainingDiverged("the loss became nan at iteration 3")

    widget.status.setText("iteration 3 of 20 (se): loss nan")
    _workers.start(diverging, owner=widget, on_error=widget._failed, on_finish=widget._ended)
    idle(qtbot, widget)
    assert widget.status.text().startswith("Diverged: the loss became nan at iteration 3"), widget.status.text()
    assert any("nan at iteration 3" in m for m in errors.messages)
    assert widget.start_button.text() == "Start" and widget.start_button.isEnabled()


# --- clusters and features (one short run shared by these tests) -----------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A prepared sample cohort and a short SE run on it, made with the core."""
    from napari_ssl_radiomics.config import AugmentConfig
    from napari_ssl_radiomics.core.preprocess import prepare_all
    from napari_ssl_radiomics.core.sample import write_sample_cohort
    from napari_ssl_radiomics.core.train import run_to_end, train

    work = tmp_path_factory.mktemp("trained")
    manifest = write_sample_cohort(work / "sample", SampleConfig(cases=CASES, size=SIZE))
    prepare = PrepareConfig(size=CROP)
    prepare_all(manifest, prepare, work / "prepared")
    # 12 cases, batch 2: one warm-up epoch is 6 vanilla steps, then 2 SE steps
    cfg = TrainConfig(**{**TrainConfig().__dict__, **TRAIN, "iterations": 8, "warmup_epochs": 1})
    result = run_to_end(train(work / "prepared", work / "runs" / "se", cfg, AugmentConfig()))
    return work, manifest, prepare, result.run_dir


def with_state(viewer, trained):
    """Point the viewer's shared state at the fixture's cohort, cache and run."""
    from napari_ssl_radiomics.core.cache import read_cases
    from napari_ssl_radiomics.core.cohort import load_cohort

    work, manifest, prepare, run_dir = trained
    state = get_state(viewer)
    state.workdir = work
    state.set_cohort(load_cohort(manifest))
    state.set_cases(read_cases(work / "prepared"), prepare)
    state.set_run(run_dir)
    return state


def test_clusters_one_point_per_case_and_se_batches(make_napari_viewer, qtbot, trained, errors):
    from matplotlib.backend_bases import MouseEvent

    from napari_ssl_radiomics.core.report import parse_ids
    from napari_ssl_radiomics.widgets.clusters import BY_LABEL, ClustersWidget

    viewer = make_napari_viewer()
    state = with_state(viewer, trained)
    widget = ClustersWidget(viewer)
    qtbot.addWidget(widget)
    widget.neighbours.setValue(4)
    widget.compute_button.click()
    idle(qtbot, widget, timeout=180_000)  # the first UMAP fit in a process compiles (numba)
    assert not errors.messages, errors.messages
    # Compute reported the encoding as k of n cases (batches of 8 here), then the clustering
    assert widget.progress_seen == [(8, CASES), (CASES, CASES), (CASES, CASES)]
    assert widget.compute_button.text() == "Compute"

    # the canvas shows a case: named sliders, inside the cohort stack, on a slice through its mask
    assert tuple(viewer.dims.axis_labels) == ("case", "z", "y", "x")
    case, z = viewer.dims.current_step[:2]
    assert 0 <= case < CASES and 0 <= z < CROP, viewer.dims.current_step
    assert viewer.layers[COHORT_MASKS].data[case, z].any()
    ids = [str(i) for i in state.prepared().ids]
    table = widget.table
    assert len(widget.plot.points.get_offsets()) == len(ids) == CASES
    layer = viewer.layers[COHORT_MASKS]
    assert layer.data.shape == (CASES, CROP, CROP, CROP)
    assert list(table["ID"]) == ids
    for i in (0, CASES - 1):  # case i is painted with label i + 1, napari's row i + 1
        assert set(np.unique(layer.data[i])) == {0, i + 1}
        assert str(layer.features["ID"].iloc[i + 1]) == ids[i]
    # only the RE/SE-phase batches count: the warm-up's random batches do not
    history = pd.read_csv(trained[3] / "history.csv")
    assert set(history["phase"]) == {"vanilla", "se"}
    module = history[history["phase"] == "se"]
    counts = pd.Series([i for cell in module["selected_ids"] for i in parse_ids(cell)]).value_counts()
    assert table.set_index("ID")["se_selected_count"].to_dict() == {i: int(counts.get(i, 0)) for i in ids}
    assert (table["se_selected_count"] == 0).any()  # not every case is ringed
    assert list(widget.batches["iteration"]) == list(module["iteration"])
    # the slider walks the RE/SE batches: one batch's cases are ringed on the UMAP
    assert widget.step.isEnabled() and widget.step.maximum() == len(module) - 1
    widget.step.setValue(0)
    batch = parse_ids(module["selected_ids"].iloc[0])
    ringed = widget.plot.batch_rings.get_offsets()
    expected = table.loc[table["ID"].isin(batch), ["UMAP_0", "UMAP_1"]].to_numpy()
    assert np.allclose(np.sort(ringed, axis=0), np.sort(expected, axis=0))
    assert f"step {module['iteration'].iloc[0]}" in widget.batch_info.text()
    # the balance panel: the minority share per batch and the cohort's share
    assert len(widget.plot.ax_balance.lines) >= 3
    bars = sum(p.get_height() for p in widget.plot.ax_bars.patches)
    assert bars == CASES

    # a click on a point moves the sliders to that case and adds or selects nothing
    layers_before = [lyr.name for lyr in viewer.layers]
    selection_before = set(viewer.layers.selection)
    case_before = state.case_id
    canvas = widget.plot.canvas
    for row in (3, CASES - 1):  # the last case too (its label is the largest)
        x, y = widget.plot.ax_scatter.transData.transform(table[["UMAP_0", "UMAP_1"]].to_numpy()[row])
        MouseEvent("button_press_event", canvas, x, y, button=1)._process()
        MouseEvent("button_release_event", canvas, x, y, button=1)._process()
        assert viewer.dims.current_step[0] == row
    assert [lyr.name for lyr in viewer.layers] == layers_before
    assert set(viewer.layers.selection) == selection_before and state.case_id == case_before
    # the lasso marks the cases inside it in the features table (row 0, the background, never)
    xy = table[["UMAP_0", "UMAP_1"]].to_numpy()
    lo, hi = xy.min(axis=0) - 1, xy.max(axis=0) + 1
    widget._lassoed([(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])])
    assert list(layer.features["selected"].iloc[1:]) == [1] * CASES and pd.isna(layer.features["selected"].iloc[0])
    widget.mark(np.array([1, 2, CASES + 7]))  # an out-of-range row is ignored
    assert list(layer.features["selected"].iloc[1:]) == [int(i in (1, 2)) for i in range(CASES)]
    widget.colour.setCurrentText(BY_LABEL)
    assert widget.plot.ax_scatter.get_legend() is not None
    assert not errors.messages, errors.messages


def test_features_extract_evaluate_export(make_napari_viewer, qtbot, trained, tmp_path, errors):
    from napari_ssl_radiomics.widgets.features import FeaturesWidget

    viewer = make_napari_viewer()
    state = with_state(viewer, trained)
    widget = FeaturesWidget(viewer)
    qtbot.addWidget(widget)
    set_form(widget.radiomics_form, jobs=1)
    set_form(widget.evaluate_form, folds=3, label_fractions=(1.0,))
    widget.extract_button.click()
    idle(qtbot, widget, timeout=300_000)
    assert not errors.messages, errors.messages
    # extraction reported k of n as it went
    assert widget.progress_seen and widget.progress_seen[-1] == (CASES, CASES)
    assert set(widget.sets) == {"Trad.", "3DSiam+SE", "Trad.+3DSiam+SE"}
    both = widget.sets["Trad.+3DSiam+SE"]
    assert len(both) == CASES
    assert any(c.startswith("original_") for c in both) and "ssl_000" in both

    widget.evaluate_button.click()
    idle(qtbot, widget, timeout=300_000)
    assert not errors.messages, errors.messages
    assert "3DSiam+SE" in widget.summary.toPlainText()
    # the summary is as tall as its text (no scrolling in a small box)
    assert widget.summary.height() >= widget.summary.document().size().height()
    # lines break between words only, never inside one ("specificit y" in a narrow dock)
    block = widget.summary.document().begin()
    while block.isValid():
        text, lines = block.text(), block.layout()
        for i in range(lines.lineCount() - 1):
            end = lines.lineAt(i).textStart() + lines.lineAt(i).textLength()
            assert not (text[end - 1].isalnum() and text[end].isalnum()), (text, end)
        block = block.next()
    # the ROC legend and the note say which AUC is which
    legend = [t.get_text() for t in widget.roc.ax.get_legend().get_texts()]
    assert len(legend) == 3 and all("pooled AUC" in t and "fold mean" in t for t in legend)
    assert "fold mean" in widget.note.text() and "pooled" in widget.note.text()

    files = widget.export(tmp_path / "export")
    names = {p.name for p in files}
    assert {"features.csv", "results.csv", "predictions.csv"} <= names
    assert any(n.startswith("roc") and n.endswith(".png") for n in names)
    features = pd.read_csv(tmp_path / "export" / "features.csv", dtype={"ID": str})
    # the sample cohort's cases are independent: no Group (its site is the manifest's Centre)
    assert list(features.columns[:2]) == ["ID", "Label"] and "Group" not in features and len(features) == CASES
    assert set(features["ID"]) == set(state.prepared().ids)
    results = pd.read_csv(tmp_path / "export" / "results.csv")
    assert {"feature_set", "label_fraction", "repeat", "fold", "metric", "value"} <= set(results.columns)
    assert set(results["feature_set"]) == set(widget.sets)
    predictions = pd.read_csv(tmp_path / "export" / "predictions.csv", dtype={"ID": str})
    assert {"ID", "feature_set", "y_true", "y_pred"} <= set(predictions.columns)


# --- the manifest ---------------------------------------------------------------------


def test_every_widget_opens_from_the_plugin_menu(make_napari_viewer):
    import yaml

    from napari_ssl_radiomics.widgets import augment, clusters, cohort, features, train

    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "napari.yaml").read_text(encoding="utf-8"))
    names = [w["display_name"] for w in manifest["contributions"]["widgets"]]
    expected = {
        "Cohort": cohort.CohortWidget,
        "Augmentation preview": augment.AugmentWidget,
        "Training (3DSiam + RE/SE)": train.TrainWidget,
        "Clusters (UMAP)": clusters.ClustersWidget,
        "Features and evaluation": features.FeaturesWidget,
    }
    assert sorted(names) == sorted(expected)
    viewer = make_napari_viewer()
    opened = [viewer.window.add_plugin_dock_widget("napari-ssl-radiomics", name)[1] for name in names]
    for name, widget in zip(names, opened):
        assert isinstance(widget, expected[name])
    assert len({id(get_state(viewer))} | {id(w.state) for w in opened}) == 1  # one shared state per viewer


def test_train_health_series_after_stop_and_resume_goes_forward(make_napari_viewer, qtbot, trained, tmp_path, errors):
    """A resumed run yields its earlier health checks again; the live plot holds each iteration once."""
    import shutil

    from napari_ssl_radiomics.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    with_state(viewer, trained)
    run = tmp_path / "run"
    shutil.copytree(trained[3], run)  # the fixture's finished run (checks at 0, 4, 8), continued to 16
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    widget.out.setText(str(run))
    # the fixture's run has the paper's health settings and a warm-up epoch; the form is left as a
    # CPU proposes it, but for 16 iterations: Resume loads the run's settings instead of refusing
    set_form(widget.form, iterations=16, checkpoint_every=4)
    assert widget.form.value().health_cases != 256 or cuda_present()
    from napari_ssl_radiomics.widgets.augment import AugmentWidget

    augment = AugmentWidget(viewer)
    qtbot.addWidget(augment)
    set_form(augment.form, blur_p=0.55)  # not the run's: Resume shows the run's in the Augmentation dock

    widget.resume_button.click()
    assert widget.status.text().startswith("Loaded the run's own settings into the form (")
    assert "health cases" in widget.status.text() or cuda_present()
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]["train"]
    shown = widget.form.value()
    assert (shown.health_cases, shown.warmup_epochs, shown.mode) == (
        saved["health_cases"],
        saved["warmup_epochs"],
        saved["mode"],
    )
    assert shown.iterations == 16  # a resumable setting: the form's larger value is kept
    ran_with = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]["augment"]["blur_p"]
    assert "augmentations" in widget.status.text() and augment.form.value().blur_p == ran_with != 0.55
    qtbot.waitUntil(lambda: any(e.kind == "step" for e in widget.events), timeout=WAIT_MS)
    widget.start_button.click()  # Stop
    idle(qtbot, widget)
    assert widget.result is not None and widget.result.stopped
    widget.resume_button.click()
    qtbot.waitUntil(lambda: widget._worker is None and bool(widget.events), timeout=WAIT_MS)
    assert not errors.messages, errors.messages
    assert widget.events[-1].kind == "done"
    # the engine did yield the earlier checks again (else this test would not test the widget) ...
    again = [e.iteration for e in widget.events if e.kind == "health"]
    assert again[:3] == [0, 4, 8], again
    # ... and the plot holds every check once, in order: no line drawn back to iteration 0
    held = [i for i, _ in widget.plot.health]
    assert held == sorted(set(pd.read_csv(run / "health.csv")["iteration"])), held
    assert held[:4] == [0, 4, 8, 12] and held[-1] == 16
    assert all(a < b for a, b in zip(held, held[1:])), held
    drawn = list(widget.plot.rank_line.get_xdata())
    assert drawn == held and all(a < b for a, b in zip(drawn, drawn[1:])), drawn


def test_features_evaluate_refuses_fewer_groups_than_folds_at_once(make_napari_viewer, qtbot, errors):
    from napari_ssl_radiomics.widgets.features import FeaturesWidget

    widget = FeaturesWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    rng = np.random.default_rng(0)
    widget.sets = {
        "Trad.": pd.DataFrame(
            {
                "ID": [f"c{i}" for i in range(30)],
                "Label": ["0", "0", "1"] * 10,
                "Group": [f"centre-{(i // 3) % 3}" for i in range(30)],
                "f0": rng.normal(size=30),
            }
        )
    }
    assert widget.evaluate() is None and widget._worker is None
    assert any("'Group' holds only 3 groups, fewer than the 5 folds" in m for m in errors.messages)
    assert widget.info.text().startswith("Not evaluated: 'Group' holds only 3 groups")


def test_train_stop_during_the_step0_health_check(make_napari_viewer, qtbot, trained, tmp_path, errors):
    """Stop in the untrained encoder's check ends the run in seconds, stopped, and the status never
    falls back to a step; Start clears the previous run's curves and axes."""
    from napari_ssl_radiomics.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    with_state(viewer, trained)
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    widget.out.setText(str(tmp_path / "run"))
    set_form(widget.form, **{**TRAIN, "health_cases": CASES, "embed_batch_size": 1})
    for i in range(1, 4):  # a previous run's curve, on large scales
        widget.plot.add(i * 500, 40.0 * i, 0.5)
    widget.plot.redraw()
    assert widget.plot.ax_loss.get_ylim()[1] > 100

    shown: list[str] = []
    say = widget._say
    widget._say = lambda text, stopping=False: (say(text, stopping), shown.append(widget.status.text()))
    widget.start_button.click()
    assert widget.plot.loss == [] and widget.plot.ax_loss.get_ylim()[1] < 100  # cleared at Start
    qtbot.waitUntil(lambda: any(e.kind == "progress" for e in widget.events), timeout=WAIT_MS)
    assert "of 12 cases" in widget.status.text() and "health check" in widget.status.text()
    clicked = time.perf_counter()
    widget.start_button.click()  # Stop
    stopping = len(shown)
    idle(qtbot, widget)
    took = time.perf_counter() - clicked
    assert took < 20, took  # a generous margin: the benchmark measures it (benchmarks/bench_viewer.py)
    assert not errors.messages, errors.messages
    assert widget.result is not None and widget.result.stopped
    assert not any(e.kind == "step" for e in widget.events)
    assert widget.status.text().startswith(f"Stopped at iteration 0 of {TRAIN['iterations']}"), widget.status.text()
    assert not any(text.startswith("iteration") for text in shown[stopping:]), shown[stopping:]


def test_clusters_compute_stops_between_encoder_batches(make_napari_viewer, qtbot, trained, errors):
    from napari_ssl_radiomics.widgets.clusters import ClustersWidget

    viewer = make_napari_viewer()
    with_state(viewer, trained)
    widget = ClustersWidget(viewer)
    qtbot.addWidget(widget)
    widget.compute_button.click()
    assert widget.compute_button.text() == "Stop"
    qtbot.waitUntil(lambda: bool(widget.progress_seen), timeout=WAIT_MS)
    clicked = time.perf_counter()
    widget.compute_button.click()  # Stop
    idle(qtbot, widget)
    assert time.perf_counter() - clicked < 20  # a generous margin: one batch of 8 cases at 28³
    assert not errors.messages, errors.messages
    assert widget.table is None and COHORT_MASKS not in viewer.layers  # stopped before the clustering
    assert widget.info.text().startswith("Stopped") and widget.compute_button.text() == "Compute"
    assert widget.compute_button.isEnabled()

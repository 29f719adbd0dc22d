"""Full-window screenshots of each step of the workflow, in a real napari viewer at 1366×768.

Run under a display (Xvfb is enough; image layers need OpenGL)::

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

It writes the sample cohort into a temporary folder, prepares it, previews the
augmentations (2D and 3D), trains a short SE run, computes the clusters and evaluates the
features. The five docks are tabified on the right, as a user would keep them on a laptop
screen; for each step its dock is raised and the whole window (1366×768) is saved:
cohort.png, augment.png, augment_3d.png, train.png, clusters.png, features.png. Takes a
few minutes on two CPU cores (most of it pyradiomics, UMAP's first fit and training).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

SIZE = (1366, 768)  # the window, pixels: a common laptop screen


def settle(app, seconds: float = 0.3) -> None:
    """Process GUI events for a while (redraws, layouts)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, widget, timeout: float = 900.0) -> None:
    """Process GUI events until the widget's worker has finished."""
    end = time.monotonic() + timeout
    while widget._worker is not None:
        if time.monotonic() > end:
            raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout} s")
        app.processEvents()
        time.sleep(0.02)
    settle(app)


def save_window(app, viewer, dock, path: Path) -> None:
    """Raise ``dock`` and save the whole window (canvas, layer list, docks) at its size."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # the toasts would cover the canvas
    dock.raise_()
    settle(app, 0.5)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    import numpy as np
    from qtpy.QtGui import QImage

    shot = np.ascontiguousarray(shot)
    h, w = shot.shape[:2]
    QImage(shot.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).save(str(path))
    print(f"wrote {path} ({w}x{h})")


def replace(form, **values) -> None:
    form.set_value(dataclasses.replace(form.value(), **values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "screenshots"))
    parser.add_argument("--iterations", type=int, default=24, help="training steps of the demo run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ssl_radiomics.widgets.augment import AugmentWidget
    from napari_ssl_radiomics.widgets.clusters import ClustersWidget
    from napari_ssl_radiomics.widgets.cohort import CohortWidget
    from napari_ssl_radiomics.widgets.features import FeaturesWidget
    from napari_ssl_radiomics.widgets.train import TrainWidget

    viewer = napari.Viewer(title="napari-ssl-radiomics")
    viewer.window._qt_window.resize(*SIZE)
    app = QApplication.instance()
    docks, frames = {}, {}
    for name, cls in (
        ("Cohort", CohortWidget),
        ("Augmentation preview", AugmentWidget),
        ("Training", TrainWidget),
        ("Clusters", ClustersWidget),
        ("Features", FeaturesWidget),
    ):
        docks[name] = cls(viewer)
        frames[name] = viewer.window.add_dock_widget(docks[name], name=name, area="right", tabify=True)
    viewer.window._qt_window.resize(*SIZE)
    settle(app)

    cohort = docks["Cohort"]
    cohort.workdir.setText(tempfile.mkdtemp(prefix="ssl-radiomics-shots-"))
    replace(cohort.sample_form, cases=24, size=40)
    replace(cohort.prepare_form, size=28)
    cohort.load()
    wait(app, cohort)
    cohort.prepare()
    wait(app, cohort)
    cohort.table.selectRow(1)
    wait(app, cohort)
    cohort.scroll.ensureWidgetVisible(cohort.table)
    save_window(app, viewer, frames["Cohort"], out / "cohort.png")

    augment = docks["Augmentation preview"]
    augment.preview()
    wait(app, augment)
    save_window(app, viewer, frames["Augmentation preview"], out / "augment.png")
    viewer.dims.ndisplay = 3
    augment.preview()
    wait(app, augment)
    viewer.camera.angles = (5, 25, 80)
    save_window(app, viewer, frames["Augmentation preview"], out / "augment_3d.png")
    viewer.dims.ndisplay = 2

    train = docks["Training"]
    replace(
        train.form,
        mode="se",
        clusters=3,
        pool=8,
        batch_size=4,
        iterations=args.iterations,
        warmup_epochs=1,
        checkpoint_every=8,
        device="cpu",
    )
    train.start()
    wait(app, train, timeout=1800)
    train.scroll.ensureWidgetVisible(train.health_info)
    save_window(app, viewer, frames["Training"], out / "train.png")

    clusters = docks["Clusters"]
    clusters.neighbours.setValue(6)
    clusters.compute()
    wait(app, clusters)
    clusters.go_to_case(0)
    clusters.step.setValue(clusters.step.maximum() // 2)
    clusters.scroll.ensureWidgetVisible(clusters.plot)
    settle(app)
    save_window(app, viewer, frames["Clusters"], out / "clusters.png")

    features = docks["Features"]
    replace(features.evaluate_form, folds=3)
    features.extract()
    wait(app, features, timeout=1800)
    features.evaluate()
    wait(app, features)
    features.scroll.ensureWidgetVisible(features.roc)
    save_window(app, viewer, frames["Features"], out / "features.png")
    viewer.close()


if __name__ == "__main__":
    main()

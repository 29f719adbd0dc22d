"""Screenshots of each dock widget in use, in a real napari viewer.

Run under a display (Xvfb is enough; image layers need OpenGL)::

    xvfb-run -a .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

It writes the sample cohort into a temporary folder, prepares it, previews the
augmentations, trains a short SE run, computes the clusters and evaluates the features,
saving one PNG per widget (the dock widget's own rendering) and one of the whole window.
Takes a few minutes on two CPU cores (most of it pyradiomics, UMAP's first fit and training).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

WIDTH = 480  # pixels; the PNGs are scaled down to at most this width


def wait(app, widget, timeout: float = 900.0) -> None:
    """Process GUI events until the widget's worker has finished."""
    end = time.monotonic() + timeout
    while widget._worker is not None:
        if time.monotonic() > end:
            raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout} s")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the last redraws land
        app.processEvents()
        time.sleep(0.01)


def save(widget, path: Path) -> None:
    from qtpy.QtCore import Qt

    pixmap = widget.grab()
    if pixmap.width() > WIDTH:
        pixmap = pixmap.scaledToWidth(WIDTH, Qt.TransformationMode.SmoothTransformation)
    pixmap.save(str(path))
    print(f"wrote {path} ({pixmap.width()}x{pixmap.height()})")


def save_window(viewer, path: Path, width: int = 1000) -> None:
    """The whole window (canvas, layer list, docks), scaled down to ``width`` pixels."""
    import numpy as np
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QImage

    shot = np.ascontiguousarray(viewer.screenshot(canvas_only=False, flash=False))
    h, w = shot.shape[:2]
    image = QImage(shot.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    image.scaledToWidth(min(width, w), Qt.TransformationMode.SmoothTransformation).save(str(path))
    print(f"wrote {path}")


def show_only(app, frames: dict, name: str | None) -> None:
    """Show one dock (the others hidden) for a window screenshot; None shows them all."""
    for key, frame in frames.items():
        frame.setVisible(name is None or key == name)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


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
    viewer.window.resize(1400, 900)
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
    save(cohort, out / "cohort.png")

    augment = docks["Augmentation preview"]
    augment.preview()
    wait(app, augment)
    viewer.layers["case image"].visible = False
    viewer.layers["case mask"].visible = False
    save(augment, out / "augment.png")
    show_only(app, frames, "Augmentation preview")
    save_window(viewer, out / "viewer_augment.png")
    show_only(app, frames, None)
    for name in ("view 1", "view 2"):
        viewer.layers[name].visible = False

    train = docks["Training"]
    replace(
        train.form,
        mode="se",
        clusters=3,
        pool=8,
        batch_size=4,
        iterations=args.iterations,
        warmup_epochs=1,
        checkpoint_every=20,
        device="cpu",
    )
    train.start()
    wait(app, train, timeout=1800)
    save(train, out / "train.png")

    clusters = docks["Clusters"]
    clusters.neighbours.setValue(6)
    clusters.compute()
    wait(app, clusters)
    clusters.select_case(0)
    save(clusters, out / "clusters.png")

    features = docks["Features"]
    replace(features.evaluate_form, folds=3)
    features.extract()
    wait(app, features, timeout=1800)
    features.evaluate()
    wait(app, features)
    features.summary.setMinimumHeight(320)
    save(features, out / "features.png")
    show_only(app, frames, "Clusters")
    save_window(viewer, out / "viewer_clusters.png")
    viewer.close()


if __name__ == "__main__":
    main()

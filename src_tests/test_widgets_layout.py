"""The five docks open together on a 1366×768 screen without growing the window.

pytest-xvfb starts its Xvfb screen at 1366×768 (pyproject's ``xvfb_width``/``xvfb_height``).
Each dock's controls scroll inside it, so a dock asks only for a small minimum height.
"""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
from qtpy.QtWidgets import QApplication, QTabBar  # noqa: E402

pytestmark = pytest.mark.gui

SCREEN = (1366, 768)
NAMES = ("Cohort", "Augmentation preview", "Training (3DSiam + RE/SE)", "Clusters (UMAP)", "Features and evaluation")


def test_all_five_docks_fit_a_1366x768_screen(make_napari_viewer, qtbot):
    screen = QApplication.primaryScreen().geometry()
    assert (screen.width(), screen.height()) == SCREEN  # the test runs on the screen it names
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    qtbot.wait(50)
    docks = [viewer.window.add_plugin_dock_widget("napari-ssl-radiomics", name) for name in NAMES]
    qtbot.wait(200)
    QApplication.processEvents()
    # the window neither grew nor needs to: every dock side by side still fits
    assert window.width() <= SCREEN[0] and window.height() <= SCREEN[1], (window.width(), window.height())
    assert window.minimumSizeHint().height() <= SCREEN[1]
    # opened from the Plugins menu they share one tab group, not a stack of 84-226 px slivers
    first = docks[0][0]
    assert {id(d) for d in window.tabifiedDockWidgets(first)} == {id(d) for d, _ in docks[1:]}
    # ... whose titles are whole: one short word each, not "Training (3DSiam + RE/SE) (napari-ss…"
    titles = {d.windowTitle() for d, _ in docks}
    assert titles == {"Cohort", "Augment", "Training", "Clusters", "Features"}
    tabs = [(bar, i) for bar in window.findChildren(QTabBar) for i in range(bar.count()) if bar.tabText(i) in titles]
    assert len(tabs) == len(NAMES)
    for bar, i in tabs:
        assert bar.tabRect(i).width() >= bar.fontMetrics().horizontalAdvance(bar.tabText(i)), bar.tabText(i)
    for (dock, widget), name in zip(docks, NAMES):
        dock.raise_()
        qtbot.wait(50)
        assert dock.isVisible(), name
        assert dock.height() > SCREEN[1] // 2, (name, dock.height())
        assert widget.minimumSizeHint().height() <= SCREEN[1] // len(NAMES), name
        # the controls are all there, in a scroll area taller than the dock when needed
        assert widget.content.sizeHint().height() > 0
        assert widget.scroll.widget() is widget.content


def test_training_start_status_and_plot_above_the_fold(make_napari_viewer, qtbot):
    """At 768 px the Training dock shows Start, its status and its plot without scrolling;
    the advanced settings start collapsed."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-ssl-radiomics", NAMES[2])
    qtbot.wait(200)
    QApplication.processEvents()
    assert widget.form.advanced_box is not None and not widget.form.advanced_box.isExpanded()
    assert "health_cases" in widget.form.controls  # still set from the form, only folded away
    view = widget.scroll.viewport().height()
    assert widget.scroll.verticalScrollBar().value() == 0
    for part in (widget.start_button, widget.status, widget.plot):
        top = part.mapTo(widget.content, part.rect().topLeft()).y()
        assert top < view, (type(part).__name__, top, view)
    bottom = widget.start_button.mapTo(widget.content, widget.start_button.rect().bottomLeft()).y()
    assert bottom <= view and widget.plot.mapTo(widget.content, widget.plot.rect().center()).y() <= view

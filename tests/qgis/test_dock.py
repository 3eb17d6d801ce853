"""The dock as an analyst sees it, in real QGIS: it fits a narrow panel of a 1280 x 800 window,
and its compare control flips the map between the source and the result over the ROIs."""

from __future__ import annotations

import pytest
from conftest import wait_for
from test_plugin import TINY, _ready_to_run


def _clipped(dock) -> list:
    """Visible text widgets narrower than their text needs (a clipped label reads 'ackend')."""
    from qgis.PyQt.QtWidgets import QAbstractButton, QLabel

    clipped = []
    for widget in dock.widget().findChildren(QLabel) + dock.widget().findChildren(QAbstractButton):
        if not widget.isVisibleTo(dock) or (isinstance(widget, QLabel) and widget.wordWrap()):
            continue
        text = widget.text() if hasattr(widget, "text") else ""
        if text and widget.sizeHint().width() > widget.width():
            clipped.append((text, widget.sizeHint().width(), widget.width()))
    return clipped


@pytest.mark.parametrize("width", [None, 260])
def test_the_dock_fits_a_narrow_panel_at_1280_by_800(plugin, host, width):
    """At QGIS's default dock width (None: what the main window gives the dock) and at a narrow
    260 px, with every group open and in both backend modes: no label or button is clipped and no
    horizontal scroll bar appears."""
    from qgis.gui import QgsCollapsibleGroupBox
    from qgis.PyQt.QtCore import QCoreApplication, Qt

    dock = plugin.dock
    host.window.resize(1280, 800)
    host.window.show()
    boxes = dock.widget().findChildren(QgsCollapsibleGroupBox)
    collapsed = {box: box.isCollapsed() for box in boxes}
    try:
        for box in boxes:
            box.setCollapsed(False)
        if width is not None:
            host.window.resizeDocks([dock], [width], Qt.Horizontal)
        for mode in (0, 1):
            dock.where.setCurrentIndex(mode)
            for _ in range(10):
                QCoreApplication.processEvents()
            assert dock.width() <= 440 and (width is None or abs(dock.width() - width) <= 2), dock.width()
            assert _clipped(dock) == [], (mode, dock.width())
            assert not dock.scroll.horizontalScrollBar().isVisible(), \
                (dock.width(), dock.scroll.viewport().width(), dock.scroll.widget().minimumSizeHint().width())
            assert dock.scroll.widget().width() <= dock.scroll.viewport().width()
    finally:
        for box, state in collapsed.items():
            box.setCollapsed(state)
        dock.where.setCurrentIndex(0)
        host.window.hide()


def _render(settings, layers):
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings

    copy = QgsMapSettings(settings)
    copy.setLayers(layers)
    job = QgsMapRendererSequentialJob(copy)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def test_compare_flips_the_map_between_source_and_result_over_the_rois(plugin, host, backend, tmp_path):
    from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QCoreApplication

    dock, canvas = plugin.dock, host.canvas
    source = _ready_to_run(plugin, host, backend, tmp_path)
    assert not dock.compare_button.isEnabled()                 # nothing to compare yet
    plugin.controller.run(TINY)
    assert wait_for(lambda: plugin.controller.task is None, 240), dock.stage.text()
    assert dock.stage.text() == "done", dock.stage.text()
    (result,) = [l for l in QgsProject.instance().mapLayers().values()
                 if isinstance(l, QgsRasterLayer) and l.name().endswith("(rs-geo-edit)")]
    rois = plugin.controller.roi_layer
    roi_box = QgsCoordinateTransform(rois.crs(), canvas.mapSettings().destinationCrs(),
                                     QgsProject.instance()).transformBoundingBox(rois.extent())
    canvas.setExtent(source.extent().buffered(source.extent().width()))   # the analyst looks elsewhere
    assert dock.compare_button.isEnabled() and not dock.compare_button.isChecked()

    def shown():
        for _ in range(5):
            QCoreApplication.processEvents()
        return _render(canvas.mapSettings(), canvas.mapSettings().layers())

    dock.compare_button.click()                                 # the source, zoomed to the ROIs
    assert wait_for(lambda: result not in canvas.layers(), 10)
    extent = canvas.extent()
    assert extent.contains(roi_box) and extent.width() < 3 * roi_box.width(), (extent.toString(), roi_box.toString())
    settings = canvas.mapSettings()
    with_source, with_result = _render(settings, [source]), _render(settings, [result])
    assert with_source != with_result                            # the edit shows inside the ROIs
    assert shown() == _render(settings, [l for l in canvas.layers() if l is not result])
    assert source in canvas.layers() and rois in canvas.layers()
    assert _render(settings, [source]) == with_source

    dock.compare_button.click()                                 # the result again, same view
    assert wait_for(lambda: result in canvas.layers(), 10)
    assert canvas.extent() == extent
    order = canvas.layers()
    assert order.index(result) < order.index(source)            # drawn over its source
    assert shown() == _render(settings, order) and _render(settings, [result, source]) == with_result

    QgsProject.instance().removeMapLayer(result.id())           # removed: nothing left to compare
    assert not dock.compare_button.isEnabled()
    QgsProject.instance().removeAllMapLayers()

"""Render the plugin's dock and map canvas (real QGIS, headless) to docs/images/plugin.png.

Loads the bundled aerial scene, draws one ROI with the plugin's map tool, and grabs the window,
so reviewers can see the interface. Run with QGIS's Python after `scripts/setup.sh --qgis`:

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python scripts/screenshot_plugin.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "qgis"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from conftest import HostInterface  # the same host window the plugin tests use
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QCoreApplication, Qt

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True)
    app.initQgis()
    import qgis.utils

    host = HostInterface()
    qgis.utils.iface = host
    import importlib

    plugin_pkg = importlib.import_module("qgis_plugin")
    plugin = plugin_pkg.classFactory(host)
    plugin.initGui()
    import shutil
    import tempfile

    # a copy, so that QGIS's statistics side file (.aux.xml) never lands in the package data
    scene = Path(tempfile.mkdtemp(prefix="rs-geo-edit-shot-")) / "aerial_3857.tif"
    shutil.copy(ROOT / "backend/rs_geo_edit/data/aerial_3857.tif", scene)
    layer = QgsRasterLayer(str(scene), "aerial_3857")
    QgsProject.instance().addMapLayer(layer)
    QgsProject.instance().setCrs(layer.crs())
    host.canvas.setDestinationCrs(layer.crs())
    host.canvas.setExtent(layer.extent())
    dock, controller = plugin.dock, plugin.controller
    dock.raster.setLayer(layer)
    dock.prompt.setText("dense coniferous forest with snow")
    controller.start_drawing()
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint

    host.window.resize(1300, 1020)  # tall enough for the whole dock, wide enough for the map
    host.window.show()
    host.window.resizeDocks([dock], [440], Qt.Horizontal)
    for _ in range(20):
        QCoreApplication.processEvents()
    size = host.canvas.size()
    w, h = size.width(), size.height()
    clicks = [(0.55, 0.6), (0.72, 0.58), (0.75, 0.75), (0.58, 0.78)]
    for fx, fy in clicks:
        controller.tool.canvasReleaseEvent(QgsMapMouseEvent(host.canvas, QEvent.MouseButtonRelease,
                                                            QPoint(int(fx * w), int(fy * h)), Qt.LeftButton))
    controller.tool.canvasReleaseEvent(QgsMapMouseEvent(host.canvas, QEvent.MouseButtonRelease, QPoint(0, 0),
                                                        Qt.RightButton))
    dock.health.setText("not connected: press Connect, or install the backend below")
    host.canvas.refreshAllLayers()
    for _ in range(200):
        QCoreApplication.processEvents()
        if not host.canvas.isDrawing():
            break
        import time

        time.sleep(0.05)
    for _ in range(20):
        QCoreApplication.processEvents()
    out = ROOT / "docs" / "images" / "plugin.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    host.window.grab().save(str(out))
    print(out)
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()

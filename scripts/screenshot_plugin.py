"""Render QGIS's window at 1280 x 800 with the plugin's dock (real QGIS, headless): the dock alone
to qgis_plugin/images/dock.png (shown in the plugin's help, small enough to ship in the zip) and
the whole window to docs/images/plugin.png (README).

Loads the bundled aerial scene, draws one ROI with the plugin's map tool, opens the dock's groups
as an analyst would on a first visit, and grabs the window at the dock's default width. Run with
QGIS's Python after `scripts/setup.sh --qgis`:

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python scripts/screenshot_plugin.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "qgis"))
sys.path.insert(0, str(ROOT))
DOCK_IMAGE, WINDOW_IMAGE = ROOT / "qgis_plugin" / "images" / "dock.png", ROOT / "docs" / "images" / "plugin.png"


def settle(app, canvas=None, seconds: float = 10.0) -> None:
    """Let Qt lay out and QGIS render (the canvas draws in a background job)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if canvas is None or not canvas.isDrawing():
            break
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()


def draw_roi(host, tool) -> None:
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    size = host.canvas.size()
    for fx, fy in [(0.55, 0.55), (0.72, 0.53), (0.75, 0.72), (0.58, 0.75)]:
        tool.canvasReleaseEvent(QgsMapMouseEvent(host.canvas, QEvent.MouseButtonRelease,
                                                 QPoint(int(fx * size.width()), int(fy * size.height())),
                                                 Qt.LeftButton))
    tool.canvasReleaseEvent(QgsMapMouseEvent(host.canvas, QEvent.MouseButtonRelease, QPoint(0, 0), Qt.RightButton))


def main() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from conftest import HostInterface  # the same host window the plugin tests use
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    profile = tempfile.mkdtemp(prefix="rs-geo-edit-shot-profile-")   # never the user's settings
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True, profile)
    app.initQgis()
    import importlib

    import qgis.utils

    host = HostInterface()
    qgis.utils.iface = host
    plugin = importlib.import_module("qgis_plugin").classFactory(host)
    plugin.initGui()
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
    dock.prompt.setText("dense coniferous forest")
    host.window.resize(1280, 800)
    host.window.show()
    settle(app)
    dock.draw.click()
    draw_roi(host, controller.tool)
    dock.health.setText("not connected: press Connect, or install the backend below")
    host.canvas.refreshAllLayers()
    settle(app, host.canvas)
    print(f"dock {dock.width()} x {dock.height()} px in a {host.window.width()} x {host.window.height()} window")
    for out, widget in ((DOCK_IMAGE, dock), (WINDOW_IMAGE, host.window)):
        out.parent.mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(out), "PNG", 9)
        print(out, out.stat().st_size, "bytes")
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()

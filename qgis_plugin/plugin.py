"""Plugin entry: the dock, a toolbar/menu action, and the Processing provider."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAction

from .provider import EditProvider


class RsGeoEditPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.dock = None
        self.action = None
        self.provider = None

    def initProcessing(self):  # noqa: N802 (qgis_process calls this with iface=None)
        if self.provider is None:
            self.provider = EditProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        from .dock import EditDock

        self.initProcessing()
        self.dock = EditDock(self.iface, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.action = QAction("rs-geo-edit", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setChecked(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu("rs-geo-edit", self.action)

    def unload(self):
        if self.dock is not None:
            if self.dock.task is not None:
                self.dock.task.cancel()
            self.dock.stop_backend()
            if self.iface.mapCanvas().mapTool() is self.dock.tool:
                self.iface.mapCanvas().unsetMapTool(self.dock.tool)
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu("rs-geo-edit", self.action)
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

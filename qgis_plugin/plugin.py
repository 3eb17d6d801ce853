"""Plugin entry: creates the dock, its controller, a toolbar/menu action and the Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .network import remember_main_manager
from .provider import EditProvider

ICON = Path(__file__).with_name("icon.svg")


class RsGeoEditPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.dock = None
        self.controller = None
        self.action = None
        self.provider = None

    def initProcessing(self):  # noqa: N802 (qgis_process calls this with iface=None)
        remember_main_manager()   # QGIS calls this on the main thread; requests then come from tasks
        if self.provider is None:
            provider = EditProvider()
            # another instance may hold the id already; then leave its provider alone on unload
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self):  # noqa: N802
        from .controller import EditController
        from .dock import EditDock

        self.initProcessing()
        self.dock = EditDock(self.iface.mainWindow())
        self.controller = EditController(self.iface, self.dock)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.action = QAction(QIcon(str(ICON)), "rs-geo-edit", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setChecked(True)
        self.action.toggled.connect(self.dock.setVisible)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu("rs-geo-edit", self.action)

    def unload(self):
        if self.controller is not None:
            self.controller.unload()
            self.controller = None
        if self.dock is not None:
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

"""A polygon map tool: left click adds a vertex, right click finishes, Esc cancels."""

from __future__ import annotations

from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor


class PolygonTool(QgsMapTool):
    """Draws one polygon in map (project) coordinates and emits it as a QgsGeometry."""

    polygonFinished = pyqtSignal(QgsGeometry)

    def __init__(self, canvas):
        super().__init__(canvas)
        self.points: list[QgsPointXY] = []
        self.band = QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)
        self.band.setColor(QColor(255, 40, 40, 180))
        self.band.setFillColor(QColor(255, 40, 40, 50))
        self.band.setWidth(2)

    def canvasReleaseEvent(self, event):  # noqa: N802
        if event.button() == Qt.RightButton:
            self.finish()
            return
        if event.button() == Qt.LeftButton:
            point = self.toMapCoordinates(event.pos())
            self.points.append(QgsPointXY(point))
            self.band.addPoint(QgsPointXY(point), True)

    def canvasMoveEvent(self, event):  # noqa: N802
        if self.points:
            self.band.movePoint(self.toMapCoordinates(event.pos()))

    def keyPressEvent(self, event):  # noqa: N802
        if event.key() == Qt.Key_Escape:
            self.reset()

    def finish(self) -> None:
        if len(self.points) >= 3:
            geometry = QgsGeometry.fromPolygonXY([self.points + [self.points[0]]])
            self.reset()
            self.polygonFinished.emit(geometry)
        else:
            self.reset()

    def reset(self) -> None:
        self.points = []
        self.band.reset(QgsWkbTypes.PolygonGeometry)

    def deactivate(self):
        self.reset()
        super().deactivate()


def add_polygon(layer, geometry: QgsGeometry, prompt: str = "") -> QgsFeature:
    """Append a drawn polygon (already in the layer's CRS) with its prompt to a memory layer."""
    feature = QgsFeature(layer.fields())
    feature.setGeometry(geometry)
    feature["prompt"] = prompt
    layer.dataProvider().addFeatures([feature])
    layer.updateExtents()
    layer.triggerRepaint()
    return feature

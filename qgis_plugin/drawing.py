"""Drawn ROIs: the polygon map tool and the scratch layer its polygons go into."""

from __future__ import annotations

from qgis.core import QgsCoordinateTransform, QgsProject

from . import layers
from .maptool import PolygonTool, add_polygon


class DrawnRois:
    """Owns the map tool and the scratch layer (made, and added to the project, on first use)."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.tool = PolygonTool(canvas)
        self.roi_layer = None

    def layer(self):
        """The scratch layer, again made when it was removed from the project."""
        if self.roi_layer is None or not QgsProject.instance().mapLayer(self.roi_layer.id()):
            self.roi_layer = layers.roi_layer(QgsProject.instance().crs())
            QgsProject.instance().addMapLayer(self.roi_layer)
        return self.roi_layer

    def start(self) -> None:
        self.canvas.setMapTool(self.tool)

    def add(self, geometry, prompt: str) -> None:
        """A polygon drawn in map coordinates, stored in the scratch layer's CRS."""
        layer = self.layer()
        map_crs = self.canvas.mapSettings().destinationCrs()
        if map_crs != layer.crs():
            geometry.transform(QgsCoordinateTransform(map_crs, layer.crs(), QgsProject.instance()))
        add_polygon(layer, geometry, prompt)

    def close(self) -> None:
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)

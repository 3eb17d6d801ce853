"""Comparing the last result with its source on the map: a flip of the result layer's visibility
(the source lies just below it), with the map zoomed to the ROIs, so the analyst sees the edit
against the original without touching the layer panel."""

from __future__ import annotations

from typing import Iterable, Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRasterLayer,
                       QgsRectangle)
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .entities import Job

MARGIN = 0.25   # the view shows the ROIs' extent and this share of it around them


def geojson_extent(aoi) -> Optional[QgsRectangle]:
    """The bounding box (EPSG:4326) of an inline GeoJSON FeatureCollection; None for anything else."""
    if not isinstance(aoi, dict):
        return None
    points = [p for f in aoi.get("features") or [] for p in _points((f.get("geometry") or {}).get("coordinates"))]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return QgsRectangle(min(xs), min(ys), max(xs), max(ys))


def _points(coordinates) -> Iterable[tuple]:
    if isinstance(coordinates, (list, tuple)) and coordinates and isinstance(coordinates[0], (int, float)):
        yield tuple(coordinates[:2])
    elif isinstance(coordinates, (list, tuple)):
        for item in coordinates:
            yield from _points(item)


class CompareService(QObject):
    available = pyqtSignal(bool)    # a result to compare is in the project, or no longer

    def __init__(self, canvas, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.layer_id: Optional[str] = None
        self.extent: Optional[QgsRectangle] = None   # the ROIs' extent in EPSG:4326
        QgsProject.instance().layersWillBeRemoved.connect(self._removed)

    def set_result(self, layer: QgsRasterLayer, job: Job) -> None:
        """``layer`` (``job``'s result, just above its source) becomes the one compared; the result
        compared so far is shown again first."""
        self.show_source(False)
        self.layer_id = layer.id()
        self.extent = geojson_extent(job.request.get("aoi"))
        self.available.emit(True)

    def layer(self) -> Optional[QgsRasterLayer]:
        return QgsProject.instance().mapLayer(self.layer_id) if self.layer_id else None

    def show_source(self, source: bool) -> None:
        """``source``: hide the result so its source shows, zoomed to the ROIs; else show the result."""
        layer = self.layer()
        node = QgsProject.instance().layerTreeRoot().findLayer(layer.id()) if layer is not None else None
        if node is None:
            return
        if source:
            self.canvas.setExtent(self.view_extent(layer))
        node.setItemVisibilityChecked(not source)
        self.canvas.refresh()

    def view_extent(self, layer: QgsRasterLayer) -> QgsRectangle:
        """The ROIs' extent (else the result's) with a margin, in the map's CRS."""
        crs = self.canvas.mapSettings().destinationCrs()
        if self.extent is not None:
            source_crs, extent = QgsCoordinateReferenceSystem("EPSG:4326"), self.extent
        else:
            source_crs, extent = layer.crs(), layer.extent()
        box = QgsCoordinateTransform(source_crs, crs, QgsProject.instance()).transformBoundingBox(extent)
        box.grow(MARGIN * max(box.width(), box.height()))
        return box

    def _removed(self, layer_ids) -> None:
        if self.layer_id in layer_ids:
            self.layer_id, self.extent = None, None
            self.available.emit(False)

    def close(self) -> None:
        QgsProject.instance().layersWillBeRemoved.disconnect(self._removed)

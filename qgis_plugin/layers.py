"""Layers the plugin adds to the project: the scratch layer of drawn ROIs and edit results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsFillSymbol, QgsProject, QgsRasterLayer, QgsVectorLayer)

RESULT_SUFFIX = " (rs-geo-edit)"


def roi_layer(crs: QgsCoordinateReferenceSystem, name: str = "rs-geo-edit ROIs") -> QgsVectorLayer:
    """A memory polygon layer with a ``prompt`` field for drawn ROIs, outlined only: a fill would
    hide the edit the ROI produced."""
    layer = QgsVectorLayer(f"Polygon?crs={crs.authid()}&field=prompt:string(255)", name, "memory")
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"style": "no", "outline_color": "255,40,40,255", "outline_width": "0.6"}))
    return layer


def source_path(layer) -> str:
    """The file behind a raster layer (GDAL sources may carry ``|option`` suffixes)."""
    return layer.source().split("|")[0]


def find_raster(path: str) -> Optional[QgsRasterLayer]:
    """A raster layer of the project that reads ``path``, if any."""
    target = Path(path).resolve()
    for layer in QgsProject.instance().mapLayers().values():
        if isinstance(layer, QgsRasterLayer) and Path(source_path(layer)).resolve() == target:
            return layer
    return None


def add_result(path: str, name: str, source_layer: Optional[QgsRasterLayer]) -> QgsRasterLayer:
    """Add the edited GeoTIFF just above its source layer, drawn with a copy of the source's renderer
    (same bands, same stretch), so before and after compare fairly."""
    layer = QgsRasterLayer(path, f"{name}{RESULT_SUFFIX}")
    if not layer.isValid():
        raise ValueError(f"{path} cannot be read as a raster: was it moved or deleted?")
    if source_layer is not None and source_layer.renderer() is not None \
            and source_layer.bandCount() == layer.bandCount():
        layer.setRenderer(source_layer.renderer().clone())
    project = QgsProject.instance()
    project.addMapLayer(layer, False)
    root = project.layerTreeRoot()
    node = root.findLayer(source_layer.id()) if source_layer is not None else None
    parent = node.parent() if node is not None else root
    parent.insertLayer(parent.children().index(node) if node is not None else 0, layer)
    return layer

"""ROIs from QGIS layers as an RFC 7946 GeoJSON FeatureCollection (EPSG:4326).

The transform from the ROI layer's CRS to EPSG:4326 is explicit, so ROIs drawn in the project
CRS over a raster in another CRS land where they were drawn; the backend reprojects them to the
raster's CRS.
"""

from __future__ import annotations

import json
from typing import Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsVectorLayer,
                       QgsWkbTypes)

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def scratch_layer(crs: QgsCoordinateReferenceSystem, name: str = "rs-geo-edit ROIs") -> QgsVectorLayer:
    """A memory polygon layer with a ``prompt`` field for drawn ROIs, outlined in red."""
    from qgis.core import QgsFillSymbol

    layer = QgsVectorLayer(f"Polygon?crs={crs.authid()}&field=prompt:string(255)", name, "memory")
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "255,40,40,40", "outline_color": "255,40,40,255", "outline_width": "0.6"}))
    return layer


def rois_geojson(layer: QgsVectorLayer, selected_only: bool = False, prompt_field: str = "prompt",
                 default_prompt: Optional[str] = None) -> dict:
    """The polygons of ``layer`` as a FeatureCollection in EPSG:4326 with a ``prompt`` per feature."""
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise ValueError(f"layer {layer.name()!r} is not a polygon layer: ROIs must be polygons")
    transform = QgsCoordinateTransform(layer.crs(), WGS84, QgsProject.instance())
    features = layer.selectedFeatures() if selected_only else list(layer.getFeatures())
    has_prompt = layer.fields().indexOf(prompt_field) >= 0
    out = []
    for feature in features:
        geometry = feature.geometry()
        if geometry is None or geometry.isEmpty():
            continue
        geometry.transform(transform)
        prompt = feature[prompt_field] if has_prompt else None
        prompt = prompt if isinstance(prompt, str) and prompt.strip() else default_prompt
        out.append({"type": "Feature", "properties": {"prompt": prompt}, "geometry": json.loads(geometry.asJson(9))})
    if not out:
        raise ValueError(f"layer {layer.name()!r} has no {'selected ' if selected_only else ''}polygon: "
                         "draw or select at least one ROI")
    return {"type": "FeatureCollection", "features": out}

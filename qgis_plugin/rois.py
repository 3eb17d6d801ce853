"""ROIs from QGIS features as an RFC 7946 GeoJSON FeatureCollection (EPSG:4326): the one exporter,
for the dock's layers and the Processing algorithm's feature sources alike.

The transform from the ROIs' CRS to EPSG:4326 is explicit, so ROIs drawn in the project CRS over
a raster in another CRS land where they were drawn; the backend reprojects them to the raster's
CRS. Empty geometries are dropped, and a blank ``prompt`` attribute falls back to the default
prompt rather than being sent as an empty one.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsCoordinateTransformContext,
                       QgsFeature, QgsFields, QgsProject, QgsVectorLayer, QgsWkbTypes)

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def features_geojson(features: Iterable[QgsFeature], crs: QgsCoordinateReferenceSystem, fields: QgsFields,
                     prompt_field: str = "prompt", default_prompt: Optional[str] = None,
                     context: Optional[QgsCoordinateTransformContext] = None) -> dict:
    """Polygon features in ``crs`` as a FeatureCollection in EPSG:4326, one ``prompt`` per feature
    (its own non-blank ``prompt_field`` attribute, else ``default_prompt``). The collection may be
    empty."""
    transform = QgsCoordinateTransform(crs, WGS84, context or QgsProject.instance().transformContext())
    index = fields.indexOf(prompt_field)
    out = []
    for feature in features:
        geometry = feature.geometry()
        if geometry is None or geometry.isNull() or geometry.isEmpty():
            continue
        geometry.transform(transform)
        own = feature.attributes()[index] if index >= 0 else None
        prompt = own.strip() if isinstance(own, str) and own.strip() else default_prompt
        out.append({"type": "Feature", "properties": {"prompt": prompt}, "geometry": json.loads(geometry.asJson(9))})
    return {"type": "FeatureCollection", "features": out}


def rois_geojson(layer: QgsVectorLayer, selected_only: bool = False, prompt_field: str = "prompt",
                 default_prompt: Optional[str] = None) -> dict:
    """The polygons of ``layer`` (or its selection); ValueError when there is none to send."""
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise ValueError(f"layer {layer.name()!r} is not a polygon layer: ROIs must be polygons")
    features = layer.selectedFeatures() if selected_only else layer.getFeatures()
    collection = features_geojson(features, layer.crs(), layer.fields(), prompt_field, default_prompt)
    if not collection["features"]:
        raise ValueError(f"layer {layer.name()!r} has no {'selected ' if selected_only else ''}polygon: "
                         "draw or select at least one ROI")
    return collection

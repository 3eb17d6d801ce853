"""The edit request the dock's form describes, as the service's ``POST /jobs`` takes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from qgis.core import QgsRasterLayer

from . import layers
from .entities import EditForm
from .naming import output_path
from .rois import rois_geojson


def build_request(form: EditForm, drawn_layer: Callable[[], object]) -> dict:
    """``drawn_layer()`` gives the scratch layer of drawn ROIs; raises ValueError with what to choose."""
    raster = form.raster
    if not isinstance(raster, QgsRasterLayer) or not os.path.isfile(layers.source_path(raster)):
        raise ValueError("choose a raster layer stored in a file (GeoTIFF)")
    if form.drawn:
        layer, selected = drawn_layer(), False
    else:
        layer, selected = form.roi_layer, form.selected_only
        if layer is None:
            raise ValueError("choose a polygon layer of ROIs")
    prompt = form.prompt or None
    aoi = rois_geojson(layer, selected, default_prompt=prompt)
    source = Path(layers.source_path(raster))
    output = output_path(source, prompt, form.mode, form.seed)
    return {"scene": str(source), "aoi": aoi, "prompt": prompt, "mode": form.mode, "preset": form.preset,
            "seed": form.seed, "output": str(output)}

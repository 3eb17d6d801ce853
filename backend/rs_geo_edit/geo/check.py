"""The cheap check of an edit's inputs, made before any training by every entry point.

It reads headers, never pixels: the scene opens as a raster with a CRS, a supported data type
and at least one data band, and every block its header points to lies inside the file (a
truncated download passes GDAL's open but would fail hours later, when the edited copy is
written); the AOI reads as polygons that overlap the scene. Each refusal is a
:class:`rs_geo_edit.errors.RsGeoEditError` whose message names the file, the problem and the fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

from ..errors import SceneError


def check_scene_complete(src, path: str | os.PathLike) -> None:
    """Raise :class:`SceneError` if a block of a (Geo)TIFF ends past the end of the file.

    Uses GDAL's per-block offsets and sizes (the ``TIFF`` metadata domain), so it costs a few
    microseconds per block; other formats, which do not expose them, are probed by reading their
    last block instead.
    """
    size = Path(path).stat().st_size
    rows, cols = src.block_shapes[0]
    nrow, ncol = -(-src.height // rows), -(-src.width // cols)
    # Pixel-interleaved TIFFs store all bands in band 1's blocks; band-interleaved ones need each band.
    bands = [1] if src.interleaving is None or src.interleaving.name == "PIXEL" else range(1, src.count + 1)
    end = 0
    for band in bands:
        for j in range(nrow):
            for i in range(ncol):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=band)
                if offset is None:
                    return _probe_last_block(src, path)
                length = src.get_tag_item(f"BLOCK_SIZE_{i}_{j}", "TIFF", bidx=band)
                end = max(end, int(offset) + int(length or 0))
    if end > size:
        raise SceneError(f"scene {str(path)!r} is truncated: its blocks need {end} bytes, the file has {size}; "
                         "copy or download it again")


def _probe_last_block(src, path) -> None:
    from rasterio.windows import Window

    rows, cols = src.block_shapes[0]
    window = Window(max(0, src.width - cols), max(0, src.height - rows), min(cols, src.width), min(rows, src.height))
    try:
        src.read(src.count, window=window)
    except Exception as exc:  # GDAL raises RasterioIOError or CPLE_* errors for damaged data
        raise SceneError(f"scene {str(path)!r} cannot be read to its end ({str(exc).splitlines()[0]}): "
                         "copy or download it again") from None


def check_inputs(scene: str | os.PathLike, aoi: Optional[str | os.PathLike], *, layer: Optional[str] = None,
                 prompt_field: str = "prompt", role_field: str = "role", default_prompt: Optional[str] = None) -> dict:
    """Check ``scene`` and (if given) ``aoi`` without reading pixels; return a summary.

    Raises :class:`SceneError` (missing, unreadable, no CRS, unsupported type, no data band,
    truncated) or :class:`rs_geo_edit.errors.AOIError` (unreadable, no polygon, misses the
    scene). AOI warnings (repaired or skipped features) are returned, not emitted.
    """
    from .aoi import read_aoi
    from .raster import data_bands, footprint, open_scene

    summary: dict = {"scene": str(scene)}
    with open_scene(scene) as src:
        if src.width < 1 or src.height < 1:
            raise SceneError(f"scene {str(scene)!r} has no pixels ({src.width} x {src.height})")
        if not data_bands(src):
            raise SceneError(f"scene {str(scene)!r} has no data band (only alpha): give the image bands")
        check_scene_complete(src, scene)
        summary.update(width=src.width, height=src.height, count=src.count, crs=src.crs.to_string())
        if aoi is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = read_aoi(aoi, src.crs, footprint(src), layer=layer, prompt_field=prompt_field,
                                  role_field=role_field, default_prompt=default_prompt)
            summary.update(rois=len(result.targets), aoi_warnings=[str(w.message) for w in caught])
    return summary

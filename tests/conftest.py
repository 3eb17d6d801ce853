"""Fixtures: real GeoTIFFs and vector files written with rasterio and geopandas into tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"


def texture(rng: np.random.Generator, bands: int, height: int, width: int) -> np.ndarray:
    """Smooth random texture in [0, 1]: sums of blurred noise at a few scales."""
    from scipy.ndimage import gaussian_filter

    out = np.zeros((bands, height, width))
    for sigma, weight in ((12, 0.6), (4, 0.3), (1, 0.1)):
        noise = gaussian_filter(rng.standard_normal((bands, height, width)), sigma=(0, sigma, sigma))
        out += weight * noise / (noise.std() + 1e-9)
    out = (out - out.min()) / (out.max() - out.min())
    return out


def write_scene(path: Path, *, dtype="uint8", bands=3, height=256, width=256, crs="EPSG:32633",
                transform=None, nodata=None, alpha=False, nan_border=False, nodata_border=0,
                colorinterp=None, descriptions=None, tags=None, band_tags=None, scales=None, offsets=None,
                compress="deflate", tiled=True, blocksize=128, internal_mask=False, seed=0, photometric=None,
                units=None) -> Path:
    """Write a textured test scene; returns its path."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    tex = texture(rng, bands, height, width)
    if np.issubdtype(np.dtype(dtype), np.integer):
        top = {"uint8": 250, "uint16": 4000, "int16": 3000, "uint32": 70000, "int32": 50000}[dtype]
        data = (tex * (top - 10) + 5).round().astype(dtype)
    else:
        data = (tex * 0.8 - 0.1).astype(dtype)
    if nodata_border and nodata is not None:
        data[:, :nodata_border, :] = nodata
        data[:, :, :nodata_border] = nodata
    if nan_border:
        data[:, :16, :] = np.nan
    if transform is None:
        if str(crs).upper() == "EPSG:4326":
            transform = from_origin(12.0, 46.0, 0.0001, 0.0001)
        elif str(crs).upper() == "EPSG:3857":
            transform = from_origin(1_400_000.0, 5_800_000.0, 2.0, 2.0)
        else:
            transform = from_origin(500_000.0, 5_100_000.0, 10.0, 10.0)
    count = bands + (1 if alpha else 0)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
               "crs": crs, "transform": transform, "nodata": nodata, "compress": compress}
    if tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if photometric:
        profile["photometric"] = photometric
    env = {"GDAL_TIFF_INTERNAL_MASK": "YES"}
    with rasterio.Env(**env), rasterio.open(path, "w", **profile) as dst:
        dst.write(data, indexes=list(range(1, bands + 1)))
        if alpha:
            a = np.full((height, width), 255, np.uint8 if dtype == "uint8" else dtype)
            a[:, -20:] = 0
            dst.write(a, count)
            ci = list(colorinterp or [ColorInterp.red, ColorInterp.green, ColorInterp.blue][:bands])
            dst.colorinterp = ci + [ColorInterp.alpha]
        elif colorinterp:
            dst.colorinterp = colorinterp
        if internal_mask:
            mask = np.full((height, width), 255, np.uint8)
            mask[-24:, :] = 0
            dst.write_mask(mask)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
        for i, bt in (band_tags or {}).items():
            dst.update_tags(i, **bt)
        if scales:
            dst.scales = scales
        if offsets:
            dst.offsets = offsets
        if units:
            dst.units = units
    return path


def write_aoi(path: Path, geometries, crs="EPSG:32633", properties=None, driver=None, layer=None) -> Path:
    """Write polygons (shapely) with optional per-feature properties to any OGR format."""
    import geopandas as gpd

    data = {key: list(values) for key, values in (properties or {}).items()}
    gdf = gpd.GeoDataFrame(data, geometry=list(geometries), crs=crs)
    kwargs = {"engine": "pyogrio"}
    if driver:
        kwargs["driver"] = driver
    if layer:
        kwargs["layer"] = layer
    gdf.to_file(path, **kwargs)
    return path


def pixel_box(src_path: Path, col0, row0, col1, row1):
    """A polygon in scene CRS covering pixel columns [col0, col1) and rows [row0, row1)."""
    import rasterio
    from shapely.geometry import box

    with rasterio.open(src_path) as src:
        t = src.transform
    x0, y0 = t @ (col0, row0)
    x1, y1 = t @ (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


class InvertEditor:
    """Test editor: colour inversion of the whole window (the pipeline keeps only the ROI)."""

    def __init__(self):
        self.calls = []

    def edit(self, request, progress):
        self.calls.append(request)
        progress(1, 1, "inverted")
        return -request.image

    def describe(self):
        return {"name": "invert-test"}


@pytest.fixture
def rgb_scene(tmp_path):
    return write_scene(tmp_path / "rgb_utm.tif", descriptions=["red", "green", "blue"],
                       tags={"SENSOR": "test-cam", "ACQ_DATE": "2024-05-01"},
                       band_tags={1: {"WAVELENGTH": "665"}})


@pytest.fixture
def invert_editor():
    return InvertEditor()

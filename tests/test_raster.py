"""Raster I/O: validity masks, normalisation round trip, metadata-preserving atomic writes."""

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from conftest import write_scene
from rs_geo_edit.errors import SceneError
from rs_geo_edit.geo.raster import (Normaliser, Patch, avoid_nodata, data_bands, open_scene, read_window,
                                    rgb_positions, validity_mask, write_edited)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32"])
def test_normaliser_exact_round_trip(dtype):
    rng = np.random.default_rng(1)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -40000), min(info.max, 60000), size=(5, 40, 30), endpoint=True).astype(dtype)
    else:
        x = (rng.standard_normal((5, 40, 30)) * 1e3).astype(dtype)
    valid = np.ones(x.shape[1:], bool)
    norm = Normaliser.fit(x, valid)
    y = norm.forward(x, np.float64)
    assert y.min() >= -1 and y.max() <= 1
    assert np.array_equal(norm.inverse(y), x)
    if dtype in ("uint8", "uint16"):  # float32 model input is exact for these too
        assert np.array_equal(norm.inverse(norm.forward(x)), x)


def test_normaliser_ignores_invalid_and_constant_bands():
    x = np.array([[[0, 100, 200]], [[7, 7, 7]]], dtype="uint16")
    valid = np.array([[False, True, True]])
    norm = Normaliser.fit(x, valid)
    assert norm.lo.tolist() == [100, 7] and norm.hi.tolist() == [200, 8]


def test_validity_from_nodata_alpha_internal_mask_and_nan(tmp_path):
    nd = write_scene(tmp_path / "nd.tif", dtype="uint16", bands=4, nodata=0, nodata_border=10)
    rgba = write_scene(tmp_path / "rgba.tif", alpha=True)
    msk = write_scene(tmp_path / "msk.tif", internal_mask=True)
    nan = write_scene(tmp_path / "nan.tif", dtype="float32", nan_border=True)
    full = Window(0, 0, 256, 256)
    with rasterio.open(nd) as src:
        v = validity_mask(src, full)
        assert not v[:10].any() and not v[:, :10].any() and v[10:, 10:].all()
    with rasterio.open(rgba) as src:
        assert data_bands(src) == [1, 2, 3]
        v = validity_mask(src, full)
        assert not v[:, -20:].any() and v[:, :-20].all()
    with rasterio.open(msk) as src:
        v = validity_mask(src, full)
        assert not v[-24:].any() and v[:-24].all()
    with rasterio.open(nan) as src:
        v = validity_mask(src, full)
        assert not v[:16].any() and v[16:].all()


def test_rgb_band_choice(tmp_path):
    bgrn = write_scene(tmp_path / "bgrn.tif", dtype="uint16", bands=4,
                       colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined])
    with rasterio.open(bgrn) as src:
        assert rgb_positions(src) == [2, 1, 0]
        assert rgb_positions(src, (4, 3, 2)) == [3, 2, 1]
    grey = write_scene(tmp_path / "grey.tif", bands=1)
    with rasterio.open(grey) as src:
        assert rgb_positions(src) == [0, 0, 0]


def test_avoid_nodata_never_creates_holes():
    pixels = np.zeros((3, 2, 2), np.uint8)
    changed = np.array([[True, False], [False, False]])
    avoid_nodata(pixels, changed, 0)
    assert pixels[:, 0, 0].tolist() == [1, 0, 0] and pixels[:, 1, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("path,match", [
    ("missing.tif", "does not exist"),
    ("garbage.tif", "not a readable raster"),
    ("notes.txt", "not a readable raster"),
])
def test_open_scene_errors(tmp_path, path, match):
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00" + b"\x00" * 100)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SceneError, match=match):
        with open_scene(tmp_path / path):
            pass


def test_scene_without_crs_refused(tmp_path):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(SceneError, match="has no CRS"):
        with open_scene(path):
            pass


def _patch(src, window, value):
    pixels = read_window(src, window)
    pixels[:] = value
    changed = np.zeros(pixels.shape[1:], bool)
    changed[5:-5, 5:-5] = True
    return Patch(window, pixels, changed)


def test_write_keeps_metadata_and_untouched_pixels(tmp_path):
    scene = write_scene(tmp_path / "u16.tif", dtype="uint16", bands=4, nodata=0, nodata_border=8,
                        descriptions=["blue", "green", "red", "nir"], tags={"MISSION": "x", "DATE": "2020"},
                        band_tags={4: {"WAVELENGTH": "842"}}, scales=[0.0001] * 4, offsets=[-0.1] * 4,
                        units=["reflectance"] * 4,
                        colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined],
                        compress="lzw", blocksize=64)
    out = tmp_path / "out" / "u16_edited.tif"
    out.parent.mkdir()
    with rasterio.open(scene) as src:
        patch = _patch(src, Window(100, 70, 50, 40), 1234)
    info = write_edited(scene, out, [patch])
    assert info["compress"] == "lzw"
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        for key in ("crs", "transform", "dtype", "nodata", "blockxsize", "blockysize", "tiled", "count",
                    "width", "height", "compress", "interleave"):
            assert dst.profile.get(key) == src.profile.get(key), key
        assert dst.descriptions == src.descriptions
        assert dst.tags()["MISSION"] == "x" and dst.tags(4)["WAVELENGTH"] == "842"
        assert dst.colorinterp == src.colorinterp
        assert dst.scales == src.scales and dst.offsets == src.offsets and dst.units == src.units
        a, b = src.read(), dst.read()
    changed = np.zeros(a.shape[1:], bool)
    changed[75:105, 105:145] = True
    assert (b[:, changed] == 1234).all()
    assert np.array_equal(a[:, ~changed], b[:, ~changed])
    assert sorted(p.name for p in out.parent.iterdir()) == ["u16_edited.tif"]  # no .aux.xml, no temp


def test_lossy_jpeg_source_written_losslessly_with_mask(tmp_path):
    scene = write_scene(tmp_path / "jpeg.tif", compress="jpeg", photometric="ycbcr", internal_mask=True)
    out = tmp_path / "jpeg_out.tif"
    with rasterio.open(scene) as src:
        patch = _patch(src, Window(10, 10, 30, 30), 200)
    info = write_edited(scene, out, [patch])
    assert info["compress"] == "deflate" and info["internal_mask"]
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.compression.value.lower() == "deflate"
        assert dst.colorinterp[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        a, b = src.read(), dst.read()
        assert np.array_equal(src.dataset_mask(), dst.dataset_mask())
    untouched = np.ones(a.shape[1:], bool)
    untouched[15:35, 15:35] = False
    assert np.array_equal(a[:, untouched], b[:, untouched])


def test_sample_scene_keeps_pixels_mask_and_overviews(tmp_path):
    from conftest import SAMPLE

    out = tmp_path / "aerial_copy.tif"
    write_edited(SAMPLE, out, [])
    with rasterio.open(SAMPLE) as src, rasterio.open(out) as dst:
        assert np.array_equal(src.read(), dst.read())
        assert np.array_equal(src.dataset_mask(), dst.dataset_mask())
        assert dst.overviews(1) == src.overviews(1)
        assert dst.crs == src.crs and dst.transform == src.transform


def test_cog_output_is_valid(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    scene = write_scene(tmp_path / "big.tif", width=1100, height=900, tiled=False, descriptions=["r", "g", "b"],
                        tags={"K": "v"})
    out = tmp_path / "cog.tif"
    with rasterio.open(scene) as src:
        patch = _patch(src, Window(500, 400, 60, 60), 9)
    write_edited(scene, out, [patch], cog=True)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert dst.overviews(1)
        assert dst.descriptions == ("r", "g", "b") and dst.tags()["K"] == "v"
        a, b = src.read(), dst.read()
    assert (b[:, 405:455, 505:555] == 9).all()
    a[:, 405:455, 505:555] = 9
    assert np.array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "cog.tif"]


def test_failed_write_leaves_nothing(tmp_path, rgb_scene):
    out = tmp_path / "fail.tif"
    with rasterio.open(rgb_scene) as src:
        patch = _patch(src, Window(0, 0, 20, 20), 1)
    bad = Patch(patch.window, patch.pixels[:, :5], patch.changed)  # wrong shape: breaks mid-write
    with pytest.raises(Exception):
        write_edited(rgb_scene, out, [bad])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb_utm.tif"]


def test_an_open_scene_reads_through_a_small_block_cache(tmp_path):
    """While a scene is open for editing, GDAL's block cache is held to READ_CACHE_BYTES (a
    window is read once; the default, 5 % of RAM, kept a copy of it through the edit), and the
    process's own setting comes back when the scene is closed."""
    from rasterio.env import get_gdal_config

    from rs_geo_edit.geo.raster import READ_CACHE_BYTES, WRITE_ENV, gdal_env

    scene = write_scene(tmp_path / "scene.tif", height=64, width=64)
    before = int(get_gdal_config("GDAL_CACHEMAX"))
    with open_scene(scene) as src:
        assert int(get_gdal_config("GDAL_CACHEMAX")) == READ_CACHE_BYTES
        assert read_window(src, Window(0, 0, 64, 64)).shape == (3, 64, 64)
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before
    with gdal_env(**WRITE_ENV):     # the writers' environment gives it back too
        assert int(get_gdal_config("GDAL_CACHEMAX")) == WRITE_ENV["GDAL_CACHEMAX"]
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before

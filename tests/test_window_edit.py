"""``pipeline.edit_window``, the one edit of a planned window, on real GeoTIFFs: a window held
whole in a file of its own (what a client uploads) is planned as the scene's plan has it and
edited to the same pixels, with the same seed and index, as the window inside the scene."""

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from conftest import InvertEditor, pixel_box, write_aoi, write_scene
from rs_geo_edit.config import BlendConfig, WindowConfig, make_config
from rs_geo_edit.errors import IncompatibleOptions
from rs_geo_edit.geo.raster import Patch, changed_part, open_scene, write_edited, write_pixels
from rs_geo_edit.jobs.client import crop_windows
from rs_geo_edit.pipeline import edit_scene, edit_window, plan_scene, plan_window_file, window_features, window_seed

CASES = {
    "uint8_rgb": dict(),
    "uint16_nodata": dict(dtype="uint16", bands=4, nodata=0, nodata_border=12,
                          colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]),
    "float32_nan": dict(dtype="float32", nan_border=True),
}


class SeedInvertEditor(InvertEditor):
    """Inverts the window and nudges it by its seed, so a wrong seed shows in the pixels."""

    def edit(self, request, progress):
        self.calls.append(request)
        return -request.image + (request.seed % 7) * 0.01


def _scene(tmp_path, name, **kw):
    scene = write_scene(tmp_path / f"{name}.tif", width=320, height=256, **kw)
    # two ROIs close together share a window; the third has one of its own
    aoi = write_aoi(tmp_path / f"{name}.gpkg", [pixel_box(scene, 40, 40, 70, 70), pixel_box(scene, 80, 50, 100, 80),
                                                pixel_box(scene, 230, 170, 270, 210)])
    return scene, aoi


def _config(**windows):
    return make_config(seed=11, blend=BlendConfig(mode="feather", band_px=5, detail_match=False),
                       windows=WindowConfig(**windows))


@pytest.mark.parametrize("name", list(CASES))
def test_a_window_in_its_own_file_is_edited_as_in_the_scene(tmp_path, name):
    scene, aoi = _scene(tmp_path, name, **CASES[name])
    config = _config()
    plan = plan_scene(scene, aoi, config)
    assert len(plan.windows) == 2
    (tmp_path / "crops").mkdir()
    files = crop_windows(scene, plan.windows, tmp_path / "crops")
    features = window_features(plan.windows)
    in_scene, alone, editor = [], [], SeedInvertEditor()
    with open_scene(scene) as src:
        for ew in plan.windows:
            in_scene.append(edit_window(src, ew, window_seed(config.seed, ew.index), config, editor))
    for ew, path in zip(plan.windows, files):
        with open_scene(path) as src:
            mine = [f for f in features if f["properties"]["window"] == ew.index]
            planned = plan_window_file(src, mine, ew.index, config)
            assert (planned.index, planned.shape, planned.scale) == (ew.index, ew.shape, ew.scale)
            assert [r.geometry.equals(s.geometry) for r, s in zip(planned.rois, ew.rois)] == [True] * len(ew.rois)
            alone.append(edit_window(src, planned, window_seed(config.seed, ew.index), config, editor))
    # the editor saw the same seed and index either way
    seen = [(r.seed, r.window.index) for r in editor.calls]
    assert seen[:2] == seen[2:] == [(window_seed(11, 0), 0), (window_seed(11, 1), 1)]
    for ew, a, b in zip(plan.windows, in_scene, alone):
        off = (int(ew.window.col_off), int(ew.window.row_off))
        assert (int(b.patch.window.col_off) + off[0], int(b.patch.window.row_off) + off[1]) == \
               (int(a.patch.window.col_off), int(a.patch.window.row_off))
        assert np.array_equal(a.patch.pixels, b.patch.pixels, equal_nan=True)
        assert np.array_equal(a.patch.changed, b.patch.changed)
        assert a.record["seed"] == b.record["seed"] == window_seed(11, ew.index)
        assert a.record["bounds"] == b.record["bounds"] and a.record["changed_pixels"] == b.record["changed_pixels"]
    # and the scene rebuilt from the windows' changed parts is the whole-scene edit, byte for byte
    edit_scene(scene, aoi, tmp_path / "whole.tif", config, editor=SeedInvertEditor())
    parts = []
    for ew, path, b in zip(plan.windows, files, alone):
        with open_scene(path) as src:
            part = changed_part(src, b.patch)
        window = part.window
        parts.append(Patch(rasterio.windows.Window(window.col_off + ew.window.col_off, window.row_off + ew.window.row_off,
                                                   window.width, window.height), part.pixels, part.changed))
    write_edited(scene, tmp_path / "rebuilt.tif", parts)
    assert (tmp_path / "rebuilt.tif").read_bytes() == (tmp_path / "whole.tif").read_bytes()


def test_changed_part_holds_every_changed_bit_and_is_written_as_is(tmp_path):
    scene = write_scene(tmp_path / "s.tif", width=64, height=64, dtype="float32", nan_border=True)
    with open_scene(scene) as src:
        window = rasterio.windows.Window(4, 10, 30, 20)
        pixels = src.read(window=window)
        changed = np.zeros(pixels.shape[1:], bool)
        changed[3:7, 5:9] = True        # four rows of it rewritten with the values they had: no change
        changed[12, 20] = True
        pixels[:, 12, 20] += 1.0
        changed[15, 2] = True            # a NaN kept NaN: no change either
        part = changed_part(src, Patch(window, pixels, changed))
        assert (part.window.col_off, part.window.row_off, part.window.width, part.window.height) == (24, 22, 1, 1)
        assert changed_part(src, Patch(window, src.read(window=window), changed)) is None
        out = write_pixels(tmp_path / "part.tif", part.pixels, src.crs, src.window_transform(part.window))
        crs, transform = src.crs, src.window_transform(part.window)
    with rasterio.open(out) as written:
        assert written.crs == crs and written.transform == transform and written.nodata is None
        assert np.array_equal(written.read(), part.pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.tif", "s.tif"]  # no side or temporary files


def test_a_copy_edit_without_copy_content_is_refused(tmp_path):
    scene, aoi = _scene(tmp_path, "copy")
    config = make_config(mode="copy")
    plan = plan_scene(scene, aoi, _config())
    with open_scene(scene) as src, pytest.raises(IncompatibleOptions, match="source"):
        edit_window(src, plan.windows[0], 0, config, InvertEditor())

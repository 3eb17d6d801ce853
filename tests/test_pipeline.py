"""edit_scene end to end with a test editor: geometry, exactness, metadata, provenance, errors."""

import json

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from conftest import InvertEditor, pixel_box, write_aoi, write_scene
from rs_geo_edit.config import BlendConfig, OutputConfig, WindowConfig, make_config
from rs_geo_edit.errors import AOIError, OutputError, SceneError
from rs_geo_edit.imaging import distance_to
from rs_geo_edit.pipeline import edit_scene

SCENES = {
    "uint8_rgb_utm": dict(crs="EPSG:32633"),
    "uint16_4band_nodata": dict(dtype="uint16", bands=4, nodata=0, nodata_border=12,
                                colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                                             ColorInterp.undefined]),
    "float32_nan": dict(dtype="float32", nan_border=True, crs="EPSG:3857"),
    "rgba_alpha": dict(alpha=True, crs="EPSG:4326"),
    "int16_internal_mask": dict(dtype="int16", bands=2, internal_mask=True, crs="EPSG:3857"),
}


def _roi_mask(scene, geoms):
    from rasterio.features import geometry_mask

    with rasterio.open(scene) as src:
        return geometry_mask(geoms, out_shape=(src.height, src.width), transform=src.transform, invert=True,
                             all_touched=True)


@pytest.mark.parametrize("name", list(SCENES))
def test_round_trip_invert_editor(tmp_path, name):
    scene = write_scene(tmp_path / f"{name}.tif", descriptions=None, tags={"K": name}, **SCENES[name])
    geoms = [pixel_box(scene, 100, 110, 140, 150), pixel_box(scene, 20, 190, 50, 230)]
    aoi = write_aoi(tmp_path / "aoi.gpkg", geoms, crs=rasterio.open(scene).crs.to_string())
    out = tmp_path / "out.tif"
    editor = InvertEditor()
    # the editor's values pass through unchanged (grain matching would calm them to the ring's)
    config = make_config(blend=BlendConfig(mode="feather", band_px=6, detail_match=False))
    result = edit_scene(scene, aoi, out, config, editor=editor)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        a, b = src.read(), dst.read()
        valid = src.dataset_mask() > 0
        for key in ("crs", "transform", "dtype", "nodata", "count", "blockxsize", "blockysize"):
            assert dst.profile[key] == src.profile[key], key
        assert dst.colorinterp == src.colorinterp and dst.tags()["K"] == name
        assert np.array_equal(src.dataset_mask(), dst.dataset_mask())
        bands = [i for i, ci in enumerate(src.colorinterp) if ci != ColorInterp.alpha]
    if np.issubdtype(a.dtype, np.floating):
        valid &= np.all(np.isfinite(a), axis=0)
    roi = _roi_mask(scene, geoms)
    band = distance_to(roi) <= 6
    same = np.all((a == b) | (np.isnan(a) & np.isnan(b)), axis=0)
    assert same[~band].all(), "pixels outside ROI + feather band must be bit-identical"
    assert same[~valid].all(), "nodata pixels must never change"
    inside = roi & valid
    assert inside.sum() > 500
    # inside the ROI the inverted values: x -> lo + hi - x (per band, in source units)
    norm = result.record["windows"][0]["normalisation"]
    lo, hi = np.array(norm["lo"]), np.array(norm["hi"])
    first = _roi_mask(scene, geoms[:1]) & valid
    expected = lo[:, None] + hi[:, None] - a[bands][:, first].astype(np.float64)
    assert np.allclose(b[bands][:, first], expected, atol=1.01 if a.dtype.kind in "ui" else 1e-3 * (hi - lo).max())
    # provenance
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["inputs"]["scene"]["sha256"] == result.record["inputs"]["scene"]["sha256"]
    assert len(record["inputs"]["scene"]["sha256"]) == 64
    assert record["seed"] == 0 and record["editor"] == {"name": "invert-test"}
    assert {"plan_s", "edit_s", "write_s", "total_s"} <= set(record["timings"])
    assert [w["features"] for w in record["windows"]] == [[0, 1]]  # overlapping windows merged
    assert record["versions"]["rasterio"]


def test_reduced_resolution_window_still_exact_outside(tmp_path):
    scene = write_scene(tmp_path / "s.tif", width=400, height=300)
    geoms = [pixel_box(scene, 100, 80, 300, 220)]
    aoi = write_aoi(tmp_path / "aoi.geojson", geoms)
    out = tmp_path / "o.tif"
    editor = InvertEditor()
    cfg = make_config(windows=WindowConfig(max_side=128), blend=BlendConfig(band_px=4))
    rec = edit_scene(scene, aoi, out, cfg, editor=editor).record
    assert editor.calls[0].image.shape[1:] == tuple(rec["windows"][0]["work_shape"])
    assert max(editor.calls[0].image.shape[1:]) == 128
    a, b = rasterio.open(scene).read(), rasterio.open(out).read()
    far = distance_to(_roi_mask(scene, geoms)) > 4
    assert np.array_equal(a[:, far], b[:, far])
    assert np.abs(b[:, 120:200, 140:260].astype(int) - (255 - a[:, 120:200, 140:260].astype(int))).mean() < 12


def test_same_inputs_same_output(tmp_path, rgb_scene):
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(rgb_scene, 60, 60, 100, 100)])
    for name in ("1.tif", "2.tif"):
        edit_scene(rgb_scene, aoi, tmp_path / name, make_config(blend=BlendConfig(mode="poisson")), editor=InvertEditor())
    assert np.array_equal(rasterio.open(tmp_path / "1.tif").read(), rasterio.open(tmp_path / "2.tif").read())


def test_cog_output(tmp_path, rgb_scene):
    from rio_cogeo.cogeo import cog_validate

    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(rgb_scene, 60, 60, 100, 100)])
    out = tmp_path / "c.tif"
    edit_scene(rgb_scene, aoi, out, make_config(output=OutputConfig(cog=True)), editor=InvertEditor())
    assert cog_validate(str(out))[0]


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_bad_outputs(tmp_path, rgb_scene):
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(rgb_scene, 60, 60, 100, 100)])
    cfg = make_config()
    with pytest.raises(OutputError, match="also an input"):
        edit_scene(rgb_scene, aoi, rgb_scene, cfg, editor=InvertEditor())
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="set overwrite"):
        edit_scene(rgb_scene, aoi, existing, cfg, editor=InvertEditor())
    assert existing.read_bytes() == b"keep me"
    blocker = tmp_path / "file_not_dir"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        edit_scene(rgb_scene, aoi, blocker / "out.tif", cfg, editor=InvertEditor())
    with pytest.raises(OutputError, match="not writable"):
        edit_scene(rgb_scene, aoi, "/proc/rs_geo_edit_test/out.tif", cfg, editor=InvertEditor())
    assert _listing(tmp_path) == ["a.gpkg", "exists.tif", "file_not_dir", "rgb_utm.tif"]


def test_all_nodata_rois_are_refused(tmp_path):
    scene = write_scene(tmp_path / "nd.tif", dtype="uint16", bands=2, nodata=0, nodata_border=100)
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(scene, 10, 10, 60, 60)])
    with pytest.raises(SceneError, match="nodata"):
        edit_scene(scene, aoi, tmp_path / "o.tif", make_config(), editor=InvertEditor())
    assert _listing(tmp_path) == ["a.gpkg", "nd.tif"]


class ExplodingEditor(InvertEditor):
    def edit(self, request, progress):
        raise RuntimeError("boom")


def test_failure_mid_edit_leaves_no_output(tmp_path, rgb_scene):
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(rgb_scene, 60, 60, 100, 100)])
    with pytest.raises(RuntimeError, match="boom"):
        edit_scene(rgb_scene, aoi, tmp_path / "o.tif", make_config(), editor=ExplodingEditor())
    assert _listing(tmp_path) == ["a.gpkg", "rgb_utm.tif"]


def test_progress_monotonic_and_complete(tmp_path, rgb_scene):
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(rgb_scene, 10, 10, 30, 30), pixel_box(rgb_scene, 200, 200, 230, 230)])
    events = []
    edit_scene(rgb_scene, aoi, tmp_path / "o.tif", make_config(), editor=InvertEditor(), progress=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"plan", "edit", "blend", "write"} <= {e.stage for e in events}


def test_aoi_outside_scene_error(tmp_path, rgb_scene):
    from shapely.geometry import box

    aoi = write_aoi(tmp_path / "far.gpkg", [box(0, 0, 100, 100)])
    with pytest.raises(AOIError, match="intersects the scene"):
        edit_scene(rgb_scene, aoi, tmp_path / "o.tif", make_config(), editor=InvertEditor())


class BoxInvertEditor(InvertEditor):
    """Inverts only a box around the ROIs and returns it as an EditedBox (as a large window's
    SinDDM edit does); ``margin`` px of the window beyond the ROIs' box are inverted too."""

    def __init__(self, margin):
        super().__init__()
        self.margin = margin

    def edit(self, request, progress):
        from rs_geo_edit.imaging import crop_around
        from rs_geo_edit.pipeline.contract import EditedBox

        self.calls.append(request)
        rows, cols = crop_around(request.roi, self.margin)
        return EditedBox(-request.image[:, rows, cols], rows, cols)


@pytest.mark.parametrize("max_side", [0, 80])
def test_an_edited_box_writes_what_the_whole_edited_window_writes(tmp_path, max_side):
    """An editor may return only the box it changed: the pipeline takes the rest of the window as
    unchanged, at native and at reduced resolution, and writes the same file as from the whole
    window (the box reaches beyond the blend band here), or keeps the source where the box stops
    short of the band."""
    scene = write_scene(tmp_path / "scene.tif", height=160, width=160)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 60, 50, 110, 100)])   # rows 50..99, cols 60..109
    outs = {}
    for name, editor in (("whole", InvertEditor()), ("box", BoxInvertEditor(40)), ("short", BoxInvertEditor(4))):
        outs[name] = tmp_path / f"{name}.tif"
        edit_scene(scene, aoi, outs[name], make_config(windows=WindowConfig(max_side=max_side)), editor=editor)
    read = {k: rasterio.open(v).read().astype(int) for k, v in outs.items()}
    assert np.array_equal(read["box"], read["whole"])
    source = rasterio.open(scene).read().astype(int)
    roi = np.zeros((160, 160), bool)
    roi[50:100, 60:110] = True
    assert np.abs(read["short"] - source)[:, roi].max() > 50          # the ROI itself was edited
    band = (distance_to(roi) > 8) & (distance_to(roi) <= 16)
    if max_side == 0:     # beyond the editor's box the window is the source (to the normalisation's rounding)
        assert np.abs(read["short"][:, band] - source[:, band]).max() <= 1
        assert np.abs(read["box"][:, band] - source[:, band]).max() > 50


class StrayBoxEditor(InvertEditor):
    """Returns a box whose pixels do not fit where it says they go (an engine's bug)."""

    def edit(self, request, progress):
        from rs_geo_edit.pipeline.contract import EditedBox

        return EditedBox(-request.image[:, :10, :10], slice(0, 10), slice(0, 12))


def test_an_edited_box_that_does_not_fit_is_refused_and_leaves_no_output(tmp_path, rgb_scene):
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(rgb_scene, 60, 60, 100, 100)])
    with pytest.raises(RuntimeError, match=r"editor returned a box of shape \(3, 10, 10\) at rows 0:10, columns 0:12"):
        edit_scene(rgb_scene, aoi, tmp_path / "o.tif", make_config(), editor=StrayBoxEditor())
    assert _listing(tmp_path) == ["a.gpkg", "rgb_utm.tif"]


class PreparingEditor(InvertEditor):
    """Says it shares a model and has ``prepare``, but not the rest of the scene-model protocol
    (no ``shared``, no ``use_scene_model``): a plain editor to the pipeline."""

    shares_model = True

    def __init__(self):
        super().__init__()
        self.prepared = []

    def prepare(self, windows, progress):
        self.prepared.append((len(self.calls), [index for index, _, _ in windows]))


class SceneModelInvertEditor(PreparingEditor):
    """The whole scene-model protocol; it learns nothing and records what it was given."""

    shared = None

    def use_scene_model(self, key, offsets):
        raise AssertionError("edit_scene never hands a scene model over")


def test_only_a_scene_model_editor_is_asked_to_prepare(tmp_path, rgb_scene):
    from rs_geo_edit.pipeline.contract import SceneModelEditor

    aoi = write_aoi(tmp_path / "aoi.gpkg", [pixel_box(rgb_scene, 10, 10, 40, 40),
                                            pixel_box(rgb_scene, 200, 200, 230, 230)])
    plain, scene_model, window_scope = PreparingEditor(), SceneModelInvertEditor(), SceneModelInvertEditor()
    window_scope.shares_model = False
    assert not isinstance(plain, SceneModelEditor) and isinstance(scene_model, SceneModelEditor)
    for name, editor in (("plain", plain), ("scene", scene_model), ("window", window_scope)):
        result = edit_scene(rgb_scene, aoi, tmp_path / f"{name}.tif", make_config(), editor=editor)
        assert len(editor.calls) == 2
    windows = [w["index"] for w in result.record["windows"]]
    assert len(windows) == 2
    assert scene_model.prepared == [(0, windows)]   # once, with every window, before the first edit
    assert plain.prepared == [] and window_scope.prepared == []


def test_the_recorded_figures_are_those_of_the_written_file(tmp_path):
    """The provenance's realism figures are computed on the window as written against the window
    as read: recomputed here from the two files (uint16, a nodata border, an ROI away from the
    scene's origin, so the window's offset matters), they are the same."""
    from affine import Affine

    from rs_geo_edit.eval.metrics import percentile_scale, realism
    from rs_geo_edit.geo.raster import Normaliser, read_window, validity_mask
    from rs_geo_edit.geo.windows import roi_labels
    from rs_geo_edit.pipeline import plan_scene

    scene = write_scene(tmp_path / "scene.tif", dtype="uint16", nodata=0, nodata_border=10, height=200, width=220)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 120, 90, 170, 140)])
    out = tmp_path / "out.tif"
    config = make_config()
    result = edit_scene(scene, aoi, out, config, editor=InvertEditor())
    plan = plan_scene(scene, aoi, config)
    ew = plan.windows[0]
    assert ew.window.col_off > 0 and ew.window.row_off > 0
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        before, after = read_window(src, ew.window), read_window(dst, ew.window)
        valid = validity_mask(src, ew.window, before)
    roi = (roi_labels(ew, Affine(*plan.transform[:6])) > 0) & valid
    norm = Normaliser.fit(before, valid)     # the figures are taken in the edit's normalised units
    source, written = norm.forward(before, np.float64), norm.forward(after, np.float64)
    expected = realism(written, source, roi, valid, plan.rgb, percentile_scale(source, valid))
    recorded = result.record["windows"][0]["realism"]
    assert set(recorded) == set(expected)
    for key, value in expected.items():
        assert recorded[key] == pytest.approx(value, abs=6e-6), key   # recorded to 5 decimals

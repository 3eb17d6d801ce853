"""Reading ROIs: formats, CRS handling, repair, refusal of bad files."""

import json
import warnings

import pytest
import rasterio
from shapely.geometry import LineString, Point, Polygon, box, mapping

from conftest import pixel_box, write_aoi, write_scene
from rs_geo_edit.errors import AOIError, AOIWarning
from rs_geo_edit.geo.aoi import read_aoi
from rs_geo_edit.geo.raster import footprint


def _read(scene, aoi, **kw):
    with rasterio.open(scene) as src:
        return read_aoi(aoi, src.crs, footprint(src), **kw)


@pytest.mark.parametrize("ext,driver", [(".geojson", "GeoJSON"), (".gpkg", "GPKG"), (".shp", "ESRI Shapefile"),
                                        (".fgb", "FlatGeobuf")])
def test_formats_read_and_reprojected(tmp_path, rgb_scene, ext, driver):
    roi = pixel_box(rgb_scene, 50, 60, 90, 100)  # scene CRS: EPSG:32633
    from pyproj import Transformer
    from shapely.ops import transform

    to3857 = Transformer.from_crs(32633, 3857, always_xy=True).transform
    roi_3857 = transform(to3857, roi)
    path = write_aoi(tmp_path / f"aoi{ext}", [roi_3857], crs="EPSG:3857", properties={"prompt": ["a lake"]},
                     driver=driver)
    aoi = _read(rgb_scene, path)
    assert len(aoi.rois) == 1
    assert aoi.rois[0].prompt == "a lake"
    assert aoi.source_crs == "EPSG:3857"
    # back in the scene CRS, within a centimetre of the original box
    assert aoi.rois[0].geometry.symmetric_difference(roi).area < 1.0


def test_geojson_without_crs_is_wgs84(tmp_path):
    scene = write_scene(tmp_path / "s4326.tif", crs="EPSG:4326")
    with rasterio.open(scene) as src:
        left, top = src.transform @ (10, 10)
        right, bottom = src.transform @ (40, 40)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(box(left, bottom, right, top))}]}
    path = tmp_path / "nocrs.geojson"
    path.write_text(json.dumps(fc))
    aoi = _read(scene, path)
    assert aoi.source_crs == "EPSG:4326"
    assert aoi.rois[0].geometry.bounds == pytest.approx((left, bottom, right, top))


def test_shapefile_without_crs_is_refused(tmp_path, rgb_scene):
    path = write_aoi(tmp_path / "nocrs.shp", [pixel_box(rgb_scene, 1, 1, 9, 9)], crs=None)
    with pytest.raises(AOIError, match="has no CRS"):
        _read(rgb_scene, path)


def test_gpkg_layer_choice(tmp_path, rgb_scene):
    path = tmp_path / "multi.gpkg"
    write_aoi(path, [pixel_box(rgb_scene, 10, 10, 20, 20)], layer="a", properties={"prompt": ["one"]})
    write_aoi(path, [pixel_box(rgb_scene, 30, 30, 40, 40)], layer="b", properties={"prompt": ["two"]})
    with pytest.raises(AOIError, match="choose one with layer"):
        _read(rgb_scene, path)
    assert _read(rgb_scene, path, layer="b").rois[0].prompt == "two"
    with pytest.raises(AOIError, match="no layer 'c'"):
        _read(rgb_scene, path, layer="c")


def test_invalid_polygon_repaired_with_warning(tmp_path, rgb_scene):
    a = pixel_box(rgb_scene, 10, 10, 60, 60).bounds
    bowtie = Polygon([(a[0], a[1]), (a[2], a[3]), (a[2], a[1]), (a[0], a[3])])
    assert not bowtie.is_valid
    path = write_aoi(tmp_path / "bowtie.gpkg", [bowtie])
    with pytest.warns(AOIWarning, match="repaired"):
        aoi = _read(rgb_scene, path)
    assert aoi.repaired == [0]
    assert aoi.rois[0].geometry.is_valid and aoi.rois[0].geometry.area > 0


def test_points_only_refused(tmp_path, rgb_scene):
    c = pixel_box(rgb_scene, 10, 10, 20, 20).centroid
    path = write_aoi(tmp_path / "pts.gpkg", [Point(c.x, c.y), Point(c.x + 5, c.y)])
    with pytest.raises(AOIError, match="only points or lines.*buffer"):
        _read(rgb_scene, path)


def test_lines_skipped_polygons_kept_and_outside_reported(tmp_path, rgb_scene):
    inside = pixel_box(rgb_scene, 10, 10, 30, 30)
    far = box(0, 0, 10, 10)  # near the UTM origin: nowhere near the scene
    line = LineString(inside.exterior.coords)
    path = tmp_path / "mixed.geojson"
    # GeoJSON in the scene's own CRS (named by a crs member)
    write_aoi(path, [inside, far, line], properties={"prompt": ["x", "y", "z"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aoi = _read(rgb_scene, path)
    assert [r.feature for r in aoi.rois] == [0]
    assert any("outside the scene" in s for s in aoi.skipped)
    assert any("LineString is not a polygon" in s for s in aoi.skipped)
    assert any(issubclass(w.category, AOIWarning) for w in caught)


def test_all_outside_is_error(tmp_path, rgb_scene):
    path = write_aoi(tmp_path / "far.gpkg", [box(0, 0, 10, 10)])
    with pytest.raises(AOIError, match="intersects the scene"):
        _read(rgb_scene, path)


@pytest.mark.parametrize("content,match", [(None, "does not exist"), (b"", "is empty"),
                                           (b"not a vector file at all", "not a readable vector")])
def test_missing_empty_unreadable(tmp_path, rgb_scene, content, match):
    path = tmp_path / "bad.geojson"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AOIError, match=match):
        _read(rgb_scene, path)


def test_prompt_field_and_default_prompt_and_roles(tmp_path, rgb_scene):
    path = write_aoi(tmp_path / "p.gpkg", [pixel_box(rgb_scene, 10, 10, 20, 20), pixel_box(rgb_scene, 40, 40, 50, 50),
                                         pixel_box(rgb_scene, 70, 70, 80, 80)],
                     properties={"what": ["forest", None, "x"], "role": [None, None, "source"]})
    aoi = _read(rgb_scene, path, prompt_field="what", default_prompt="meadow")
    assert [r.prompt for r in aoi.rois] == ["forest", "meadow", "x"]
    assert [r.role for r in aoi.rois] == ["target", "target", "source"]
    assert len(aoi.targets) == 2 and len(aoi.sources) == 1

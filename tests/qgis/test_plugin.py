"""The QGIS plugin in real QGIS 3.22, headless: loading, drawing, jobs, cancel, Processing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for, write_raster

TINY = {"steps": 30, "width": 8, "crop": 16, "batch": 1, "threads": 1}
LONG = {"steps": 20000, "width": 8, "crop": 16, "batch": 1, "threads": 1}


def test_plugin_loads_from_zip_without_torch(plugin, host):
    from qgis.core import QgsApplication

    assert plugin.dock is not None and plugin.dock in host.docks
    assert QgsApplication.processingRegistry().algorithmById("rs_geo_edit:edit") is not None
    assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
    assert "rs_geo_edit" not in sys.modules            # the backend package is never imported
    assert plugin.dock.widget().findChildren(type(plugin.dock.run_button))  # the form is built


def _raster_layer(tmp_path, epsg=32633):
    from qgis.core import QgsProject, QgsRasterLayer

    path = write_raster(tmp_path / f"scene_{epsg}.tif", epsg)
    layer = QgsRasterLayer(str(path), "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _click(tool, canvas, x, y, button):
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint

    tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, QPoint(x, y), button))


def _draw(plugin, host, layer, pixels, prompt="a lake"):
    """Draw a polygon by clicks at canvas pixels; returns the map coordinates clicked."""
    from qgis.PyQt.QtCore import Qt

    canvas = host.canvas
    canvas.setExtent(canvas.mapSettings().layerExtentToOutputExtent(layer, layer.extent()))
    canvas.refresh()
    dock = plugin.dock
    dock.raster.setLayer(layer)
    dock.prompt.setText(prompt)
    dock.start_drawing()
    assert canvas.mapTool() is dock.tool
    transform = canvas.getCoordinateTransform()
    points = [transform.toMapCoordinates(x, y) for x, y in pixels]
    for x, y in pixels:
        _click(dock.tool, canvas, x, y, Qt.LeftButton)
    _click(dock.tool, canvas, *pixels[-1], Qt.RightButton)
    return points


@pytest.mark.parametrize("project_epsg", [32633, 3857])
def test_drawn_polygon_has_the_clicked_map_coordinates(plugin, host, tmp_path, project_epsg):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject

    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem(f"EPSG:{project_epsg}"))
    host.canvas.setDestinationCrs(QgsCoordinateReferenceSystem(f"EPSG:{project_epsg}"))
    layer = _raster_layer(tmp_path)
    plugin.dock.roi_layer = None
    pixels = [(250, 200), (450, 200), (450, 400), (250, 400)]
    points = _draw(plugin, host, layer, pixels)
    rois = plugin.dock.roi_layer
    assert rois.crs().authid() == f"EPSG:{project_epsg}" and rois.featureCount() == 1
    feature = next(rois.getFeatures())
    ring = feature.geometry().asPolygon()[0]
    assert len(ring) == 5 and feature["prompt"] == "a lake"
    for vertex, point in zip(ring, points):
        assert abs(vertex.x() - point.x()) < 1e-6 and abs(vertex.y() - point.y()) < 1e-6
    # what is sent to the backend: the same points, explicitly in EPSG:4326
    from rs_geo_edit_qgis.rois import rois_geojson

    sent = rois_geojson(rois)["features"][0]["geometry"]["coordinates"][0]
    to_wgs = QgsCoordinateTransform(rois.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    for (lon, lat), point in zip(sent, points):
        expected = to_wgs.transform(QgsPointXY(point))
        assert abs(lon - expected.x()) < 1e-8 and abs(lat - expected.y()) < 1e-8
    # and it falls on the raster, whatever the project CRS
    to_raster = QgsCoordinateTransform(rois.crs(), layer.crs(), QgsProject.instance())
    assert layer.extent().contains(to_raster.transformBoundingBox(feature.geometry().boundingBox()))
    QgsProject.instance().removeAllMapLayers()


def _connect(plugin, backend):
    dock = plugin.dock
    dock.autostart.setChecked(False)
    dock.url.setText(backend["url"])
    dock.token.setText(backend["token"])
    info = dock.connect_backend()
    assert info["status"] == "ok" and "rs-geo-edit" in dock.health.text()


def _ready_to_run(plugin, host, backend, tmp_path):
    """Connected to the backend, a raster layer, one drawn ROI over it, mode regenerate."""
    _connect(plugin, backend)
    layer = _raster_layer(tmp_path)
    plugin.dock.roi_layer = None
    _draw(plugin, host, layer, [(250, 200), (450, 200), (450, 400), (250, 400)])
    plugin.dock.mode.setCurrentText("regenerate")
    return layer


def test_end_to_end_job_adds_the_result_layer(plugin, host, backend, tmp_path):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = _ready_to_run(plugin, host, backend, tmp_path)
    values = []
    task = plugin.dock.run(TINY)
    assert task is not None
    task.progressChanged.connect(values.append)
    assert wait_for(lambda: plugin.dock.task is None, 240), plugin.dock.stage.text()
    assert plugin.dock.stage.text() == "done", plugin.dock.stage.text()
    assert plugin.dock.progress.value() == 100 and values and values == sorted(values)
    names = [l.name() for l in QgsProject.instance().mapLayers().values()]
    result = [l for l in QgsProject.instance().mapLayers().values()
              if isinstance(l, QgsRasterLayer) and l.name().endswith("(rs-geo-edit)")]
    assert len(result) == 1, names
    assert result[0].crs() == layer.crs() and result[0].isValid()
    order = [n.layer() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(result[0]) == order.index(layer) - 1       # directly above its source
    assert "done" in plugin.dock.history.item(0).text()
    QgsProject.instance().removeAllMapLayers()


def test_cancel_mid_run_leaves_no_output(plugin, host, backend, tmp_path):
    from qgis.core import QgsProject

    _ready_to_run(plugin, host, backend, tmp_path)
    task = plugin.dock.run(LONG)
    assert wait_for(lambda: task.job.get("progress", 0) > 0.03, 120)
    output = Path(task.job["request"]["output"])
    plugin.dock.cancel()
    assert wait_for(lambda: plugin.dock.task is None, 60)
    assert plugin.dock.stage.text() == "cancelled"
    assert wait_for(lambda: task.job.get("state") == "cancelled", 30)
    assert not output.exists() and not list(output.parent.glob(f".{output.stem}*"))
    QgsProject.instance().removeAllMapLayers()


def test_backend_down_reports_without_freezing(plugin, host, tmp_path):
    from conftest import free_port
    from qgis.core import QgsProject

    dock = plugin.dock
    dock.url.setText(f"http://127.0.0.1:{free_port()}")
    dock.token.setText("whatever")
    assert dock.connect_backend() == {} and "not reachable" in dock.health.text()
    layer = _raster_layer(tmp_path)
    dock.roi_layer = None
    _draw(plugin, host, layer, [(250, 200), (450, 200), (450, 400), (250, 400)])
    t0 = time.time()
    dock.run(TINY)
    assert time.time() - t0 < 2                                   # the main thread is free at once
    assert wait_for(lambda: dock.task is None, 30)
    assert dock.stage.text().startswith("failed") and "not reachable" in dock.stage.text()
    QgsProject.instance().removeAllMapLayers()


def _set_backend_settings(backend):
    from qgis.core import QgsSettings

    settings = QgsSettings()
    settings.setValue("rs_geo_edit/url", backend["url"])
    settings.setValue("rs_geo_edit/token", backend["token"])
    settings.setValue("rs_geo_edit/job_options", json.dumps(TINY))


def _roi_file(tmp_path, raster_path):
    """A GeoPackage of one ROI polygon over the raster (in its CRS), written with OGR."""
    from osgeo import ogr, osr

    path = tmp_path / "rois.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    lyr = ds.CreateLayer("rois", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("prompt", ogr.OFTString))
    feature = ogr.Feature(lyr.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(
        "POLYGON ((500300 5099700, 500600 5099700, 500600 5099400, 500300 5099400, 500300 5099700))"))
    lyr.CreateFeature(feature)
    ds = None
    return path


def test_processing_run_inside_qgis(plugin, backend, tmp_path):
    import processing

    _set_backend_settings(backend)
    raster = write_raster(tmp_path / "p.tif")
    out = tmp_path / "p_out.tif"
    result = processing.run("rs_geo_edit:edit", {"INPUT": str(raster), "ROIS": str(_roi_file(tmp_path, raster)),
                                                 "PROMPT": "", "MODE": 1, "PRESET": 0, "SEED": 2,
                                                 "OUTPUT": str(out)})
    assert Path(result["OUTPUT"]) == out and out.exists()


def test_qgis_process_command_line(plugin_dir, backend, tmp_path):
    home = tmp_path / "home"
    ini = home / ".local/share/QGIS/QGIS3/profiles/default/QGIS/QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[rs_geo_edit]\nurl={}\ntoken={}\njob_options=\"{}\"\n".format(
        backend["url"], backend["token"], json.dumps(TINY).replace('"', '\\"')))
    env = {**os.environ, "HOME": str(home), "QGIS_PLUGINPATH": str(plugin_dir), "QT_QPA_PLATFORM": "offscreen"}
    exe = "/usr/bin/qgis_process.bin"
    enable = subprocess.run([exe, "plugins", "enable", "rs_geo_edit_qgis"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    raster = write_raster(tmp_path / "q.tif")
    out = tmp_path / "q_out.tif"
    proc = subprocess.run([exe, "--json", "run", "rs_geo_edit:edit", "--", f"INPUT={raster}",
                           f"ROIS={_roi_file(tmp_path, raster)}", "MODE=1", "PRESET=0", "SEED=1", f"OUTPUT={out}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    payload = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert Path(payload["results"]["OUTPUT"]) == out and out.exists()

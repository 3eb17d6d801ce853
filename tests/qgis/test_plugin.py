"""The QGIS plugin in real QGIS 3.22, headless: loading, drawing, jobs, cancel, Processing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, api, wait_for, write_raster

TINY = {"steps": 30, "width": 8, "crop": 16, "batch": 1, "threads": 1}
LONG = {"steps": 20000, "width": 8, "crop": 16, "batch": 1, "threads": 1}


def test_plugin_loads_from_zip_without_torch(plugin, host, plugin_dir):
    from qgis.core import QgsApplication

    assert plugin.dock is not None and plugin.dock in host.docks
    assert QgsApplication.processingRegistry().algorithmById("rs_geo_edit:edit") is not None
    assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
    assert "rs_geo_edit" not in sys.modules            # the backend package is never imported
    assert plugin.dock.widget().findChildren(type(plugin.dock.run_button))  # the form is built
    assert not plugin.action.icon().isNull()


def test_zip_has_icon_license_and_changelog(plugin_dir):
    import configparser

    folder = plugin_dir / "rs_geo_edit_qgis"
    metadata = configparser.ConfigParser()
    metadata.read(folder / "metadata.txt")
    general = metadata["general"]
    assert (folder / general["icon"]).is_file()
    assert general["license"] == "MIT" and "MIT License" in (folder / "LICENSE").read_text()
    version = general["version"]
    assert general["changelog"].startswith(version) and f"## {version}" in (folder / "CHANGELOG.md").read_text()
    from qgis.PyQt.QtGui import QIcon

    assert not QIcon(str(folder / general["icon"])).pixmap(32, 32).isNull()


def _raster_layer(tmp_path, epsg=32633, name="scene"):
    from qgis.core import QgsProject, QgsRasterLayer

    path = write_raster(tmp_path / f"{name}_{epsg}.tif", epsg)
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _style(layer):
    """An analyst's own rendering: bands 3-2-1, stretched 20..180 (QGIS would pick 1-2-3 and a
    statistics-based stretch for a new layer)."""
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 3, 2, 1)
    for band, set_enhancement in ((3, renderer.setRedContrastEnhancement), (2, renderer.setGreenContrastEnhancement),
                                  (1, renderer.setBlueContrastEnhancement)):
        enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        enhancement.setMinimumValue(20)
        enhancement.setMaximumValue(180)
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        set_enhancement(enhancement)
    layer.setRenderer(renderer)


def _assert_styled_like_source(result, source):
    renderer = result.renderer()
    assert renderer is not source.renderer() and renderer.type() == "multibandcolor"
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (3, 2, 1)
    for enhancement in (renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
                        renderer.blueContrastEnhancement()):
        assert (enhancement.minimumValue(), enhancement.maximumValue()) == (20, 180)
    from qgis.core import QgsProject

    order = [n.layer() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    assert order.index(result) == order.index(source) - 1       # directly above its source


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
    dock, controller = plugin.dock, plugin.controller
    dock.raster.setLayer(layer)
    dock.prompt.setText(prompt)
    dock.draw.click()
    assert canvas.mapTool() is controller.tool
    transform = canvas.getCoordinateTransform()
    points = [transform.toMapCoordinates(x, y) for x, y in pixels]
    for x, y in pixels:
        _click(controller.tool, canvas, x, y, Qt.LeftButton)
    _click(controller.tool, canvas, *pixels[-1], Qt.RightButton)
    return points


@pytest.mark.parametrize("project_epsg", [32633, 3857])
def test_drawn_polygon_has_the_clicked_map_coordinates(plugin, host, tmp_path, project_epsg):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject

    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem(f"EPSG:{project_epsg}"))
    host.canvas.setDestinationCrs(QgsCoordinateReferenceSystem(f"EPSG:{project_epsg}"))
    layer = _raster_layer(tmp_path)
    plugin.controller.roi_layer = None
    pixels = [(250, 200), (450, 200), (450, 400), (250, 400)]
    points = _draw(plugin, host, layer, pixels)
    rois = plugin.controller.roi_layer
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


def test_roi_exporter_drops_empty_geometries_and_blank_prompts(plugin):
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    from rs_geo_edit_qgis.rois import rois_geojson

    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&field=prompt:string(255)", "rois", "memory")
    square = "POLYGON ((500300 5099700, 500600 5099700, 500600 5099400, 500300 5099400, 500300 5099700))"
    features = []
    for wkt, prompt in ((square, "   "), (None, "an empty one"), (square, "a road"), (square, None)):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(wkt) if wkt else QgsGeometry())
        feature["prompt"] = prompt
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    sent = rois_geojson(layer, default_prompt="a lake")["features"]
    assert [f["properties"]["prompt"] for f in sent] == ["a lake", "a road", "a lake"]
    empty = QgsVectorLayer("Polygon?crs=EPSG:32633&field=prompt:string(255)", "none", "memory")
    with pytest.raises(ValueError, match="no polygon"):
        rois_geojson(empty)


def test_drawn_roi_layer_is_outlined_not_filled(plugin):
    """Rendered for real: the ROI's inside stays transparent, so the edit under it stays visible."""
    from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsMapRendererSequentialJob,
                           QgsMapSettings, QgsRectangle)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    from rs_geo_edit_qgis.layers import roi_layer

    layer = roi_layer(QgsCoordinateReferenceSystem("EPSG:32633"))
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(0, 0, 100, 100)))
    layer.dataProvider().addFeatures([feature])
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(QgsRectangle(-10, -10, 110, 110))
    settings.setOutputSize(QSize(120, 120))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    assert image.pixelColor(60, 60).alpha() == 0
    edge = [image.pixelColor(x, 60) for x in range(0, 30)]
    assert any(c.alpha() > 200 and c.red() > 200 and c.green() < 100 for c in edge)


def _connect(plugin, backend):
    from conftest import BACKEND

    dock, controller = plugin.dock, plugin.controller
    dock.where.setCurrentIndex(0)
    dock.autostart.setChecked(False)
    dock.url.setText(backend["url"])
    dock.exe.setText(str(BACKEND))          # the local backend's token is read from it
    assert controller.connect() is not None
    assert wait_for(lambda: controller.connect_task is None, 30)
    assert controller.health["status"] == "ok" and "rs-geo-edit" in dock.health.text(), dock.health.text()


def _ready_to_run(plugin, host, backend, tmp_path):
    """Connected to the backend, a raster layer, one drawn ROI over it, mode regenerate."""
    from qgis.core import QgsProject

    _connect(plugin, backend)
    layer = _raster_layer(tmp_path)
    QgsProject.instance().setCrs(layer.crs())   # as QGIS does for the first layer of a project
    host.canvas.setDestinationCrs(layer.crs())
    plugin.controller.roi_layer = None
    _draw(plugin, host, layer, [(250, 200), (450, 200), (450, 400), (250, 400)])
    plugin.dock.mode.setCurrentText("regenerate")
    return layer


def test_connect_starts_the_local_backend_without_blocking_qgis(plugin, tmp_path, monkeypatch):
    """The plugin starts a real (slow to start) service; meanwhile QGIS's event loop keeps turning."""
    from conftest import BACKEND, free_port
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    for key, folder in (("RS_GEO_EDIT_DATA_DIR", "data"), ("RS_GEO_EDIT_CONFIG_DIR", "config"),
                        ("RS_GEO_EDIT_CACHE", "cache")):
        monkeypatch.setenv(key, str(tmp_path / folder))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dock, controller = plugin.dock, plugin.controller
    dock.url.setText(f"http://127.0.0.1:{free_port()}")
    dock.exe.setText(str(BACKEND))
    dock.autostart.setChecked(True)
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    t0 = time.monotonic()
    task = controller.connect()
    assert task is not None and time.monotonic() - t0 < 0.5
    loop = QEventLoop()
    task.taskCompleted.connect(loop.quit)
    task.taskTerminated.connect(loop.quit)
    QTimer.singleShot(150_000, loop.quit)
    loop.exec_()
    elapsed = time.monotonic() - t0
    timer.stop()
    try:
        assert wait_for(lambda: controller.connect_task is None, 5)
        assert controller.health.get("status") == "ok", dock.health.text()
        assert controller.local.process.poll() is None             # started, and owned, by the plugin
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        print(f"backend start {elapsed:.1f} s, {len(ticks)} timer ticks, longest gap {max(gaps) * 1000:.0f} ms")
        assert elapsed > 1.0 and len(ticks) > elapsed / 0.02 / 3 and max(gaps) < 0.25
    finally:
        process = controller.local.process if controller.local else None
        controller.stop_backend()
        dock.autostart.setChecked(False)
    assert process is not None and process.poll() is not None       # and stopped again


def test_run_right_after_connect_waits_for_the_starting_backend(plugin, host, tmp_path, monkeypatch):
    """Connect on a stopped local backend, then Run at once: the edit waits for the backend that is
    starting and ends with its result, not with 'not reachable'."""
    from conftest import BACKEND, free_port
    from qgis.core import QgsProject, QgsRasterLayer

    for key, folder in (("RS_GEO_EDIT_DATA_DIR", "data"), ("RS_GEO_EDIT_CONFIG_DIR", "config"),
                        ("RS_GEO_EDIT_CACHE", "cache")):
        monkeypatch.setenv(key, str(tmp_path / folder))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dock, controller = plugin.dock, plugin.controller
    layer = _raster_layer(tmp_path)
    QgsProject.instance().setCrs(layer.crs())
    host.canvas.setDestinationCrs(layer.crs())
    controller.roi_layer = None
    _draw(plugin, host, layer, [(250, 200), (450, 200), (450, 400), (250, 400)])
    dock.mode.setCurrentText("regenerate")
    dock.where.setCurrentIndex(0)
    dock.url.setText(f"http://127.0.0.1:{free_port()}")
    dock.exe.setText(str(BACKEND))
    dock.autostart.setChecked(True)
    try:
        connecting = controller.connect()
        task = controller.run(TINY)
        assert connecting is not None and task is not None and not connecting.connection.done
        assert dock.stage.text() == "waiting for the backend to start ..."
        assert not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
        assert wait_for(lambda: controller.task is None, 300), dock.stage.text()
        assert dock.stage.text() == "done", dock.stage.text()
        assert task.connection is connecting.connection and controller.local.process.poll() is None
        results = [l for l in QgsProject.instance().mapLayers().values()
                   if isinstance(l, QgsRasterLayer) and l.name().endswith("(rs-geo-edit)")]
        assert len(results) == 1 and Path(results[0].source()).is_file()
    finally:
        controller.stop_backend()
        dock.autostart.setChecked(False)
        QgsProject.instance().removeAllMapLayers()


def test_end_to_end_job_adds_the_result_layer(plugin, host, backend, tmp_path):
    from qgis.core import QgsProject, QgsRasterLayer

    layer = _ready_to_run(plugin, host, backend, tmp_path)
    _style(layer)
    values = []
    task = plugin.controller.run(TINY)
    assert task is not None
    task.progressChanged.connect(values.append)
    assert wait_for(lambda: plugin.controller.task is None, 240), plugin.dock.stage.text()
    assert plugin.dock.stage.text() == "done", plugin.dock.stage.text()
    assert plugin.dock.progress.value() == 100 and values and values == sorted(values)
    names = [l.name() for l in QgsProject.instance().mapLayers().values()]
    result = [l for l in QgsProject.instance().mapLayers().values()
              if isinstance(l, QgsRasterLayer) and l.name().endswith("(rs-geo-edit)")]
    assert len(result) == 1, names
    assert result[0].crs() == layer.crs() and result[0].isValid()
    _assert_styled_like_source(result[0], layer)
    assert "done" in plugin.dock.history.item(0).text() and not plugin.dock.load_button.isEnabled()
    QgsProject.instance().removeAllMapLayers()


def test_cancel_mid_run_leaves_no_output(plugin, host, backend, tmp_path):
    from qgis.core import QgsProject

    _ready_to_run(plugin, host, backend, tmp_path)
    task = plugin.controller.run(LONG)
    assert wait_for(lambda: task.job is not None and task.job.progress > 0.03, 120)
    output = Path(task.job.request["output"])
    plugin.dock.cancel_button.click()
    assert wait_for(lambda: plugin.controller.task is None, 60)
    assert plugin.dock.stage.text() == "cancelled"
    assert task.job.state == "cancelled"
    assert not output.exists() and not list(output.parent.glob(f".{output.stem}*"))
    QgsProject.instance().removeAllMapLayers()


def test_backend_down_reports_without_freezing(plugin, host, backend, tmp_path):
    from conftest import BACKEND, free_port
    from qgis.core import QgsProject

    dock, controller = plugin.dock, plugin.controller
    dock.autostart.setChecked(False)
    dock.url.setText(f"http://127.0.0.1:{free_port()}")
    dock.exe.setText(str(BACKEND))
    controller.connect()
    assert wait_for(lambda: controller.connect_task is None, 30)
    assert controller.health == {} and "not reachable" in dock.health.text()
    layer = _raster_layer(tmp_path)
    QgsProject.instance().setCrs(layer.crs())
    host.canvas.setDestinationCrs(layer.crs())
    controller.roi_layer = None
    _draw(plugin, host, layer, [(250, 200), (450, 200), (450, 400), (250, 400)])
    t0 = time.time()
    controller.run(TINY)
    assert time.time() - t0 < 2                                   # the main thread is free at once
    assert wait_for(lambda: controller.task is None, 30)
    assert dock.stage.text().startswith("failed") and "not reachable" in dock.stage.text()
    QgsProject.instance().removeAllMapLayers()


def test_fresh_plugin_lists_and_loads_jobs_from_before_qgis_restarted(plugin, host, backend, tmp_path):
    """Jobs submitted by an earlier QGIS session, one finished and one still running; a new plugin
    instance (QGIS restarted: only the settings survive) lists both on Connect, loads the finished
    one's result, and follows the running one until its result loads too."""
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import Qt

    import rs_geo_edit_qgis

    raster = write_raster(tmp_path / "before.tif")
    rois = str(_roi_file(tmp_path))

    def submit(prompt, output, options):
        return api(backend, "POST", "/jobs", {"scene": str(raster), "aoi": rois, "mode": "regenerate", "prompt": prompt,
                                              "seed": 3, "output": str(output), "options": options})

    finished = submit("a meadow", tmp_path / "meadow.tif", TINY)
    deadline = time.time() + 240
    while api(backend, "GET", f"/jobs/{finished['id']}")["state"] not in ("done", "failed") and time.time() < deadline:
        time.sleep(0.5)
    assert api(backend, "GET", f"/jobs/{finished['id']}")["state"] == "done"
    running = submit("a pond", tmp_path / "pond.tif", {**TINY, "steps": 200})
    source = QgsRasterLayer(str(raster), "before")
    QgsProject.instance().addMapLayer(source)
    _style(source)
    _set_backend_settings(backend)
    fresh = rs_geo_edit_qgis.classFactory(host)
    fresh.initGui()

    def loaded(path):
        return [l for l in QgsProject.instance().mapLayers().values()
                if isinstance(l, QgsRasterLayer) and Path(l.source()) == path]

    try:
        dock = fresh.dock
        assert dock.url.text() == backend["url"] and dock.history.count() == 0
        fresh.controller.connect()
        assert wait_for(lambda: fresh.controller.connect_task is None, 30), dock.health.text()
        listed = {dock.history.item(i).data(Qt.UserRole): dock.history.item(i).text() for i in range(dock.history.count())}
        assert finished["id"] in listed, (listed, dock.health.text())
        assert "result not loaded" in listed[finished["id"]]
        assert "running" in listed[running["id"]] or "queued" in listed[running["id"]]
        dock.select_job(finished["id"])
        assert dock.load_button.isEnabled()
        dock.load_button.click()
        meadow = loaded(tmp_path / "meadow.tif")
        assert len(meadow) == 1 and meadow[0].name() == "a meadow (rs-geo-edit)"
        _assert_styled_like_source(meadow[0], source)
        dock.select_job(finished["id"])
        assert not dock.load_button.isEnabled()                 # loaded once, not twice
        dock.select_job(running["id"])
        dock.load_button.click()
        assert fresh.controller.task is not None and fresh.controller.task.job_id == running["id"]
        assert wait_for(lambda: fresh.controller.task is None, 240), dock.stage.text()
        assert dock.stage.text() == "done" and len(loaded(tmp_path / "pond.tif")) == 1
    finally:
        fresh.unload()
    assert QgsProject.instance().mapLayers()                    # unloading leaves the analyst's layers
    QgsProject.instance().removeAllMapLayers()


def test_help_button_opens_the_bundled_help(plugin, plugin_dir):
    from qgis.PyQt.QtCore import QObject, QUrl, pyqtSlot
    from qgis.PyQt.QtGui import QDesktopServices

    class Browser(QObject):
        def __init__(self):
            super().__init__()
            self.urls = []

        @pyqtSlot(QUrl)
        def open(self, url):
            self.urls.append(url)

    browser = Browser()
    QDesktopServices.setUrlHandler("file", browser, "open")
    try:
        plugin.dock.help_button.click()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert len(browser.urls) == 1
    page = Path(browser.urls[0].toLocalFile())
    assert page.parent == plugin_dir / "rs_geo_edit_qgis" and page.is_file()
    assert "Install backend" in page.read_text() and "Load result" in page.read_text()


def _set_backend_settings(backend):
    from conftest import BACKEND
    from qgis.core import QgsSettings

    settings = QgsSettings()
    settings.setValue("rs_geo_edit/url", backend["url"])
    settings.setValue("rs_geo_edit/executable", str(BACKEND))


def _roi_file(tmp_path):
    """A GeoPackage over the raster (in its CRS), written with OGR: one ROI with a blank prompt, and
    a feature without geometry that must not be sent."""
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
    feature.SetField("prompt", "  ")
    lyr.CreateFeature(feature)
    lyr.CreateFeature(ogr.Feature(lyr.GetLayerDefn()))
    ds = None
    return path


def test_processing_parameters_follow_the_options_schema(plugin, plugin_dir):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition, QgsProcessingParameterNumber

    from rs_geo_edit_qgis.entities import OptionSpec, load_option_specs
    from rs_geo_edit_qgis.provider import FIXED, option_parameter

    algorithm = QgsApplication.processingRegistry().algorithmById("rs_geo_edit:edit")
    specs = [s for s in load_option_specs(plugin_dir / "rs_geo_edit_qgis" / "options_schema.json")
             if s.name not in FIXED]
    assert {"blend", "feather", "steps", "width"} <= {s.name for s in specs}
    for spec in specs:
        param = algorithm.parameterDefinition(spec.name.upper())
        assert param is not None, spec.name
        assert bool(param.flags() & QgsProcessingParameterDefinition.FlagAdvanced) == (spec.group != "basic")
        assert param.help() == spec.help
        optional = bool(param.flags() & QgsProcessingParameterDefinition.FlagOptional)
        assert optional or spec.default is not None                 # None: the preset decides
        if spec.choices:
            assert param.type() == "enum" and param.options() == list(spec.choices)
        elif spec.type in ("int", "float"):
            assert param.type() == "number"
            assert param.dataType() == (QgsProcessingParameterNumber.Integer if spec.type == "int"
                                        else QgsProcessingParameterNumber.Double)
            if spec.minimum is not None:
                assert param.minimum() == spec.minimum and not param.checkValueIsAcceptable(spec.minimum - 1)
            if spec.maximum is not None:
                assert param.maximum() == spec.maximum and not param.checkValueIsAcceptable(spec.maximum + 1)
        else:
            assert param.type() == {"bool": "boolean", "str": "string"}[spec.type]
    # an option the backend gains becomes a parameter without code
    knob = option_parameter(OptionSpec.from_dict({"name": "grain_size", "type": "float", "default": 0.5, "minimum": 0,
                                                  "maximum": 2, "choices": None, "help": "e.g. 1.5", "group": "basic"}))
    assert (knob.name(), knob.minimum(), knob.maximum(), knob.defaultValue()) == ("GRAIN_SIZE", 0, 2, 0.5)
    assert not knob.checkValueIsAcceptable(3) and knob.checkValueIsAcceptable(1.5)


def test_processing_options_reach_the_backend(plugin, backend, tmp_path):
    """processing.run with a few options: the job record on the service holds exactly those values,
    and every other option is left at its default."""
    import processing

    from rs_geo_edit_qgis.entities import load_option_specs
    from rs_geo_edit_qgis.provider import FIXED

    _set_backend_settings(backend)
    raster = write_raster(tmp_path / "p.tif")
    out = tmp_path / "p_out.tif"
    given = {**TINY, "blend": "laplacian", "feather": 5, "color_match": True, "momentum": 0.5}
    specs = {s.name: s for s in load_option_specs() if s.name not in FIXED}
    params = {name.upper(): specs[name].choices.index(value) if specs[name].choices else value
              for name, value in given.items()}
    result = processing.run("rs_geo_edit:edit", {"INPUT": str(raster), "ROIS": str(_roi_file(tmp_path)),
                                                 "PROMPT": " a meadow ", "MODE": 1, "PRESET": 0, "SEED": 2,
                                                 "OUTPUT": str(out), **params})
    assert Path(result["OUTPUT"]) == out and out.exists()
    job = api(backend, "GET", f"/jobs/{result['JOB_ID']}")
    options = job["request"]["options"]
    assert {name: options[name] for name in given} == given
    assert {name: options[name] for name in specs if name not in given} == \
        {name: spec.default for name, spec in specs.items() if name not in given}
    # the one ROI exporter: the feature without geometry is dropped, the blank prompt falls back
    features = job["request"]["aoi"]["features"]
    assert len(features) == 1 and features[0]["properties"]["prompt"] == "a meadow"


def test_qgis_process_command_line(plugin_dir, backend, tmp_path):
    from conftest import BACKEND

    home = tmp_path / "home"
    ini = home / ".local/share/QGIS/QGIS3/profiles/default/QGIS/QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[rs_geo_edit]\nurl={}\nexecutable={}\n".format(backend["url"], BACKEND))
    env = {**os.environ, "HOME": str(home), "QGIS_PLUGINPATH": str(plugin_dir), "QT_QPA_PLATFORM": "offscreen"}
    exe = "/usr/bin/qgis_process.bin"
    enable = subprocess.run([exe, "plugins", "enable", "rs_geo_edit_qgis"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    raster = write_raster(tmp_path / "q.tif")
    out = tmp_path / "q_out.tif"
    options = [f"{name.upper()}={value}" for name, value in TINY.items()]
    proc = subprocess.run([exe, "--json", "run", "rs_geo_edit:edit", "--", f"INPUT={raster}",
                           f"ROIS={_roi_file(tmp_path)}", "MODE=1", "PRESET=0", "SEED=1", *options, f"OUTPUT={out}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    payload = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert Path(payload["results"]["OUTPUT"]) == out and out.exists()
    assert api(backend, "GET", f"/jobs/{payload['results']['JOB_ID']}")["request"]["options"]["steps"] == 30


def test_installer_leaves_a_folder_it_did_not_create_alone(plugin, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("the analyst's")
    dock, controller = plugin.dock, plugin.controller
    dock.install_folder.setFilePath(str(folder))
    dock.install_python.setFilePath(sys.executable)
    dock.install_button.click()
    assert wait_for(lambda: controller.install_task is None, 60)
    log = dock.install_log.toPlainText()
    assert "is not empty and not a virtual environment" in log, log
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "the analyst's"


@pytest.mark.slow
def test_install_backend_from_the_source_folder(plugin, tmp_path, monkeypatch):
    """Install backend, as an analyst would: a new virtual environment, pip from the repository's
    backend/ folder, then the service started from it and answering /health. The heavy dependencies
    (torch, rasterio, ...) are taken from the project's environment (PYTHONPATH, --no-deps), so only
    the backend itself is built and installed."""
    import re
    import urllib.request

    from conftest import free_port

    base = ROOT / ".venv" / "bin" / "python"
    site = subprocess.run([str(base), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setenv("PYTHONPATH", site)
    for key, folder in (("RS_GEO_EDIT_DATA_DIR", "data"), ("RS_GEO_EDIT_CONFIG_DIR", "config"),
                        ("RS_GEO_EDIT_CACHE", "cache")):
        monkeypatch.setenv(key, str(tmp_path / folder))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    version = re.search(r'^version = "(.+)"', (ROOT / "backend" / "pyproject.toml").read_text(), re.M).group(1)
    venv = tmp_path / "venv"
    dock, controller = plugin.dock, plugin.controller
    dock.url.setText(f"http://127.0.0.1:{free_port()}")
    dock.autostart.setChecked(False)
    dock.install_folder.setFilePath(str(venv))
    dock.install_python.setFilePath(str(base))
    dock.install_package.setText(str(ROOT / "backend"))
    dock.install_pip_args.setText("--no-deps --no-build-isolation")
    t0 = time.monotonic()
    dock.install_button.click()
    assert controller.install_task is not None
    assert wait_for(lambda: controller.install_task is None, 300)
    installed = time.monotonic() - t0
    log = dock.install_log.toPlainText()
    try:
        assert f"rs-geo-edit {version}" in log, log[-3000:]
        exe = venv / "bin" / "rs-geo-edit"
        assert dock.exe.text() == str(exe) and dock.autostart.isChecked()
        assert wait_for(lambda: controller.connect_task is None, 150), dock.health.text()
        started = time.monotonic() - t0
        print(f"installed in {installed:.1f} s, serving after {started:.1f} s")
        assert controller.health.get("status") == "ok", dock.health.text()
        assert controller.local.process.args[0] == str(exe)
        with urllib.request.urlopen(controller.local.url + "/health", timeout=10) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok" and health["version"] == version
        where = subprocess.run([str(venv / "bin" / "python"), "-c", "import rs_geo_edit; print(rs_geo_edit.__file__)"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert where.startswith(str(venv))                          # the environment's own copy
        assert not (ROOT / "backend" / "build").exists()              # built from a copy of the folder
    finally:
        controller.stop_backend()
        dock.autostart.setChecked(False)


def _other_value(spec, tmp_path):
    """A valid value of ``spec`` other than its default (None when none can be told from the schema)."""
    # "0 (off) or at least N" cannot be told from a minimum alone
    known = {"device": "cpu", "cache_dir": str(tmp_path / "cache"), "max_side": 512, "tile": 256}
    if spec.name in known:
        return known[spec.name]
    if spec.choices:
        return next(c for c in spec.choices if c != spec.default)
    if spec.type == "bool":
        return not spec.default
    if spec.type == "int":
        low = spec.minimum if spec.minimum is not None else 0
        return low if low != spec.default else low + 2
    if spec.type == "float":
        low = spec.minimum if spec.minimum is not None else 0.0
        high = spec.maximum if spec.maximum is not None else low + 1.0
        return (low + high) / 2
    return None


def test_every_schema_option_reaches_the_service_from_processing(plugin, backend, tmp_path):
    """Each option of the schema, set to a value other than its default as a Processing parameter,
    comes out of the algorithm under its own name and is what the service stores for the job."""
    from qgis.core import QgsApplication, QgsProcessingContext

    from rs_geo_edit_qgis.entities import load_option_specs
    from rs_geo_edit_qgis.provider import FIXED

    algorithm = QgsApplication.processingRegistry().algorithmById("rs_geo_edit:edit")
    specs = [s for s in load_option_specs() if s.name not in FIXED]
    given = {s.name: v for s in specs if (v := _other_value(s, tmp_path)) is not None}
    # free-text options get a value only where the test knows a valid one; every typed one is covered
    assert {s.name for s in specs if s.type != "str" or s.choices} <= set(given)
    parameters = {name.upper(): spec.choices.index(given[name]) if spec.choices else given[name]
                  for name, spec in ((s.name, s) for s in specs if s.name in given)}
    options = algorithm.option_values(parameters, QgsProcessingContext())
    assert options == given
    raster = write_raster(tmp_path / "every.tif")
    job = api(backend, "POST", "/jobs", {"scene": str(raster), "aoi": str(_roi_file(tmp_path)), "mode": "regenerate",
                                         "output": str(tmp_path / "every_out.tif"), "options": options})
    try:
        stored = api(backend, "GET", f"/jobs/{job['id']}")["request"]["options"]
        assert {name: stored[name] for name in given} == given
    finally:
        api(backend, "DELETE", f"/jobs/{job['id']}")

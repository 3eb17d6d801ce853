"""The plugin against a remote server, in real QGIS 3.22: only the windows around the ROIs
travel, the output is written here and equals the server's own edit of the whole file, and a job
outlives a restart of QGIS."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import api, wait_for, write_raster
from test_plugin import TINY, _assert_styled_like_source, _connect, _style

SIZE = 640  # px: the scene is much larger than the window around the ROI


def _gdal_pixels(path) -> "np.ndarray":
    from osgeo import gdal

    ds = gdal.Open(str(path))
    return ds.ReadAsArray()


def _roi_layer(tmp_path, col0, row0, col1, row1, name="rois"):
    """A GeoPackage polygon layer (EPSG:32633, over ``write_raster``'s grid) with one ROI."""
    from osgeo import ogr, osr
    from qgis.core import QgsProject, QgsVectorLayer

    path = tmp_path / f"{name}.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    lyr = ds.CreateLayer(name, srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("prompt", ogr.OFTString))
    x0, x1, y0, y1 = 500000 + 10 * col0, 500000 + 10 * col1, 5100000 - 10 * row0, 5100000 - 10 * row1
    feature = ogr.Feature(lyr.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"))
    feature.SetField("prompt", "a lake")
    lyr.CreateFeature(feature)
    ds = None
    layer = QgsVectorLayer(str(path), name, "ogr")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _remote_ready(plugin_or_fresh, backend, tmp_path, name="scene"):
    """A large raster layer and an ROI layer in the dock, the backend set to remote."""
    from qgis.core import QgsProject, QgsRasterLayer

    raster = write_raster(tmp_path / f"{name}.tif", size=SIZE)
    layer = QgsRasterLayer(str(raster), name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    _style(layer)
    rois = _roi_layer(tmp_path, 300, 260, 340, 300, name=f"{name}_rois")
    dock = plugin_or_fresh.dock
    dock.raster.setLayer(layer)
    dock.roi_source.setCurrentIndex(1)
    dock.roi_layer_combo.setLayer(rois)
    dock.prompt.setText("")
    dock.mode.setCurrentText("regenerate")
    dock.seed.setValue(5)
    dock.where.setCurrentIndex(1)
    _store_token(plugin_or_fresh, backend)
    return raster, layer


def stored_token(authcfg: str) -> str:
    """The password (the token) an authentication configuration holds, decrypted by QGIS."""
    from qgis.core import QgsApplication, QgsAuthMethodConfig

    loaded, config = QgsApplication.authManager().loadAuthenticationConfig(authcfg, QgsAuthMethodConfig(), True)
    assert loaded and config.method() == "Basic"
    return config.config("password")


def _store_token(plugin, backend) -> str:
    """The server's token pasted into the dock and stored: an authentication configuration."""
    plugin.dock.token.setText(backend["token"])
    plugin.dock.store_token_button.click()
    authcfg = plugin.dock.credentials.configId()
    assert authcfg and plugin.dock.token.text() == ""
    return authcfg


@pytest.fixture
def remote_setting(plugin):
    yield
    plugin.dock.where.setCurrentIndex(0)   # the other tests use the local backend
    plugin.controller.backend_settings()


def test_remote_edit_uploads_only_windows_and_writes_the_servers_edit(plugin, host, backend, tmp_path,
                                                                     remote_setting):
    from qgis.core import QgsProject, QgsRasterLayer

    from rs_geo_edit_qgis.remote import RemoteEditTask

    _connect(plugin, backend)
    raster, source = _remote_ready(plugin, backend, tmp_path)
    assert not plugin.dock.autostart.isEnabled()          # nothing to start here for a remote server
    values = []
    task = plugin.controller.run(TINY)
    assert isinstance(task, RemoteEditTask)
    task.progressChanged.connect(values.append)
    assert wait_for(lambda: plugin.controller.task is None, 240), plugin.dock.stage.text()
    assert plugin.dock.stage.text() == "done", plugin.dock.stage.text()
    assert values and values == sorted(values) and plugin.dock.progress.value() == 100
    output = Path(task.job.output)
    assert output.parent == tmp_path and output.is_file()
    assert not list(tmp_path.glob(".*partial"))

    job = api(backend, "GET", f"/jobs/{task.job_id}")
    assert job["state"] == "done" and job["request"]["scene"] == "scene.tif"     # a name, never a path
    (window,) = job["request"]["windows"]
    transfer = job["transfer"]
    assert 0 < transfer["uploaded_bytes"] * 4 < raster.stat().st_size             # the window, not the scene
    assert transfer["downloaded_bytes"] > 0

    # The same edit by the server on the whole file (it can read this folder): the same pixels.
    local = api(backend, "POST", "/jobs", {"scene": str(raster), "aoi": task.request["aoi"], "mode": "regenerate",
                                          "seed": 5, "output": str(tmp_path / "local.tif"), "options": TINY})
    deadline = time.time() + 240
    while api(backend, "GET", f"/jobs/{local['id']}")["state"] not in ("done", "failed") and time.time() < deadline:
        time.sleep(0.5)
    assert api(backend, "GET", f"/jobs/{local['id']}")["state"] == "done"
    before, remote, whole = _gdal_pixels(raster), _gdal_pixels(output), _gdal_pixels(tmp_path / "local.tif")
    assert (remote == whole).all()
    changed = (remote != before).any(axis=0)
    rows, cols = changed.nonzero()
    assert changed.any() and rows.min() >= window["row_off"] and cols.min() >= window["col_off"]
    assert rows.max() < 300 + 20 and cols.max() < 340 + 20                       # the ROI and its blend band

    record = json.loads(output.with_suffix(".json").read_text())
    assert record["backend"]["job"] == task.job_id and record["windows"][0]["roi_pixels"] == 40 * 40
    results = [l for l in QgsProject.instance().mapLayers().values()
               if isinstance(l, QgsRasterLayer) and Path(l.source()) == output]
    assert len(results) == 1
    _assert_styled_like_source(results[0], source)
    QgsProject.instance().removeAllMapLayers()


def test_remote_job_outlives_qgis_and_its_result_is_written_after_a_restart(plugin, host, backend, tmp_path,
                                                                           remote_setting):
    """QGIS closes while the server trains: the job goes on there; the next QGIS lists it on
    Connect and, on Load, follows it to the end and writes its result here."""
    from qgis.core import QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import Qt

    import rs_geo_edit_qgis

    first = rs_geo_edit_qgis.classFactory(host)
    first.initGui()
    try:
        _connect(first, backend)
        _remote_ready(first, backend, tmp_path, name="restart")
        task = first.controller.run({**TINY, "steps": 300})
        assert wait_for(lambda: task.job_id is not None, 120), first.dock.stage.text()
        output = Path(task.files.output)
    finally:
        first.unload()                                           # QGIS closes
    assert wait_for(lambda: not task.isActive(), 30)
    assert api(backend, "GET", f"/jobs/{task.job_id}")["state"] in ("queued", "running", "done")
    assert not output.exists()

    fresh = rs_geo_edit_qgis.classFactory(host)
    fresh.initGui()
    try:
        dock = fresh.dock
        assert dock.where.currentIndex() == 1                    # the setting survived
        fresh.controller.connect()
        assert wait_for(lambda: fresh.controller.connect_task is None, 30), dock.health.text()
        listed = [dock.history.item(i).data(Qt.UserRole) for i in range(dock.history.count())]
        assert task.job_id in listed
        dock.select_job(task.job_id)
        assert dock.load_button.isEnabled()
        dock.load_button.click()
        assert fresh.controller.task is not None and fresh.controller.task.job_id == task.job_id
        assert wait_for(lambda: fresh.controller.task is None, 300), dock.stage.text()
        assert dock.stage.text() == "done", dock.stage.text()
        assert output.is_file()
        assert [l for l in QgsProject.instance().mapLayers().values()
                if isinstance(l, QgsRasterLayer) and Path(l.source()) == output]
        dock.select_job(task.job_id)
        assert not dock.load_button.isEnabled()                  # written and loaded once
    finally:
        fresh.unload()
    QgsProject.instance().removeAllMapLayers()


def test_copy_mode_is_refused_before_anything_travels(plugin, host, backend, tmp_path, remote_setting):
    """Copy mode takes content from outside the windows: refused at once, nothing sent or written."""
    from qgis.core import QgsProject

    _connect(plugin, backend)
    _remote_ready(plugin, backend, tmp_path, name="refused")
    plugin.dock.mode.setCurrentText("copy")
    jobs_before = len(api(backend, "GET", "/jobs"))
    assert plugin.controller.run(TINY) is None and plugin.controller.task is None
    assert "copy mode" in host.bar.currentItem().text()
    assert len(api(backend, "GET", "/jobs")) == jobs_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused.tif", "refused_rois.gpkg"]
    QgsProject.instance().removeAllMapLayers()


def test_processing_runs_on_the_remote_server_too(plugin, backend, tmp_path):
    """With the remote setting, the Processing algorithm uploads windows and writes OUTPUT here."""
    import processing
    from qgis.core import QgsSettings

    from test_plugin import _roi_file, _set_backend_settings

    from rs_geo_edit_qgis.credentials import store_token

    _set_backend_settings(backend)
    QgsSettings().setValue("rs_geo_edit/remote", "true")
    QgsSettings().setValue("rs_geo_edit/authcfg", store_token(backend["url"], backend["token"]))
    try:
        raster = write_raster(tmp_path / "p.tif")
        out = tmp_path / "p_out.tif"
        out.write_bytes(b"an earlier result that Processing asked to replace")
        result = processing.run("rs_geo_edit:edit", {"INPUT": str(raster), "ROIS": str(_roi_file(tmp_path)),
                                                     "PROMPT": "a meadow", "MODE": 1, "PRESET": 0, "SEED": 2,
                                                     "OUTPUT": str(out), **{k.upper(): v for k, v in TINY.items()}})
    finally:
        QgsSettings().setValue("rs_geo_edit/remote", "false")
    assert Path(result["OUTPUT"]) == out
    job = api(backend, "GET", f"/jobs/{result['JOB_ID']}")
    assert job["state"] == "done" and job["request"]["windows"] and job["request"]["scene"] == "p.tif"
    before, after = _gdal_pixels(raster), _gdal_pixels(out)
    assert before.shape == after.shape and (before != after).any()
    assert json.loads(out.with_suffix(".json").read_text())["backend"]["job"] == job["id"]


def test_remote_result_over_a_vrt_never_writes_into_its_sources(plugin, tmp_path):
    """A VRT scene: the output is a GeoTIFF of its own; the files the VRT reads stay as they were."""
    import hashlib

    import numpy as np
    from osgeo import gdal

    from rs_geo_edit_qgis.remote import write_output

    tile = write_raster(tmp_path / "tile.tif", size=64)
    digest = hashlib.sha256(tile.read_bytes()).hexdigest()
    vrt = tmp_path / "scene.vrt"
    gdal.BuildVRT(str(vrt), [str(tile)]).FlushCache()
    box = tmp_path / "box.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(box), 8, 6, 3, gdal.GDT_Byte)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((6, 8), 7 + b, np.uint8))
    ds = None
    out = tmp_path / "out.tif"
    write_output(str(vrt), out, [(10, 20, box)])
    assert hashlib.sha256(tile.read_bytes()).hexdigest() == digest
    result = gdal.Open(str(out))
    assert result.GetDriver().ShortName == "GTiff" and result.GetProjection() == gdal.Open(str(tile)).GetProjection()
    pixels, source = result.ReadAsArray(), gdal.Open(str(tile)).ReadAsArray()
    assert (pixels[:, 20:26, 10:18] == np.array([7, 8, 9])[:, None, None]).all()
    outside = np.ones(pixels.shape[1:], bool)
    outside[20:26, 10:18] = False
    assert (pixels[:, outside] == source[:, outside]).all()


def test_a_result_that_does_not_fit_the_scene_leaves_no_file(plugin, tmp_path):
    """A downloaded box with the wrong number of bands: a one-line error, no output, no partial."""
    import numpy as np
    from osgeo import gdal

    from rs_geo_edit_qgis.remote import write_output

    scene = write_raster(tmp_path / "scene.tif", size=64)
    box = tmp_path / "box.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(box), 8, 8, 1, gdal.GDT_Byte)
    ds.GetRasterBand(1).WriteArray(np.zeros((8, 8), np.uint8))
    ds = None
    with pytest.raises(ValueError, match="returned 1 bands for a scene with 3"):
        write_output(str(scene), tmp_path / "out.tif", [(0, 0, box)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.tif", "scene.tif"]



# ------------------------------------------------------------------ credentials in QGIS's auth database
def test_the_token_round_trips_through_the_authentication_database(plugin, backend, remote_setting):
    """Stored from the dock, the token is an encrypted authentication configuration: the settings
    hold only its id, and QGIS applies it to the plugin's requests (the server lets them in)."""
    from qgis.core import QgsApplication, QgsSettings

    _connect(plugin, backend)
    plugin.dock.where.setCurrentIndex(1)
    authcfg = _store_token(plugin, backend)
    assert stored_token(authcfg) == backend["token"]
    plugin.controller.connect()
    assert wait_for(lambda: plugin.controller.connect_task is None, 30)
    assert plugin.controller.health.get("status") == "ok", plugin.dock.health.text()
    settings = QgsSettings()
    assert settings.value("rs_geo_edit/authcfg") == authcfg and settings.value("rs_geo_edit/token") is None
    ini = Path(settings.fileName()).read_text()
    assert backend["token"] not in ini
    database = Path(QgsApplication.authManager().authenticationDatabasePath()).read_bytes()
    assert backend["token"].encode() not in database                   # encrypted with the master password

    # a configuration that does not hold the server's token: the refusal says so
    from rs_geo_edit_qgis.credentials import store_token

    wrong = store_token(backend["url"], "not-the-token", name="rs-geo-edit wrong")
    plugin.dock.credentials.setConfigId(wrong)
    plugin.controller.connect()
    assert wait_for(lambda: plugin.controller.connect_task is None, 30)
    assert f"configuration '{wrong}' does not hold this server's token" in plugin.dock.health.text()
    QgsApplication.authManager().removeAuthenticationConfig(wrong)     # removed behind the dock's back
    plugin.controller.connect()
    assert wait_for(lambda: plugin.controller.connect_task is None, 30)
    assert f"QGIS has no authentication configuration '{wrong}'" in plugin.dock.health.text(), \
        plugin.dock.health.text()


def test_a_plain_token_in_the_settings_moves_into_the_authentication_database(plugin, host, backend,
                                                                             remote_setting):
    """Settings written by an earlier version (the token in plain text): the next start of the
    plugin moves the token into an authentication configuration and removes it from the settings;
    the remote server then answers with it."""
    from qgis.core import QgsSettings

    import rs_geo_edit_qgis

    settings = QgsSettings()
    for key, value in {"url": backend["url"], "token": backend["token"], "remote": "true", "authcfg": ""}.items():
        settings.setValue(f"rs_geo_edit/{key}", value)
    fresh = rs_geo_edit_qgis.classFactory(host)
    fresh.initGui()
    try:
        assert QgsSettings().value("rs_geo_edit/token") is None
        authcfg = QgsSettings().value("rs_geo_edit/authcfg")
        assert authcfg and stored_token(authcfg) == backend["token"]
        assert fresh.dock.credentials.configId() == authcfg and fresh.dock.where.currentIndex() == 1
        assert "moved from the plugin's settings" in host.bar.currentItem().text()
        fresh.controller.connect()
        assert wait_for(lambda: fresh.controller.connect_task is None, 30)
        assert fresh.controller.health.get("status") == "ok", fresh.dock.health.text()
    finally:
        fresh.unload()
    again = rs_geo_edit_qgis.classFactory(host)       # once: nothing left to move
    again.initGui()
    try:
        assert QgsSettings().value("rs_geo_edit/authcfg") == authcfg
    finally:
        again.unload()

    # a local backend's token is not kept anywhere: the backend gives it at each connect
    from qgis.core import QgsApplication

    configs = set(QgsApplication.authManager().configIds())
    settings.setValue("rs_geo_edit/remote", "false")
    settings.setValue("rs_geo_edit/token", backend["token"])
    local = rs_geo_edit_qgis.classFactory(host)
    local.initGui()
    try:
        assert QgsSettings().value("rs_geo_edit/token") is None
        assert set(QgsApplication.authManager().configIds()) == configs
    finally:
        local.unload()


# ------------------------------------------------------------------ QGIS's network stack
def _forwarding_proxy(names: dict, user: str, password: str):
    """A real HTTP forward proxy on 127.0.0.1 that wants its users to log in (407), as a site's
    proxy does: it resolves the host names in ``names`` itself (the client cannot), forwards each
    request and records (method, absolute URL, Authorization) of every request it carried."""
    import base64
    import http.server
    import urllib.error
    import urllib.parse
    import urllib.request

    seen = []
    login = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):   # HTTP/1.0: a connection per request
        def reply(self, status, body, kind, extra=()):
            self.send_response(status)
            for key, value in (("Content-Type", kind or "application/json"), ("Content-Length", str(len(body))),
                               *extra):
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else None
            if self.headers.get("Proxy-Authorization") != login:
                return self.reply(407, b"log in", "text/plain", [("Proxy-Authenticate", 'Basic realm="site"')])
            url = urllib.parse.urlsplit(self.path)
            target = url._replace(netloc=f"{names.get(url.hostname, url.hostname)}:{url.port}").geturl()
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            request = urllib.request.Request(target, data=data, method=self.command)
            for key in ("Authorization", "Content-Type", "Upload-Offset"):
                if self.headers.get(key):
                    request.add_header(key, self.headers[key])
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with direct.open(request, timeout=30) as response:
                    status, body, kind = response.status, response.read(), response.headers.get("Content-Type")
            except urllib.error.HTTPError as exc:
                status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type")
            self.reply(status, body, kind)

        do_GET = do_POST = do_PATCH = do_DELETE = forward

    return _serve(Handler), seen


def _set_proxy(port=None, user="", password=""):
    """What QGIS's Options > Network page saves, then applies (no port: proxy off)."""
    from qgis.core import QgsNetworkAccessManager, QgsSettings

    settings = QgsSettings()
    if port is None:
        settings.remove("proxy")
    else:
        for key, value in {"proxyEnabled": True, "proxyType": "HttpProxy", "proxyHost": "127.0.0.1",
                           "proxyPort": str(port), "proxyUser": user, "proxyPassword": password}.items():
            settings.setValue(f"proxy/{key}", value)
    QgsNetworkAccessManager.instance().setupDefaultProxyAndCache()


def test_a_remote_edit_goes_through_the_proxy_qgis_is_set_to_use(plugin, host, backend, tmp_path, remote_setting):
    import base64

    from qgis.core import QgsProject

    port = backend["url"].rsplit(":", 1)[1]
    remote = f"http://gpu-server.test:{port}"   # a name that only the proxy resolves
    server, seen = _forwarding_proxy({"gpu-server.test": "127.0.0.1"}, "analyst", "s3cret:@x")
    dock = plugin.dock
    try:
        _set_proxy(server.server_port, "analyst", "s3cret:@x")
        _connect(plugin, backend)                     # this machine's backend: reached directly
        assert seen == []
        _remote_ready(plugin, backend, tmp_path, name="proxied")
        dock.url.setText(remote)
        task = plugin.controller.run(TINY)
        assert wait_for(lambda: plugin.controller.task is None, 240), dock.stage.text()
        assert dock.stage.text() == "done", dock.stage.text()
        assert Path(task.files.output).is_file()
        carried = {(method, url.split("?")[0].replace(task.job_id or "-", "{job}")) for method, url, _ in seen}
        assert {("GET", f"{remote}/health"), ("POST", f"{remote}/plan"), ("POST", f"{remote}/uploads"),
                ("POST", f"{remote}/jobs"), ("GET", f"{remote}/jobs/{{job}}/result"),
                ("GET", f"{remote}/jobs/{{job}}/result/0")} <= carried, carried
        assert any(method == "PATCH" and "/uploads/" in url for method, url, _ in seen)
        basic = "Basic " + base64.b64encode(f"rs-geo-edit:{backend['token']}".encode()).decode()
        assert {auth for _, _, auth in seen} == {basic}          # QGIS applied the auth configuration

        server.shutdown()
        server.server_close()                                     # the proxy goes down: the refusal names it
        plugin.controller.connect()
        assert wait_for(lambda: plugin.controller.connect_task is None, 60)
        assert f"proxy 127.0.0.1:{server.server_port}" in dock.health.text(), dock.health.text()

        _set_proxy(None)                                          # no proxy: the name resolves nowhere
        plugin.controller.connect()
        assert wait_for(lambda: plugin.controller.connect_task is None, 60)
        assert "gpu-server.test" in dock.health.text() and "check the URL" in dock.health.text(), dock.health.text()
    finally:
        _set_proxy(None)
        server.shutdown()
    QgsProject.instance().removeAllMapLayers()


def _dropping_relay(port: int, drop: set):
    """A relay to the service on ``port`` that cuts the connection of the PATCH requests numbered
    in ``drop`` (1-based) in the middle, as a flaky network does: half of the chunk reaches the
    service, and the answer breaks off. Returns the server and the numbers of the dropped requests."""
    import http.client
    import http.server
    import socket

    patches, dropped = [0], []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
            if self.command == "PATCH":
                patches[0] += 1
                if patches[0] in drop:
                    dropped.append(patches[0])
                    with socket.create_connection(("127.0.0.1", port)) as sock:
                        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                        sock.sendall(f"PATCH {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}\r\n".encode()
                                     + body[:length // 2])
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n{")
                    self.close_connection = True
                    return
            upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            upstream.request(self.command, self.path, body or None, {**headers, "Host": f"127.0.0.1:{port}"})
            response = upstream.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        do_GET = do_POST = do_PATCH = do_DELETE = relay

    return _serve(Handler), dropped


def _serve(handler):
    """A quiet threading HTTP server of ``handler`` on a free port of 127.0.0.1, serving."""
    import http.server
    import threading

    handler.log_message = lambda self, *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_upload_survives_a_server_that_drops_twice_in_the_middle(plugin, backend, tmp_path):
    """Chunks 2 and 4 of 7 are cut off halfway: the client waits, asks the server how much it
    holds, and goes on from there; the server ends with the file, byte for byte."""
    from qgis.core import QgsApplication, QgsTask

    from rs_geo_edit_qgis.client import REMOTE_HINT, BackendClient
    from rs_geo_edit_qgis.credentials import store_token

    window = write_raster(tmp_path / "window.tif", size=384)
    assert 6 * 65536 < window.stat().st_size <= 7 * 65536
    server, dropped = _dropping_relay(int(backend["url"].rsplit(":", 1)[1]), drop={2, 4})
    client = BackendClient(f"http://127.0.0.1:{server.server_port}", authcfg=store_token(backend["url"], backend["token"]),
                           hint=REMOTE_HINT)
    offsets, out = [], {}

    def upload(task):
        out["id"] = client.upload(window, offsets.append, chunk=65536)
        return True

    try:
        t0 = time.monotonic()
        task = QgsTask.fromFunction("upload", upload)
        QgsApplication.taskManager().addTask(task)
        assert wait_for(lambda: task.status() in (QgsTask.Complete, QgsTask.Terminated), 120), offsets
        elapsed = time.monotonic() - t0
    finally:
        server.shutdown()
    assert "id" in out, (offsets, getattr(task, "exception", None))
    assert dropped == [2, 4] and elapsed > 2 * 1.0                 # waited at least 1 s after each drop
    assert offsets[-1] == window.stat().st_size
    assert any(0 < b - a < 65536 for a, b in zip(offsets, offsets[1:]))   # resumed from a half chunk
    state = api(backend, "GET", f"/uploads/{out['id']}")
    assert state["complete"] and state["offset"] == window.stat().st_size
    held = backend["tmp"] / "data" / "uploads" / f"{out['id']}.tif"
    assert held.read_bytes() == window.read_bytes()

"""Harness for the plugin tests: Debian's real QGIS (3.22), headless, with a host window.

Runs in the QGIS interpreter (/usr/bin/python3 via .venv-qgis), never in the backend's. The host
window is a plain QMainWindow with a real QgsMapCanvas and QgsMessageBar offering the few
QgisInterface methods the plugin calls; everything the plugin touches is real QGIS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_runtime = tempfile.mkdtemp(prefix="xdg-")
os.chmod(_runtime, 0o700)
os.environ.setdefault("XDG_RUNTIME_DIR", _runtime)

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / ".venv" / "bin" / "rs-geo-edit"
MASTER_PASSWORD = "the analyst's master password"
sys.path.append("/usr/share/qgis/python/plugins")

from qgis.core import QgsApplication  # noqa: E402


class HostInterface:
    """The parts of QgisInterface the plugin uses, backed by real QGIS widgets."""

    def __init__(self):
        from qgis.core import QgsProject
        from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QToolBar, QMenu, QWidget, QVBoxLayout

        self.window = QMainWindow()
        self.window.resize(1100, 700)
        central = QWidget()
        layout = QVBoxLayout(central)
        self.bar = QgsMessageBar()
        self.canvas = QgsMapCanvas()
        self.canvas.resize(700, 600)
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas)
        self.window.setCentralWidget(central)
        self.bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), self.canvas)
        self.toolbar = QToolBar()
        self.window.addToolBar(self.toolbar)
        self.raster_menu = QMenu("Raster")
        self.docks = []

    def mainWindow(self):  # noqa: N802
        return self.window

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def messageBar(self):  # noqa: N802
        return self.bar

    def addDockWidget(self, area, dock):  # noqa: N802
        self.window.addDockWidget(area, dock)
        self.docks.append(dock)

    def removeDockWidget(self, dock):  # noqa: N802
        self.window.removeDockWidget(dock)
        self.docks.remove(dock)

    def addToolBarIcon(self, action):  # noqa: N802
        self.toolbar.addAction(action)

    def removeToolBarIcon(self, action):  # noqa: N802
        self.toolbar.removeAction(action)

    def addPluginToRasterMenu(self, name, action):  # noqa: N802
        self.raster_menu.addAction(action)

    def removePluginRasterMenu(self, name, action):  # noqa: N802
        self.raster_menu.removeAction(action)


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    from qgis.PyQt.QtCore import QSettings

    profile = tmp_path_factory.mktemp("qgis-profile")
    # QgsSettings would otherwise land in the user's ~/.config, shared with every other run
    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(profile))
    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True, str(profile))
    app.initQgis()
    # the profile's authentication database, unlocked as an analyst would with the master password
    auth = QgsApplication.authManager()
    auth.setPasswordHelperEnabled(False)
    assert auth.setMasterPassword(MASTER_PASSWORD, True)
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app
    app.exitQgis()


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory):
    """The packaged zip, unpacked into a plugins folder, as "Install from ZIP" would."""
    import zipfile

    out = tmp_path_factory.mktemp("dist") / "rs_geo_edit_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "package_plugin.py"), "--out", str(out)], check=True)
    plugins = tmp_path_factory.mktemp("plugins")
    with zipfile.ZipFile(out) as zf:
        zf.extractall(plugins)
    return plugins


@pytest.fixture(scope="session")
def host(qgis_app):
    import qgis.utils

    iface = HostInterface()
    qgis.utils.iface = iface
    return iface


@pytest.fixture(scope="session")
def plugin(host, plugin_dir):
    """The plugin loaded and started through qgis.utils, like QGIS does."""
    import qgis.utils

    sys.path.insert(0, str(plugin_dir))
    qgis.utils.plugin_paths.insert(0, str(plugin_dir))
    qgis.utils.updateAvailablePlugins()
    assert qgis.utils.loadPlugin("rs_geo_edit_qgis")
    assert qgis.utils.startPlugin("rs_geo_edit_qgis")
    yield qgis.utils.plugins["rs_geo_edit_qgis"]
    qgis.utils.unloadPlugin("rs_geo_edit_qgis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def backend(tmp_path_factory):
    """A real rs-geo-edit service (the backend's own environment) on 127.0.0.1."""
    import json
    import urllib.request

    if not BACKEND.exists():
        pytest.fail(f"{BACKEND} missing: run scripts/setup.sh first")
    tmp = tmp_path_factory.mktemp("backend")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_DATA_DIR": str(tmp / "data"),
           "RS_GEO_EDIT_CONFIG_DIR": str(tmp / "config"), "RS_GEO_EDIT_CACHE": str(tmp / "cache"),
           "HF_HUB_OFFLINE": "1"}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.Popen([str(BACKEND), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if json.loads(r.read()).get("device") != "starting":
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("backend did not start")
    token = (tmp / "config" / "token").read_text().strip()
    # the plugin reads a local backend's token from the backend (serve --print-token), as on the
    # analyst's machine: the same configuration folder as the service's
    before = os.environ.get("RS_GEO_EDIT_CONFIG_DIR")
    os.environ["RS_GEO_EDIT_CONFIG_DIR"] = env["RS_GEO_EDIT_CONFIG_DIR"]
    yield {"url": url, "token": token, "env": env, "tmp": tmp}
    if before is None:
        os.environ.pop("RS_GEO_EDIT_CONFIG_DIR", None)
    else:
        os.environ["RS_GEO_EDIT_CONFIG_DIR"] = before
    proc.terminate()
    proc.wait(timeout=20)


def write_raster(path: Path, epsg: int = 32633, size: int = 96) -> Path:
    """A textured 3-band uint8 GeoTIFF written with GDAL."""
    import numpy as np
    from osgeo import gdal, osr

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    driver = gdal.GetDriverByName("GTiff")
    ds = driver.Create(str(path), size, size, 3, gdal.GDT_Byte, ["TILED=YES", "BLOCKXSIZE=32", "BLOCKYSIZE=32"])
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5100000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        band = (np.sin(xx / (5.0 + b)) * 60 + np.cos(yy / 7.0) * 50 + 120 + rng.integers(0, 20, (size, size)))
        ds.GetRasterBand(b + 1).WriteArray(band.clip(0, 255).astype("uint8"))
        ds.GetRasterBand(b + 1).SetColorInterpretation(gdal.GCI_RedBand + b)
    ds = None
    return path


def wait_for(predicate, timeout: float = 120.0) -> bool:
    """Process Qt events (tasks report on the main thread) until ``predicate()`` or timeout."""
    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.time() + timeout
    while time.time() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.05)
    return False


def api(backend: dict, method: str, path: str, body=None):
    """Call the test backend directly (as another client, or a QGIS session before a restart)."""
    import json
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(backend["url"] + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {backend['token']}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())

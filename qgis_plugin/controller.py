"""The controller: wires the dock's buttons to tasks (connect, edit, install) and puts what the
tasks report into the dock and the project. Requests happen only inside tasks; widgets change
only here, on the main thread."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsCoordinateTransform, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QApplication

from . import layers
from .backend import BackendSettings, ConnectTask, LocalBackend
from .client import BackendClient, BackendError
from .entities import Job, LocalFiles, is_remote_job
from .installer import DEFAULT_PACKAGE, InstallSpec, InstallTask, default_folder, default_python
from .jobs import EditTask
from .maptool import PolygonTool, add_polygon
from .remote import RemoteEditTask
from .rois import rois_geojson
from .settings import backend_client, flag, set_setting, setting

HELP_FILE = Path(__file__).with_name("help.html")
REMEMBERED = 200  # remote jobs whose local scene and output paths are kept


class EditController:
    def __init__(self, iface, dock):
        self.iface, self.dock = iface, dock
        self.canvas = iface.mapCanvas()
        self.tool = PolygonTool(self.canvas)
        self.roi_layer = None
        self.local: Optional[LocalBackend] = None   # the service this plugin started, if any
        self.health: dict = {}
        self.jobs: dict[str, Job] = {}
        self.connect_task: Optional[ConnectTask] = None
        self.task: Optional[EditTask] = None
        self.install_task: Optional[InstallTask] = None
        self.unloaded = False   # tasks may end after the plugin is unloaded: their reports are then dropped
        dock.show_backend_settings(BackendSettings(url=setting("url", BackendSettings.url),
                                                   token=setting("token", ""),
                                                   executable=setting("executable", BackendSettings.executable),
                                                   autostart=flag("autostart"), remote=flag("remote")))
        dock.show_install_spec(InstallSpec(folder=setting("install_folder", str(default_folder())),
                                           python=setting("install_python", default_python()),
                                           package=setting("install_package", DEFAULT_PACKAGE),
                                           pip_args=tuple(setting("install_pip_args", "").split()),
                                           system_site_packages=flag("install_system")))
        self.tool.polygonFinished.connect(self.on_polygon)
        dock.draw.clicked.connect(self.start_drawing)
        dock.run_button.clicked.connect(lambda: self.run())
        dock.cancel_button.clicked.connect(self.cancel)
        dock.connect_button.clicked.connect(self.connect)
        dock.load_button.clicked.connect(self.load_selected)
        dock.diagnostics_button.clicked.connect(self.copy_diagnostics)
        dock.help_button.clicked.connect(self.open_help)
        dock.install_button.clicked.connect(self.install)

    def message(self, text: str, level=Qgis.Info) -> None:
        self.iface.messageBar().pushMessage("rs-geo-edit", text, level=level, duration=8)

    # ---------------------------------------------------------------------------------- backend
    def backend_settings(self) -> BackendSettings:
        settings = self.dock.backend_settings()
        set_setting("url", settings.url)
        set_setting("token", settings.token)
        set_setting("executable", settings.executable)
        set_setting("autostart", "true" if settings.autostart else "false")
        set_setting("remote", "true" if settings.remote else "false")
        return settings

    def client(self) -> BackendClient:
        settings = self.backend_settings()
        return backend_client(settings.url, settings.token)

    def connect(self) -> Optional[ConnectTask]:
        """Start the local backend if asked, then show its health and recent jobs: all in a task."""
        if self.connect_task is not None:
            return self.connect_task
        settings = self.backend_settings()
        try:
            if self.local is not None and settings.starts_local and self.local.port != settings.port:
                self.stop_backend()   # the URL moved to another port: one service of ours at a time
            if settings.starts_local and (self.local is None or self.local.process is None):
                log = Path(QgsApplication.qgisSettingsDirPath()) / "rs-geo-edit" / "serve.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                self.local = LocalBackend(settings.executable, settings.port, log)
            local = self.local if settings.starts_local else None
        except (BackendError, OSError) as exc:  # a URL without a port, an unwritable profile
            self.dock.health.setText(f"backend unavailable: {exc}")
            return None
        task = ConnectTask(settings, local)
        task.taskCompleted.connect(lambda: self.on_connected(task))
        task.taskTerminated.connect(lambda: self.on_connected(task))
        self.connect_task = task
        self.dock.connect_button.setEnabled(False)
        self.dock.health.setText("starting the local backend ..." if local else "connecting ...")
        QgsApplication.taskManager().addTask(task)
        return task

    def on_connected(self, task: ConnectTask) -> None:
        self.connect_task = None
        if self.unloaded:
            return
        self.dock.connect_button.setEnabled(True)
        if task.error or not task.health:
            error = task.error or "connection cancelled"
            self.health = {}
            self.dock.health.setText(f"backend unavailable: {error}")
            self.message(error, Qgis.Warning)
            return
        self.dock.url.setText(task.url)
        self.dock.token.setText(task.token)
        self.backend_settings()
        self.health = task.health
        self.dock.show_health(task.health)
        jobs = [self.localise(job) for job in task.jobs]
        self.jobs = {job.id: job for job in jobs}
        self.dock.show_jobs(jobs, [job.id for job in jobs if self.loadable(job)])

    def stop_backend(self) -> None:
        if self.local is not None:
            self.local.stop()
            self.local = None

    def copy_diagnostics(self) -> str:
        """Plugin, QGIS and backend details (from the last Connect) on the clipboard."""
        metadata = Path(__file__).with_name("metadata.txt")
        version = next((line.split("=", 1)[1].strip() for line in metadata.read_text().splitlines()
                        if line.startswith("version=")), "?") if metadata.exists() else "?"
        text = json.dumps({"plugin": version, "qgis": Qgis.QGIS_VERSION, "python": platform.python_version(),
                           "platform": platform.platform(), "backend_url": self.dock.url.text(),
                           "backend": self.health or {"error": self.dock.health.text()}}, indent=2)
        QApplication.clipboard().setText(text)
        return text

    def help_url(self) -> QUrl:
        return QUrl.fromLocalFile(str(HELP_FILE))

    def open_help(self) -> None:
        QDesktopServices.openUrl(self.help_url())

    # ---------------------------------------------------------------------------------- install
    def install(self) -> Optional[InstallTask]:
        if self.install_task is not None:
            return self.install_task
        spec = self.dock.install_spec()
        if not spec.folder:
            spec = InstallSpec(default_folder(), spec.python, spec.package, spec.pip_args, spec.system_site_packages)
        set_setting("install_folder", str(spec.folder))
        set_setting("install_python", spec.python)
        set_setting("install_package", spec.package)
        set_setting("install_pip_args", " ".join(spec.pip_args))
        set_setting("install_system", "true" if spec.system_site_packages else "false")
        task = InstallTask(spec)
        task.logged.connect(self.dock.install_log.appendPlainText)
        task.taskCompleted.connect(lambda: self.on_installed(task))
        task.taskTerminated.connect(lambda: self.on_installed(task))
        self.install_task = task
        self.dock.install_button.setEnabled(False)
        self.dock.install_log.clear()
        QgsApplication.taskManager().addTask(task)
        return task

    def on_installed(self, task: InstallTask) -> None:
        self.install_task = None
        if self.unloaded:
            return
        self.dock.install_button.setEnabled(True)
        if task.executable is None:
            error = task.error or "installation cancelled"
            self.dock.install_log.appendPlainText(f"failed: {error}")
            self.message(error, Qgis.Critical)
            return
        self.dock.install_log.appendPlainText(f"installed {task.executable}; starting it")
        self.stop_backend()
        self.dock.exe.setText(str(task.executable))
        self.dock.autostart.setChecked(True)
        self.connect()

    # ---------------------------------------------------------------------------------- ROIs
    def drawn_layer(self):
        if self.roi_layer is None or not QgsProject.instance().mapLayer(self.roi_layer.id()):
            self.roi_layer = layers.roi_layer(QgsProject.instance().crs())
            QgsProject.instance().addMapLayer(self.roi_layer)
        return self.roi_layer

    def start_drawing(self) -> None:
        self.dock.roi_source.setCurrentIndex(0)
        self.canvas.setMapTool(self.tool)

    def on_polygon(self, geometry) -> None:
        """A polygon drawn in map coordinates, stored in the scratch layer's CRS."""
        layer = self.drawn_layer()
        map_crs = self.canvas.mapSettings().destinationCrs()
        if map_crs != layer.crs():
            geometry.transform(QgsCoordinateTransform(map_crs, layer.crs(), QgsProject.instance()))
        add_polygon(layer, geometry, self.dock.prompt.text().strip())

    # ---------------------------------------------------------------------------------- jobs
    def build_request(self) -> dict:
        dock = self.dock
        raster = dock.raster.currentLayer()
        if not isinstance(raster, QgsRasterLayer) or not os.path.isfile(layers.source_path(raster)):
            raise ValueError("choose a raster layer stored in a file (GeoTIFF)")
        if dock.roi_source.currentIndex() == 0:
            layer, selected = self.drawn_layer(), False
        else:
            layer, selected = dock.roi_layer_combo.currentLayer(), dock.selected_only.isChecked()
            if layer is None:
                raise ValueError("choose a polygon layer of ROIs")
        prompt = dock.prompt.text().strip() or None
        aoi = rois_geojson(layer, selected, default_prompt=prompt)
        source = Path(layers.source_path(raster))
        tag = (prompt or dock.mode.currentText()).replace(" ", "_")[:40]
        output = source.with_name(f"{source.stem}_{tag}_{dock.seed.value()}.tif")
        if output.exists():  # never overwrite: a fresh name beside it
            output = Path(tempfile.mkstemp(prefix=f"{source.stem}_{tag}_", suffix=".tif", dir=source.parent)[1])
            output.unlink()
        return {"scene": str(source), "aoi": aoi, "prompt": prompt, "mode": dock.mode.currentText(),
                "preset": dock.preset.currentText(), "seed": dock.seed.value(), "output": str(output)}

    def run(self, options: Optional[dict] = None) -> Optional[EditTask]:
        """Submit the dock's edit (with job ``options``, e.g. {"steps": 500}) and follow it in a task."""
        if self.task is not None:
            return None
        try:
            request = self.build_request()
        except ValueError as exc:
            self.message(str(exc), Qgis.Warning)
            return None
        if options:
            request["options"] = dict(options)
        if self.backend_settings().remote:
            if request["mode"] == "copy":  # its content comes from outside the windows that travel
                self.message("copy mode needs the whole scene: run it on a local backend", Qgis.Warning)
                return None
            return self._follow(RemoteEditTask(self.client(), request))
        return self._follow(EditTask(self.client(), request))

    def _follow(self, task):
        """Run an ``EditTask`` or ``RemoteEditTask`` and show its progress and end in the dock."""
        task.progressChanged.connect(lambda _: self.unloaded or self._progress(task))
        task.taskCompleted.connect(lambda: self.on_job_ended(task))
        task.taskTerminated.connect(lambda: self.on_job_ended(task))
        self.task = task
        self.dock.set_running(True)
        self.dock.stage.setText("submitting ..." if task.job_id is None else "following ...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _progress(self, task) -> None:
        if isinstance(task, RemoteEditTask) and task.job_id:
            self.remember(task.job_id, task.files)
        self.dock.show_job_progress(task.job)

    # A remote job's result is written here: which scene and output it belongs to is known only
    # to this machine, kept in the settings so a job outlives a restart of QGIS.
    def remember(self, job_id: str, files: LocalFiles) -> None:
        known = self.remote_files()
        if job_id not in known:
            known[job_id] = dataclasses.asdict(files)
            set_setting("remote_jobs", json.dumps(dict(list(known.items())[-REMEMBERED:])))

    def remote_files(self) -> dict:
        try:
            return dict(json.loads(setting("remote_jobs", "{}") or "{}"))
        except ValueError:
            return {}

    def localise(self, job: Job) -> Job:
        """A remote job as this machine sees it: its local scene and output, when this machine sent it."""
        files = self.remote_files().get(job.id) if is_remote_job(job) else None
        if files is None:
            return job
        return dataclasses.replace(job, output=files["output"], request={**job.request, "scene": files["scene"]})

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def on_job_ended(self, task: EditTask) -> None:
        self.task = None
        if self.unloaded:
            return
        self.dock.set_running(False)
        job = task.job
        if isinstance(task, RemoteEditTask) and task.job_id:
            self.remember(task.job_id, task.files)
        if job is not None and job.id:
            self.jobs[job.id] = job
            self.dock.put_job(job)
        if job is not None and job.state == "done":
            self.dock.progress.setValue(100)
            self.dock.stage.setText("done")
            self.load_job(job)
        elif job is not None and job.state == "cancelled":
            self.dock.stage.setText("cancelled")
            self.message("edit cancelled; nothing was written")
        else:
            error = task.error or (job.error if job else None) or "the edit failed"
            self.dock.stage.setText(f"failed: {error}")
            self.message(error, Qgis.Critical)

    def loadable(self, job: Job) -> bool:
        """A finished job whose output exists and is not in the project, or one still running; a
        remote job of this machine's also when its result is not written here yet."""
        remote = is_remote_job(job)
        if remote and job.id not in self.remote_files():
            return False  # another machine's: its scene and output are not here
        if job.state in ("queued", "running"):
            return self.task is None
        if job.state != "done" or not job.output:
            return False
        if remote and not os.path.exists(job.output):
            return self.task is None
        return os.path.isfile(job.output) and layers.find_raster(job.output) is None

    def load_selected(self) -> Optional[object]:
        job = self.jobs.get(self.dock.selected_job_id() or "")
        if job is None or not self.loadable(job):
            return None
        if is_remote_job(job) and (job.state != "done" or not os.path.exists(job.output)):
            files = LocalFiles(**self.remote_files()[job.id])
            return self._follow(RemoteEditTask(self.client(), job_id=job.id, files=files))
        if job.state in ("queued", "running"):
            return self._follow(EditTask(self.client(), job_id=job.id))
        return self.load_job(job)

    def load_job(self, job: Job) -> Optional[QgsRasterLayer]:
        """Add a finished job's result above its source layer (when the source is in the project)."""
        try:
            layer = layers.add_result(job.output, job.title, layers.find_raster(job.scene) if job.scene else None)
        except ValueError as exc:
            self.message(str(exc), Qgis.Warning)
            return None
        self.dock.put_job(job, loadable=False)
        return layer

    def unload(self) -> None:
        """QGIS closes or the plugin is unloaded: a running edit stays on the backend (listed on the
        next Connect), the other tasks stop."""
        self.unloaded = True
        if isinstance(self.task, RemoteEditTask) and self.task.job_id:
            self.remember(self.task.job_id, self.task.files)
        if self.task is not None:
            self.task.detach()
        for task in (self.connect_task, self.install_task):
            if task is not None:
                task.cancel()
        self.stop_backend()
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)

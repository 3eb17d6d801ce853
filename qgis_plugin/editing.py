"""Edits from the dock: submit one (here or on a remote server), follow it in a task, cancel it,
list the backend's jobs and load a finished one's result. An edit runs on the connection of the
current settings: one under way (the local backend starting) is waited for, none is made first.
Reports through signals; the remote jobs this machine sent are kept in a ``RemoteJobs`` registry."""

from __future__ import annotations

import os
from typing import Callable, Optional

from qgis.core import Qgis, QgsApplication, QgsRasterLayer
from qgis.PyQt.QtCore import QObject, pyqtSignal

from . import layers
from .entities import EditForm, Job, is_remote_job
from .jobs import EditTask
from .preferences import BackendSettings
from .remote import RemoteEditTask
from .remote_jobs import RemoteJobs
from .request import build_request


class EditService(QObject):
    running = pyqtSignal(bool)             # an edit is followed, or no longer
    stage = pyqtSignal(str)                # what the followed edit is at, before its own reports
    progressed = pyqtSignal(object)        # the followed job's latest state (a Job, or None)
    ended = pyqtSignal(str, str)           # done, cancelled or failed, and the error when failed
    listed = pyqtSignal(object, object)    # the backend's jobs, and the ids of those that can be loaded
    job_changed = pyqtSignal(object, bool)  # one job's new state, and whether it can be loaded
    message = pyqtSignal(str, object)      # text and Qgis message level, for the message bar
    loaded = pyqtSignal(object, object)    # a result layer added to the project, and its job

    def __init__(self, registry: RemoteJobs, drawn_layer: Callable[[], object],
                 settings: Callable[[], BackendSettings], connections, parent=None):
        """``settings()``: the backend settings to submit with, read when an edit starts;
        ``connections``: the ``ConnectionService`` whose connection an edit runs on."""
        super().__init__(parent)
        self.registry, self.drawn_layer, self.settings = registry, drawn_layer, settings
        self.connections = connections
        self.jobs: dict[str, Job] = {}
        self.task: Optional[EditTask] = None
        self.closed = False   # a task may end after the plugin is unloaded: its report is then dropped

    def _connection(self):
        return self.connections.connection_for(self.settings())

    def run(self, form: EditForm, options: Optional[dict] = None) -> Optional[EditTask]:
        """Submit ``form``'s edit (with job ``options``, e.g. {"steps": 500}) and follow it."""
        if self.task is not None:
            return None
        try:
            request = build_request(form, self.drawn_layer)
        except ValueError as exc:
            self.message.emit(str(exc), Qgis.Warning)
            return None
        if options:
            request["options"] = dict(options)
        if self.settings().remote:
            if request["mode"] == "copy":  # its content comes from outside the windows that travel
                self.message.emit("copy mode needs the whole scene: run it on a local backend", Qgis.Warning)
                return None
            return self._follow(RemoteEditTask(self._connection(), request))
        return self._follow(EditTask(self._connection(), request))

    def _follow(self, task):
        task.progressChanged.connect(lambda _: self.closed or self._progress(task))
        task.taskCompleted.connect(lambda: self._ended(task))
        task.taskTerminated.connect(lambda: self._ended(task))
        self.task = task
        self.running.emit(True)
        if not task.connection.done:
            self.stage.emit("waiting for the backend to start ..." if self.settings().starts_local
                            else "waiting for the backend to answer ...")
        else:
            self.stage.emit("submitting ..." if task.job_id is None else "following ...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _remember(self, task) -> None:
        if isinstance(task, RemoteEditTask) and task.job_id:
            self.registry.remember(task.job_id, task.files)

    def _progress(self, task) -> None:
        self._remember(task)
        self.progressed.emit(task.job)

    def _ended(self, task) -> None:
        self.task = None
        if self.closed:
            return
        self.running.emit(False)
        job = task.job
        self._remember(task)
        if job is not None and job.id:
            self.jobs[job.id] = job
            self.job_changed.emit(job, False)
        if job is not None and job.state == "done":
            self.ended.emit("done", "")
            self.load_job(job)
        elif job.state == "cancelled" if job is not None else task.isCanceled():
            self.ended.emit("cancelled", "")
            self.message.emit("edit cancelled; nothing was written", Qgis.Info)
        else:
            error = task.error or (job.error if job else None) or "the edit failed"
            if task.unreachable:
                self.connections.forget(task.connection)
            self.ended.emit("failed", error)
            self.message.emit(error, Qgis.Critical)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def list_jobs(self, jobs: list) -> None:
        """The backend's recent jobs, remote ones with this machine's paths."""
        jobs = [self.registry.localise(job) for job in jobs]
        self.jobs = {job.id: job for job in jobs}
        self.listed.emit(jobs, [job.id for job in jobs if self.loadable(job)])

    def loadable(self, job: Job) -> bool:
        """A finished job whose output exists and is not in the project, or one still running; a
        remote job of this machine's also when its result is not written here yet."""
        remote = is_remote_job(job)
        if remote and job.id not in self.registry:
            return False  # another machine's: its scene and output are not here
        if job.state in ("queued", "running"):
            return self.task is None
        if job.state != "done" or not job.output:
            return False
        if remote and not os.path.exists(job.output):
            return self.task is None
        return os.path.isfile(job.output) and layers.find_raster(job.output) is None

    def load(self, job_id: Optional[str]):
        """Load a listed job's result, or follow it (and, remote, write its result) first."""
        job = self.jobs.get(job_id or "")
        if job is None or not self.loadable(job):
            return None
        if is_remote_job(job) and (job.state != "done" or not os.path.exists(job.output)):
            files = self.registry.files(job.id)
            return self._follow(RemoteEditTask(self._connection(), job_id=job.id, files=files))
        if job.state in ("queued", "running"):
            return self._follow(EditTask(self._connection(), job_id=job.id))
        return self.load_job(job)

    def load_job(self, job: Job) -> Optional[QgsRasterLayer]:
        """Add a finished job's result above its source layer (when the source is in the project)."""
        try:
            layer = layers.add_result(job.output, job.title, layers.find_raster(job.scene) if job.scene else None)
        except ValueError as exc:
            self.message.emit(str(exc), Qgis.Warning)
            return None
        self.job_changed.emit(job, False)
        self.loaded.emit(layer, job)
        return layer

    def close(self) -> None:
        """QGIS closes or the plugin is unloaded: a running edit stays on the backend (listed on the
        next Connect); a remote one is remembered so its result can be written later."""
        self.closed = True
        self._remember(self.task)
        if self.task is not None:
            self.task.detach()

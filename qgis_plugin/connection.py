"""Connecting to the backend: starts the local service when asked (owning only what it started)
and reads its health and recent jobs, in a ConnectTask; reports through signals. An edit asks
for the connection of its settings (``connection_for``): the one under way or made, else a new
one, so Run pressed while the local backend starts waits for it."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .backend import Connection, ConnectTask, LocalBackend
from .errors import BackendError
from .preferences import BackendSettings

METADATA = Path(__file__).with_name("metadata.txt")


class ConnectionService(QObject):
    connecting = pyqtSignal(bool)            # True: the local backend is started first
    finished = pyqtSignal()                  # the connect task ended, either way
    unavailable = pyqtSignal(str)            # why no backend answers
    message = pyqtSignal(str, object)        # text and Qgis message level, for the message bar
    address = pyqtSignal(str)                # url of the backend that answered
    health_changed = pyqtSignal(object)      # its /health
    jobs_found = pyqtSignal(object)          # its recent jobs (list of Job)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.local: Optional[LocalBackend] = None   # the service this plugin started, if any
        self.health: dict = {}
        self.task: Optional[ConnectTask] = None
        self.current: Optional[Connection] = None   # the latest connect's outcome, or the one under way
        self.closed = False   # a task may end after the plugin is unloaded: its report is then dropped

    def connect_to(self, settings: BackendSettings) -> Optional[ConnectTask]:
        if self.task is not None:
            return self.task
        try:
            if self.local is not None and settings.starts_local and self.local.port != settings.port:
                self.stop_backend()   # the URL moved to another port: one service of ours at a time
            if settings.starts_local and (self.local is None or self.local.process is None):
                log = Path(QgsApplication.qgisSettingsDirPath()) / "rs-geo-edit" / "serve.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                self.local = LocalBackend(settings.executable, settings.port, log)
            local = self.local if settings.starts_local else None
        except (BackendError, OSError) as exc:  # a URL without a port, an unwritable profile
            self.current = Connection(settings)
            self.current.fail(str(exc))
            self.unavailable.emit(str(exc))
            return None
        task = ConnectTask(settings, local)
        self.current = task.connection
        task.taskCompleted.connect(lambda: self._ended(task))
        task.taskTerminated.connect(lambda: self._ended(task))
        self.task = task
        self.connecting.emit(local is not None)
        QgsApplication.taskManager().addTask(task)
        return task

    def connection_for(self, settings: BackendSettings) -> Connection:
        """The connection an edit with ``settings`` uses: the current one when it was made for the
        same settings and has not failed (it may still be under way), else a new connect."""
        current = self.current
        if current is not None and current.settings != settings and not current.done:
            busy = Connection(settings)   # one connect at a time: that one's backend is not this one
            busy.fail(f"a connect to {current.settings.url} is under way: run again when it has finished")
            return busy
        if current is None or current.settings != settings or current.failed:
            self.connect_to(settings)
        return self.current

    def forget(self, connection: Connection) -> None:
        """``connection``'s backend stopped answering: the next edit connects again."""
        if self.current is connection and connection.done:
            self.current = None

    def _ended(self, task: ConnectTask) -> None:
        self.task = None
        if self.closed:
            return
        self.finished.emit()
        if task.error or not task.health:
            error = task.error or "connection cancelled"
            self.health = {}
            self.unavailable.emit(error)
            self.message.emit(error, Qgis.Warning)
            return
        self.address.emit(task.url)
        self.health = task.health
        self.health_changed.emit(task.health)
        self.jobs_found.emit(task.jobs)

    def stop_backend(self) -> None:
        if self.local is not None:
            self.local.stop()
            self.local = None

    def diagnostics(self, url: str, status: str) -> str:
        """Plugin, QGIS and backend details (from the last Connect; else the shown ``status``)."""
        version = next((line.split("=", 1)[1].strip() for line in METADATA.read_text().splitlines()
                        if line.startswith("version=")), "?") if METADATA.exists() else "?"
        return json.dumps({"plugin": version, "qgis": Qgis.QGIS_VERSION, "python": platform.python_version(),
                           "platform": platform.platform(), "backend_url": url,
                           "backend": self.health or {"error": status}}, indent=2)

    def close(self) -> None:
        """Cancel a connect under way and stop the service this plugin started."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        self.stop_backend()

"""Installing the backend from the dock: one InstallTask at a time, its spec remembered, its
output and end reported through signals."""

from __future__ import annotations

from typing import Optional

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .entities import InstallSpec
from .installer import InstallTask, default_folder
from .preferences import Preferences


class InstallService(QObject):
    started = pyqtSignal()
    logged = pyqtSignal(str)          # each line of the installation's output
    finished = pyqtSignal()           # the task ended, either way
    installed = pyqtSignal(str)       # the installed rs-geo-edit executable
    failed = pyqtSignal(str)

    def __init__(self, preferences: Preferences, parent=None):
        super().__init__(parent)
        self.preferences = preferences
        self.task: Optional[InstallTask] = None
        self.closed = False

    def install(self, spec: InstallSpec) -> Optional[InstallTask]:
        """Install ``spec`` (in the profile's default folder when it names none) and remember it."""
        if self.task is not None:
            return self.task
        if not spec.folder:
            spec = InstallSpec(default_folder(), spec.python, spec.package, spec.pip_args, spec.system_site_packages)
        self.preferences.save_install(spec)
        task = InstallTask(spec)
        task.logged.connect(self.logged)
        task.taskCompleted.connect(lambda: self._ended(task))
        task.taskTerminated.connect(lambda: self._ended(task))
        self.task = task
        self.started.emit()
        QgsApplication.taskManager().addTask(task)
        return task

    def _ended(self, task: InstallTask) -> None:
        self.task = None
        if self.closed:
            return
        self.finished.emit()
        if task.executable is None:
            self.failed.emit(task.error or "installation cancelled")
        else:
            self.installed.emit(str(task.executable))

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()

"""Finding, starting and checking the backend service, always off QGIS's GUI thread.

``ConnectTask`` (a QgsTask) starts the local service when asked, waits for its health check and
reads the recent jobs; the controller gets the outcome on the main thread. A local service reads
the analyst's files by path; a remote one gets the windows around the ROIs (``remote.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsTask

from .client import BackendClient, BackendError
from .entities import Job
from .installer import default_folder, venv_executable
from .preferences import BackendSettings
from .settings import backend_client

START_WAIT = 120.0  # seconds: a first start imports torch and probes the device


def find_executable(name: str) -> Optional[str]:
    """``name`` as a path or on PATH; for the bare default name, also the backend that 'Install
    backend' put in the profile's default folder."""
    found = shutil.which(name) or (name if os.path.isfile(name) else None)
    if found is None and name == BackendSettings.executable:
        installed = venv_executable(default_folder(), name)
        found = str(installed) if installed.is_file() else None
    return found


class LocalBackend:
    """``rs-geo-edit serve`` on 127.0.0.1; stops only a process it started itself."""

    def __init__(self, executable: str, port: int = 8765, log_path: Optional[Path] = None):
        self.executable, self.port, self.log_path = executable, port, log_path
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _exe(self) -> str:
        exe = find_executable(self.executable)
        if exe is None:
            raise BackendError(f"rs-geo-edit executable {self.executable!r} not found: set its path in the "
                               "plugin's backend settings, or use 'Install backend'")
        return exe

    def token(self) -> str:
        out = subprocess.run([self._exe(), "serve", "--print-token"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise BackendError(f"'{self.executable} serve --print-token' failed: {out.stderr.strip()[-300:]}")
        return out.stdout.strip().splitlines()[-1]

    def start(self, wait: float = START_WAIT, should_stop: Callable[[], bool] = lambda: False) -> str:
        """Start the service unless one already answers on the port; return its token once it is
        ready. Blocking (seconds): call it from a worker thread."""
        token = self.token()
        client = BackendClient(self.url, token, timeout=2)
        try:
            client.health()
            return token  # started elsewhere: use it, do not own it
        except BackendError:
            pass
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen([self._exe(), "serve", "--port", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        finally:
            if self.log_path:
                log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not should_stop():
            if self.process.poll() is not None:
                raise BackendError(f"'rs-geo-edit serve' exited with code {self.process.returncode}"
                                   + (f"; its log: {self.log_path}" if self.log_path else ""))
            try:
                if client.health().get("device") != "starting":
                    return token
            except BackendError:
                pass
            time.sleep(0.3)
        self.stop()
        raise BackendError("start cancelled" if should_stop() else f"'rs-geo-edit serve' did not answer within {wait:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


class ConnectTask(QgsTask):
    """Starts the local service if asked (``local``), then reads its health and recent jobs.
    Results (``url``, ``token``, ``health``, ``jobs``, ``error``) are read on the main thread."""

    def __init__(self, settings: BackendSettings, local: Optional[LocalBackend] = None, recent: int = 20):
        super().__init__("rs-geo-edit: connecting to the backend", QgsTask.CanCancel)
        self.settings, self.local, self.recent = settings, local, recent
        self.url, self.token = settings.url, settings.token
        self.health: dict = {}
        self.jobs: list[Job] = []
        self.error: Optional[str] = None

    def run(self) -> bool:  # worker thread
        try:
            if self.local is not None:
                self.token = self.local.start(should_stop=self.isCanceled)
                self.url = self.local.url
            client = backend_client(self.url, self.token)
            self.health = client.health()
            self.jobs = client.jobs(self.recent)
        except (BackendError, OSError, subprocess.SubprocessError) as exc:
            self.error = str(exc)
            return False
        return True

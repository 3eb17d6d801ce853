"""Finding, starting and checking the backend service, always off QGIS's GUI thread.

``ConnectTask`` (a QgsTask) starts the local service when asked, waits for its health check and
reads the recent jobs; the controller gets the outcome on the main thread, and an edit task started
meanwhile waits for it through the task's ``Connection``. A local service reads the analyst's files
by path and is called with the token it prints; a remote one gets the windows around the ROIs
(``remote.py``) and is called with a QGIS authentication configuration.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsTask

from .client import LOCAL_HINT, REMOTE_HINT, STARTED_HINT, BackendClient
from .entities import Job
from .errors import BackendError
from .installer import default_folder, venv_executable
from .preferences import BackendSettings

START_WAIT = 120.0  # seconds: a first start imports torch and probes the device


def find_executable(name: str) -> Optional[str]:
    """``name`` as a path or on PATH; for the bare default name, also the backend that 'Install
    backend' put in the profile's default folder."""
    found = shutil.which(name) or (name if os.path.isfile(name) else None)
    if found is None and name == BackendSettings.executable:
        installed = venv_executable(default_folder(), name)
        found = str(installed) if installed.is_file() else None
    return found


def executable_path(name: str) -> str:
    """``find_executable(name)``, else BackendError saying how to set it."""
    exe = find_executable(name)
    if exe is None:
        raise BackendError(f"rs-geo-edit executable {name!r} not found: set its path in the plugin's "
                           "backend settings, or use 'Install backend'")
    return exe


def read_token(executable: str) -> str:
    """The local backend's token, as it prints it (``serve --print-token``): never stored here."""
    exe = executable_path(executable)
    try:
        out = subprocess.run([exe, "serve", "--print-token"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise BackendError(f"'{executable} serve --print-token' did not answer within 60 s: check that the "
                           "backend is installed correctly (reinstall it with 'Install backend')") from None
    if out.returncode != 0:
        raise BackendError(f"'{executable} serve --print-token' failed: {out.stderr.strip()[-300:]}")
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise BackendError(f"'{executable} serve --print-token' printed no token: check that {exe} is the "
                           "rs-geo-edit backend (reinstall it with 'Install backend')")
    return lines[-1]


def client_for(settings: BackendSettings, token: Optional[str] = None) -> BackendClient:
    """The client of the backend ``settings`` name: a remote server with its authentication
    configuration, a local backend with its token (``token``, else read from the backend).
    Blocking (the local token is read by running the backend): call it from a worker thread."""
    if settings.remote:
        if not settings.authcfg:
            raise BackendError(f"no credentials for the remote server {settings.url}: choose an authentication "
                               "configuration, or paste the server's token and press Store, in the Backend box")
        return BackendClient(settings.url, authcfg=settings.authcfg, hint=REMOTE_HINT)
    return BackendClient(settings.url, token if token is not None else read_token(settings.executable),
                         hint=STARTED_HINT if settings.starts_local else LOCAL_HINT)


class LocalBackend:
    """``rs-geo-edit serve`` on 127.0.0.1; stops only a process it started itself."""

    def __init__(self, executable: str, port: int = 8765, log_path: Optional[Path] = None):
        self.executable, self.port, self.log_path = executable, port, log_path
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = START_WAIT, should_stop: Callable[[], bool] = lambda: False) -> str:
        """Start the service unless one already answers on the port; return its token once it is
        ready. Blocking (seconds): call it from a worker thread."""
        token = read_token(self.executable)
        client = BackendClient(self.url, token)
        try:
            client.health()
            return token  # started elsewhere: use it, do not own it
        except BackendError:
            pass
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen([executable_path(self.executable), "serve", "--port", str(self.port)],
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


class Connection:
    """The outcome of one connect, for whoever needs its backend: an edit started while the local
    backend is still starting waits here (``client``) rather than failing. Thread-safe."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self.error: Optional[str] = None
        self._client: Optional[BackendClient] = None
        self._done = threading.Event()

    def resolve(self, client: BackendClient) -> None:
        """The backend answered (ignored once the connect has ended otherwise, e.g. cancelled)."""
        if not self.done:
            self._client = client
            self._done.set()

    def fail(self, error: str) -> None:
        if not self.done:
            self.error = error
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def failed(self) -> bool:
        return self.done and self._client is None

    def client(self, is_canceled: Callable[[], bool] = lambda: False, wait: float = START_WAIT + 60) -> BackendClient:
        """The connected backend's client, once the connect ends. Blocking: call it from a worker
        thread. Raises BackendError with the reason the connect failed."""
        deadline = time.monotonic() + wait
        while not self._done.wait(0.1):
            if is_canceled():
                raise BackendError("cancelled while the backend was starting")
            if time.monotonic() > deadline:
                raise BackendError(f"the backend did not answer within {wait:.0f} s of the connect")
        if self._client is None:
            raise BackendError(self.error or "connection cancelled")
        return self._client


class ConnectTask(QgsTask):
    """Starts the local service if asked (``local``), then reads its health and recent jobs.
    Results (``url``, ``health``, ``jobs``, ``error``) are read on the main thread; ``connection``
    gives the backend's client to tasks that wait for it."""

    def __init__(self, settings: BackendSettings, local: Optional[LocalBackend] = None, recent: int = 20):
        super().__init__("rs-geo-edit: connecting to the backend", QgsTask.CanCancel)
        self.settings, self.local, self.recent = settings, local, recent
        self.url = settings.url
        self.connection = Connection(settings)
        self.health: dict = {}
        self.jobs: list[Job] = []
        self.error: Optional[str] = None

    def run(self) -> bool:  # worker thread
        try:
            token = None
            if self.local is not None:
                token = self.local.start(should_stop=self.isCanceled)
                self.url = self.local.url
            client = client_for(dataclasses.replace(self.settings, url=self.url), token)
            self.health = client.health()
            self.jobs = client.jobs(self.recent)
        except (BackendError, OSError, subprocess.SubprocessError) as exc:
            self.error = str(exc)
            self.connection.fail(self.error)
            return False
        self.connection.resolve(client)
        return True

    def cancel(self) -> None:
        self.connection.fail("connection cancelled")
        super().cancel()

"""Installing the backend from inside QGIS: a virtual environment, pip, and a check that the
installed ``rs-geo-edit`` runs, so that an analyst never opens a terminal.

QGIS's own ``sys.executable`` is the QGIS binary on Linux and Windows, not a Python, so the
interpreter is a setting (python3 on PATH by default). Every step runs in ``InstallTask`` and
reports its output line by line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .entities import DEFAULT_PACKAGE, InstallSpec

MIN_PYTHON = (3, 10)


class InstallError(Exception):
    """A step of the installation failed; the message says which and what to do."""


def default_python() -> str:
    return shutil.which("python3") or shutil.which("python") or ""


def default_folder() -> Path:
    """A folder of the current QGIS profile, so each profile can have its own backend."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "rs-geo-edit" / "venv"


def venv_executable(folder: Path, name: str) -> Path:
    scripts = folder / ("Scripts" if os.name == "nt" else "bin")
    return scripts / (f"{name}.exe" if os.name == "nt" else name)


def install(spec: InstallSpec, log: Callable[[str], None], should_stop: Callable[[], bool] = lambda: False) -> Path:
    """Create (or reuse) the environment, pip-install the backend into it, check that it runs, and
    return the path of its ``rs-geo-edit``. Blocking (minutes): call it from a worker thread."""
    python = shutil.which(spec.python) or spec.python
    if not python or not os.path.isfile(python):
        raise InstallError(f"Python interpreter {spec.python!r} not found: set the path of a python3 "
                           f"({'.'.join(map(str, MIN_PYTHON))} or newer) in the installer's settings")
    version = _run([python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], log, should_stop)
    found = tuple(int(part) for part in version.strip().splitlines()[-1].split("."))
    if found < MIN_PYTHON:
        raise InstallError(f"{python} is Python {'.'.join(map(str, found))}; the backend needs "
                           f"{'.'.join(map(str, MIN_PYTHON))} or newer: choose another interpreter")
    folder = Path(spec.folder).expanduser()
    if (folder / "pyvenv.cfg").is_file():
        log(f"reusing the environment in {folder}")
    elif folder.exists() and any(folder.iterdir()):
        raise InstallError(f"{folder} is not empty and not a virtual environment: choose a new or empty folder "
                           "(nothing in it was touched)")
    else:
        log(f"creating a virtual environment in {folder}")
        _run([python, "-m", "venv", *(["--system-site-packages"] if spec.system_site_packages else []), str(folder)],
             log, should_stop)
    package = spec.package.strip() or DEFAULT_PACKAGE
    with tempfile.TemporaryDirectory(prefix="rs-geo-edit-install-") as scratch:
        source = Path(package).expanduser()
        if source.is_dir():  # a copy: building writes build/ and *.egg-info, never into the user's folder
            package = shutil.copytree(source, Path(scratch) / source.name,
                                      ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".git"))
        elif source.exists():  # a wheel, wherever QGIS was started from
            package = source.resolve()
        pip = [str(venv_executable(folder, "python")), "-m", "pip", "install", "--disable-pip-version-check",
               "--progress-bar", "off", *spec.pip_args, str(package)]
        log("installing: " + " ".join(pip[3:]))
        _run(pip, log, should_stop)
    exe = venv_executable(folder, "rs-geo-edit")
    log(_run([str(exe), "--version"], log, should_stop).strip())
    return exe


def _run(command: list, log: Callable[[str], None], should_stop: Callable[[], bool]) -> str:
    """Run ``command``, logging its output line by line; its output, or InstallError on failure."""
    # QGIS on Windows and macOS points PYTHONHOME at its own Python, which breaks any other one.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONHOME"}
    env["PIP_NO_INPUT"] = "1"
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", env=env)
    except OSError as exc:
        raise InstallError(f"cannot run {command[0]}: {exc}") from None
    lines = []
    with process:
        for line in process.stdout:
            lines.append(line)
            log(line.rstrip())
            if should_stop():
                process.terminate()
                raise InstallError("installation cancelled")
    if process.returncode != 0:
        raise InstallError(f"'{' '.join(map(str, command[:4]))} ...' failed with exit code {process.returncode}; "
                           "the log above says why")
    return "".join(lines)


class InstallTask(QgsTask):
    """``install`` in QGIS's task manager; ``logged`` carries each output line to the main thread and
    ``executable`` holds the installed ``rs-geo-edit`` once it succeeded."""

    logged = pyqtSignal(str)

    def __init__(self, spec: InstallSpec):
        super().__init__("rs-geo-edit: installing the backend", QgsTask.CanCancel)
        self.spec = spec
        self.executable = None
        self.error = None

    def run(self) -> bool:  # worker thread
        try:
            self.executable = install(self.spec, self.logged.emit, self.isCanceled)
        except InstallError as exc:
            self.error = str(exc)
            return False
        return True

"""The plugin's stored choices (backend and installer), over an injected key-value store. Qt-free:
QGIS gives it a QgsSettings store, tests a dict. No secret is stored here: a remote server's
credentials are the id of a QGIS authentication configuration (``authcfg``); a local backend's
token is read from the backend at each connect."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import BackendError
from .entities import DEFAULT_PACKAGE, InstallSpec


class Store(Protocol):
    """What the preferences need of a store; QgsSettings's own two methods."""

    def value(self, key: str, default: Any = None) -> Any: ...

    def setValue(self, key: str, value: Any) -> None: ...  # noqa: N802 (QgsSettings's name)

    def remove(self, key: str) -> None: ...


class MemoryStore:
    """A store in a dict (tests, and anything run outside QGIS)."""

    def __init__(self, values: dict | None = None):
        self.values = dict(values or {})

    def value(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802
        self.values[key] = value

    def remove(self, key: str) -> None:
        self.values.pop(key, None)


@dataclass(frozen=True)
class BackendSettings:
    url: str = "http://127.0.0.1:8765"
    authcfg: str = ""       # a remote server's credentials: a QGIS authentication configuration id
    executable: str = "rs-geo-edit"
    autostart: bool = False
    remote: bool = False    # a server that cannot read this machine's files: the windows are uploaded

    @property
    def starts_local(self) -> bool:
        return self.autostart and not self.remote

    @property
    def port(self) -> int:
        try:
            return int(self.url.rstrip("/").rsplit(":", 1)[-1])
        except ValueError:
            raise BackendError(f"backend URL {self.url!r} has no port: use e.g. http://127.0.0.1:8765") from None


class Preferences:
    """Reads and writes the backend settings and the installer's spec; flags are stored as
    "true"/"false", as QgsSettings writes them."""

    def __init__(self, store: Store):
        self.store = store

    def _flag(self, key: str) -> bool:
        return self.store.value(key, "false") in (True, "true")

    def _set_flag(self, key: str, value: bool) -> None:
        self.store.setValue(key, "true" if value else "false")

    def backend(self) -> BackendSettings:
        return BackendSettings(url=self.store.value("url", BackendSettings.url),
                               authcfg=self.store.value("authcfg", ""),
                               executable=self.store.value("executable", BackendSettings.executable),
                               autostart=self._flag("autostart"), remote=self._flag("remote"))

    def save_backend(self, settings: BackendSettings) -> BackendSettings:
        for key in ("url", "authcfg", "executable"):
            self.store.setValue(key, getattr(settings, key))
        self._set_flag("autostart", settings.autostart)
        self._set_flag("remote", settings.remote)
        return settings

    def plain_token(self) -> str:
        """A token that earlier versions kept in the settings in plain text ("" when none)."""
        return str(self.store.value("token", "") or "")

    def forget_plain_token(self) -> None:
        self.store.remove("token")

    def install(self, default_folder: Path, default_python: str) -> InstallSpec:
        """The last spec installed, with the given defaults for what was never set."""
        return InstallSpec(folder=self.store.value("install_folder", str(default_folder)),
                           python=self.store.value("install_python", default_python),
                           package=self.store.value("install_package", DEFAULT_PACKAGE),
                           pip_args=tuple(self.store.value("install_pip_args", "").split()),
                           system_site_packages=self._flag("install_system"))

    def save_install(self, spec: InstallSpec) -> None:
        self.store.setValue("install_folder", str(spec.folder))
        self.store.setValue("install_python", spec.python)
        self.store.setValue("install_package", spec.package)
        self.store.setValue("install_pip_args", " ".join(spec.pip_args))
        self._set_flag("install_system", spec.system_site_packages)

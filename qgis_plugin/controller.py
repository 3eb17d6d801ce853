"""The controller: wires the dock's intents to the services and the services' reports to the
dock's intent-named methods and QGIS's message bar. It holds no state of its own: the services
own the tasks, the preferences and the remote-job registry; only the dock touches its widgets."""

from __future__ import annotations

from typing import Optional

from qgis.core import Qgis

from .compare import CompareService
from .connection import ConnectionService
from .credentials import CredentialsError, migrate_plain_token, store_token
from .drawing import DrawnRois
from .editing import EditService
from .installer import default_folder, default_python
from .installing import InstallService
from .preferences import BackendSettings, Preferences
from .remote_jobs import RemoteJobs
from .settings import QgsSettingsStore


class EditController:
    def __init__(self, iface, dock, store=None):
        """``store``: where preferences and remote jobs are kept (QgsSettings by default)."""
        self.iface, self.dock = iface, dock
        store = store if store is not None else QgsSettingsStore()
        self.preferences = Preferences(store)
        self.drawing = DrawnRois(iface.mapCanvas())
        self.connection = ConnectionService()
        self.installer = InstallService(self.preferences)
        self.editing = EditService(RemoteJobs(store), self.drawing.layer, self.backend_settings, self.connection)
        self.compare = CompareService(iface.mapCanvas())
        self._migrate_token()
        dock.show_backend_settings(self.preferences.backend())
        dock.show_install_spec(self.preferences.install(default_folder(), default_python()))
        self._wire_drawing()
        self._wire_connection()
        self._wire_install()
        self._wire_editing()
        self._wire_compare()

    def _migrate_token(self) -> None:
        """A token earlier versions kept in the settings goes into QGIS's authentication database."""
        try:
            moved = migrate_plain_token(self.preferences)
        except CredentialsError as exc:
            self.notify(f"the remote server's token is still in the plugin's settings: {exc}", Qgis.Warning)
            return
        if moved:
            self.notify(moved)

    def _wire_drawing(self) -> None:
        self.dock.drawRequested.connect(self.dock.choose_drawn_rois)
        self.dock.drawRequested.connect(self.drawing.start)
        self.drawing.tool.polygonFinished.connect(
            lambda geometry: self.drawing.add(geometry, self.dock.edit_form().prompt))

    def _wire_connection(self) -> None:
        dock, connection = self.dock, self.connection
        dock.connectRequested.connect(lambda: self.connect())
        dock.diagnosticsRequested.connect(self.copy_diagnostics)
        dock.storeTokenRequested.connect(lambda: self.store_token())
        connection.connecting.connect(lambda local: dock.set_connecting(True, local))
        connection.finished.connect(lambda: dock.set_connecting(False))
        connection.unavailable.connect(dock.show_backend_error)
        connection.message.connect(self.notify)
        connection.address.connect(dock.show_backend_address)
        connection.address.connect(lambda *_: self.backend_settings())   # the answering backend is remembered
        connection.health_changed.connect(dock.show_health)
        connection.jobs_found.connect(self.editing.list_jobs)

    def _wire_install(self) -> None:
        dock, installer = self.dock, self.installer
        dock.installRequested.connect(lambda: installer.install(dock.install_spec()))
        installer.started.connect(lambda: dock.set_installing(True))
        installer.logged.connect(dock.append_install_log)
        installer.finished.connect(lambda: dock.set_installing(False))
        installer.failed.connect(dock.show_install_failed)
        installer.failed.connect(lambda error: self.notify(error, Qgis.Critical))
        installer.installed.connect(dock.show_installed)
        installer.installed.connect(lambda _: self.connection.stop_backend())
        installer.installed.connect(lambda _: self.connect())

    def _wire_editing(self) -> None:
        dock, editing = self.dock, self.editing
        dock.runRequested.connect(lambda: self.run())
        dock.cancelRequested.connect(editing.cancel)
        dock.loadRequested.connect(lambda: editing.load(dock.selected_job_id()))
        editing.running.connect(dock.set_running)
        editing.stage.connect(dock.show_stage)
        editing.progressed.connect(dock.show_job_progress)
        editing.ended.connect(dock.show_job_ended)
        editing.listed.connect(dock.show_jobs)
        editing.job_changed.connect(dock.put_job)
        editing.message.connect(self.notify)

    def _wire_compare(self) -> None:
        self.editing.loaded.connect(self.compare.set_result)
        self.compare.available.connect(self.dock.set_compare_available)
        self.dock.compareToggled.connect(self.compare.show_source)

    # ---------------------------------------------------------------------------------- slots
    def notify(self, text: str, level=Qgis.Info) -> None:
        self.iface.messageBar().pushMessage("rs-geo-edit", text, level=level, duration=8)

    def backend_settings(self) -> BackendSettings:
        """The dock's backend settings, remembered as they are used."""
        return self.preferences.save_backend(self.dock.backend_settings())

    def connect(self):
        """Start the local backend if asked, then show its health and recent jobs: all in a task."""
        return self.connection.connect_to(self.backend_settings())

    def store_token(self) -> Optional[str]:
        """The token pasted in the dock becomes an authentication configuration, chosen for the server."""
        url = self.dock.backend_settings().url
        try:
            authcfg = store_token(url, self.dock.token_text())
        except CredentialsError as exc:
            self.notify(str(exc), Qgis.Warning)
            return None
        self.dock.show_credentials(authcfg)
        self.backend_settings()
        self.notify(f"the token of {url} is stored in QGIS's authentication database (id {authcfg})")
        return authcfg

    def run(self, options: Optional[dict] = None):
        """Submit the dock's edit (with job ``options``, e.g. {"steps": 500}) and follow it in a task;
        without a connection for the dock's settings, connect first (the task waits for it)."""
        return self.editing.run(self.dock.edit_form(), options)

    def copy_diagnostics(self) -> str:
        """Plugin, QGIS and backend details (from the last Connect) on the clipboard."""
        text = self.connection.diagnostics(self.dock.backend_settings().url, self.dock.backend_status())
        self.dock.put_on_clipboard(text)
        return text

    def stop_backend(self) -> None:
        self.connection.stop_backend()

    def unload(self) -> None:
        """QGIS closes or the plugin is unloaded: a running edit stays on the backend (listed on the
        next Connect), the other tasks stop."""
        self.editing.close()
        self.installer.close()
        self.connection.close()
        self.drawing.close()
        self.compare.close()

    # ------------------------------------------------- the services' state, as tests and QGIS read it
    @property
    def tool(self):
        return self.drawing.tool

    @property
    def roi_layer(self):
        return self.drawing.roi_layer

    @roi_layer.setter
    def roi_layer(self, layer) -> None:
        self.drawing.roi_layer = layer

    @property
    def task(self):
        return self.editing.task

    @property
    def connect_task(self):
        return self.connection.task

    @property
    def install_task(self):
        return self.installer.task

    @property
    def local(self):
        return self.connection.local

    @property
    def health(self) -> dict:
        return self.connection.health

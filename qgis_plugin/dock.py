"""The dock: widgets only, and the only module that touches them. It says what the analyst asks
for through intent signals (``runRequested``, ...), hands out its forms' values and shows what it
is given through intent-named methods (``show_stage``, ``show_backend_error``, ...); it makes no
requests, starts no tasks and touches no project layers."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Iterable, Optional

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsAuthConfigSelect, QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (QApplication, QCheckBox, QComboBox, QDockWidget, QFormLayout, QHBoxLayout, QLabel,
                                 QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton,
                                 QScrollArea, QSizePolicy, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from .entities import EditForm, InstallSpec, Job
from .preferences import BackendSettings
from .settings import MODES, PRESETS

JOB_ID = Qt.UserRole
JOB_LOADABLE = Qt.UserRole + 1
HELP_FILE = Path(__file__).with_name("help.html")
COMBO_CHARACTERS = 10   # a combo box may shrink to this many characters: the dock stays narrow


def _form(parent=None) -> QFormLayout:
    """A form whose labels go above their fields when the dock is too narrow for both on one line."""
    form = QFormLayout(parent)
    form.setRowWrapPolicy(QFormLayout.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    form.setContentsMargins(4, 4, 4, 4)
    return form


def _narrow(combo: QComboBox) -> QComboBox:
    """A combo box that does not widen the dock to its longest item."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(COMBO_CHARACTERS)
    combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    return combo


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setSpacing(4)
    for widget in widgets:
        row.addWidget(widget)
    return row


class EditDock(QDockWidget):
    drawRequested = pyqtSignal()
    runRequested = pyqtSignal()
    cancelRequested = pyqtSignal()
    connectRequested = pyqtSignal()
    loadRequested = pyqtSignal()
    diagnosticsRequested = pyqtSignal()
    installRequested = pyqtSignal()
    storeTokenRequested = pyqtSignal()
    compareToggled = pyqtSignal(bool)     # True: show the source where the result is

    def __init__(self, parent=None):
        super().__init__("rs-geo-edit", parent)
        self.setObjectName("RsGeoEditDock")
        root = QWidget()
        layout = QVBoxLayout(root)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self._edit_box())
        layout.addLayout(self._run_row())
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        layout.addLayout(_row(self.progress, self.compare_button))
        self.stage = QLabel("idle")
        self.stage.setWordWrap(True)
        layout.addWidget(self.stage)
        layout.addWidget(self._jobs_box())
        layout.addWidget(self._backend_box())
        layout.addWidget(self._install_box())
        layout.addStretch(1)
        self.scroll = QScrollArea()  # the whole form stays reachable on a small screen
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.NoFrame)
        self.scroll.setWidget(root)
        self.setWidget(self.scroll)
        for button, intent in ((self.draw, self.drawRequested), (self.run_button, self.runRequested),
                               (self.cancel_button, self.cancelRequested),
                               (self.connect_button, self.connectRequested), (self.load_button, self.loadRequested),
                               (self.diagnostics_button, self.diagnosticsRequested),
                               (self.install_button, self.installRequested),
                               (self.store_token_button, self.storeTokenRequested)):
            button.clicked.connect(lambda _=False, intent=intent: intent.emit())
        self.compare_button.toggled.connect(self.compareToggled)
        self.help_button.clicked.connect(self.open_help)

    # ---------------------------------------------------------------------------------- layout
    def _edit_box(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Edit")
        form = _form(box)
        self.raster = _narrow(QgsMapLayerComboBox())
        self.raster.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Raster", self.raster)
        self.roi_source = _narrow(QComboBox())
        self.roi_source.addItems(["Drawn ROIs", "Polygon layer"])
        form.addRow("ROIs", self.roi_source)
        self.roi_layer_combo = _narrow(QgsMapLayerComboBox())
        self.roi_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        form.addRow("ROI layer", self.roi_layer_combo)
        self.selected_only = QCheckBox("selected only")
        self.selected_only.setToolTip("Edit only the selected features of the ROI layer")
        self.draw = QPushButton("Draw ROI")
        self.draw.setToolTip("Left click: add a vertex; right click: finish; Esc: cancel")
        form.addRow("", self.selected_only)
        form.addRow(self.draw)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("e.g. dense forest")
        self.prompt.setToolTip("What should be in the ROIs; an ROI's own 'prompt' attribute takes precedence")
        form.addRow("Prompt", self.prompt)
        self.mode = _narrow(QComboBox())
        self.mode.addItems(MODES)
        form.addRow("Mode", self.mode)
        self.preset = _narrow(QComboBox())
        self.preset.addItems(PRESETS)
        form.addRow("Preset", self.preset)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2 ** 31 - 1)
        form.addRow("Seed", self.seed)
        return box

    def _run_row(self) -> QHBoxLayout:
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.compare_button = QPushButton("Show source")
        self.compare_button.setCheckable(True)
        self.compare_button.setEnabled(False)
        self.compare_button.setToolTip("Flip the map between the source and the last result, zoomed to the ROIs")
        return _row(self.run_button, self.cancel_button)

    def _jobs_box(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Jobs")
        layout = QVBoxLayout(box)
        layout.setContentsMargins(4, 4, 4, 4)
        self.history = QListWidget()
        self.history.setToolTip("The backend's recent jobs (listed on Connect). A finished job whose result "
                                "is not in the project can be loaded.")
        self.history.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.history.setTextElideMode(Qt.ElideRight)
        self.history.setMaximumHeight(120)
        layout.addWidget(self.history)
        self.load_button = QPushButton("Load result")
        self.load_button.setEnabled(False)
        self.history.currentItemChanged.connect(self._on_job_selected)
        layout.addWidget(self.load_button)
        return box

    def _backend_box(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Backend")
        form = self.backend_form = _form(box)
        self.where = _narrow(QComboBox())
        self.where.addItems(["local (this machine)", "remote server"])
        self.where.setToolTip("local: the backend reads the scene from its file. Remote: a server (e.g. a GPU "
                              "machine) that cannot see your files; only the windows around the ROIs are "
                              "uploaded and the result is written here.")
        self.where.currentIndexChanged.connect(self._on_where)
        form.addRow("Runs on", self.where)
        self.url = QLineEdit()
        form.addRow("URL", self.url)
        self.credentials = QgsAuthConfigSelect()
        self.credentials.setToolTip("The remote server's token, kept in QGIS's authentication database")
        form.addRow("Auth", self.credentials)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("server's token")
        self.token.setToolTip("Paste the server's token (rs-geo-edit serve --print-token there) and press Store: "
                              "it becomes an authentication configuration, not a setting")
        self.store_token_button = QPushButton("Store")
        self.token_row = QWidget()
        row = _row(self.token, self.store_token_button)
        row.setContentsMargins(0, 0, 0, 0)
        self.token_row.setLayout(row)
        form.addRow("Token", self.token_row)
        self.exe = QLineEdit()
        self.exe.setToolTip("The rs-geo-edit executable, e.g. ~/rs-geo-edit/.venv/bin/rs-geo-edit; the local "
                            "backend's token is read from it at each connect")
        form.addRow("Program", self.exe)
        self.autostart = QCheckBox("start it")
        self.autostart.setToolTip("Start the local backend on Connect (or on Run) when it is not running")
        form.addRow("", self.autostart)
        self.connect_button = QPushButton("Connect")
        self.diagnostics_button = QPushButton("Diagnostics")
        self.diagnostics_button.setToolTip("Copy plugin, QGIS and backend details to the clipboard")
        self.help_button = QToolButton()
        self.help_button.setText("?")
        self.help_button.setToolTip("Help")
        form.addRow(_row(self.connect_button, self.diagnostics_button, self.help_button))
        self.health = QLabel("not connected")
        self.health.setWordWrap(True)
        form.addRow(self.health)
        return box

    def _install_box(self) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Install backend")
        box.setCollapsed(True)
        form = _form(box)
        self.install_folder = QgsFileWidget()
        self.install_folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.install_folder.setToolTip("A new or empty folder for the backend's virtual environment")
        self.install_python = QgsFileWidget()
        self.install_python.setToolTip("A python3 (3.10 or newer) to build the environment with, e.g. /usr/bin/python3")
        self.install_package = QLineEdit()
        self.install_package.setToolTip("rs-geo-edit (from the package index), a wheel file or a source folder")
        self.install_pip_args = QLineEdit()
        self.install_pip_args.setToolTip("Extra pip arguments, e.g. --index-url https://example.org/simple")
        self.install_system = QCheckBox("system packages")
        self.install_system.setToolTip("Let the environment use the interpreter's packages (e.g. an installed torch)")
        form.addRow("Folder", self.install_folder)
        form.addRow("Python", self.install_python)
        form.addRow("Package", self.install_package)
        form.addRow("pip args", self.install_pip_args)
        form.addRow("", self.install_system)
        self.install_button = QPushButton("Install and start")
        form.addRow(self.install_button)
        self.install_log = QPlainTextEdit()
        self.install_log.setReadOnly(True)
        self.install_log.setMaximumBlockCount(2000)
        self.install_log.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        form.addRow(self.install_log)
        return box

    # ---------------------------------------------------------------------------------- values
    def edit_form(self) -> EditForm:
        return EditForm(raster=self.raster.currentLayer(), drawn=self.roi_source.currentIndex() == 0,
                        roi_layer=self.roi_layer_combo.currentLayer(), selected_only=self.selected_only.isChecked(),
                        prompt=self.prompt.text().strip(), mode=self.mode.currentText(),
                        preset=self.preset.currentText(), seed=self.seed.value())

    def choose_drawn_rois(self) -> None:
        self.roi_source.setCurrentIndex(0)

    def backend_settings(self) -> BackendSettings:
        return BackendSettings(url=self.url.text().strip(), authcfg=self.credentials.configId(),
                               executable=self.exe.text().strip(), autostart=self.autostart.isChecked(),
                               remote=self.where.currentIndex() == 1)

    def show_backend_settings(self, settings: BackendSettings) -> None:
        self.url.setText(settings.url)
        self.credentials.setConfigId(settings.authcfg)
        self.exe.setText(settings.executable)
        self.autostart.setChecked(settings.autostart)
        self.where.setCurrentIndex(1 if settings.remote else 0)
        self._on_where()

    def _on_where(self, *_) -> None:
        """Show the settings of where the backend runs: a program here, or a server's credentials."""
        local = self.where.currentIndex() == 0
        for widget, shown in ((self.exe, local), (self.autostart, local), (self.credentials, not local),
                              (self.token_row, not local)):
            widget.setVisible(shown)
            widget.setEnabled(shown)
            label = self.backend_form.labelForField(widget)
            if label is not None:
                label.setVisible(shown)

    def token_text(self) -> str:
        return self.token.text().strip()

    def show_credentials(self, authcfg: str) -> None:
        """A newly stored token: its configuration is chosen, the pasted token cleared."""
        self.credentials.setConfigId(authcfg)
        self.token.clear()

    def install_spec(self) -> InstallSpec:
        return InstallSpec(folder=self.install_folder.filePath().strip(), python=self.install_python.filePath().strip(),
                           package=self.install_package.text().strip(),
                           pip_args=tuple(self.install_pip_args.text().split()),
                           system_site_packages=self.install_system.isChecked())

    def show_install_spec(self, spec: InstallSpec) -> None:
        self.install_folder.setFilePath(str(spec.folder))
        self.install_python.setFilePath(spec.python)
        self.install_package.setText(spec.package)
        self.install_pip_args.setText(" ".join(spec.pip_args))
        self.install_system.setChecked(spec.system_site_packages)

    # ---------------------------------------------------------------------------------- backend
    def set_connecting(self, connecting: bool, starting_local: bool = False) -> None:
        self.connect_button.setEnabled(not connecting)
        if connecting:
            self.health.setText("starting the local backend ..." if starting_local else "connecting ...")

    def show_backend_error(self, error: str) -> None:
        self.health.setText(f"backend unavailable: {error}")

    def show_backend_address(self, url: str) -> None:
        """The backend that answered (a started local one may be on another address)."""
        self.url.setText(url)

    def backend_status(self) -> str:
        return self.health.text()

    def put_on_clipboard(self, text: str) -> None:
        QApplication.clipboard().setText(text)

    def open_help(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(HELP_FILE)))

    # ---------------------------------------------------------------------------------- install
    def set_installing(self, installing: bool) -> None:
        """Installing starts on a clear log; the button waits for the end."""
        self.install_button.setEnabled(not installing)
        if installing:
            self.install_log.clear()

    def append_install_log(self, line: str) -> None:
        self.install_log.appendPlainText(line)

    def show_install_failed(self, error: str) -> None:
        self.install_log.appendPlainText(f"failed: {error}")

    def show_installed(self, executable: str) -> None:
        """The new backend becomes the one to start."""
        self.install_log.appendPlainText(f"installed {executable}; starting it")
        self.exe.setText(executable)
        self.autostart.setChecked(True)

    # ---------------------------------------------------------------------------------- edit
    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def set_compare_available(self, available: bool) -> None:
        """A result to compare with its source is in the project, or no longer."""
        self.compare_button.setEnabled(available)
        self.compare_button.setChecked(False)

    def show_stage(self, text: str) -> None:
        self.stage.setText(text)

    def show_job_progress(self, job: Optional[Job]) -> None:
        if job is None:
            return
        self.progress.setValue(int(100 * job.progress))
        eta = f", ETA {job.eta_s:.0f} s" if job.eta_s else ""
        self.stage.setText(f"{job.stage}: {job.message}{eta}")

    def show_job_ended(self, state: str, error: str = "") -> None:
        """``state``: done, cancelled or failed (with its ``error``)."""
        if state == "done":
            self.progress.setValue(100)
            self.stage.setText("done")
        else:
            self.stage.setText("cancelled" if state == "cancelled" else f"failed: {error}")

    # ---------------------------------------------------------------------------------- jobs
    def show_health(self, info: dict) -> None:
        device = info.get("cuda_name") or info.get("device")
        weights = ", ".join(info.get("clip_weights") or []) or "none"
        self.health.setText(f"rs-geo-edit {info.get('version')} on {device}; CLIP weights: {weights}; "
                            f"queue {info.get('queue_length')}")

    def show_jobs(self, jobs: Iterable[Job], loadable: Iterable[str]) -> None:
        """List ``jobs`` (newest first); ``loadable``: ids of finished jobs whose result is not loaded."""
        loadable = set(loadable)
        self.history.clear()
        for job in jobs:
            self.history.addItem(self._job_item(job, job.id in loadable))
        self._on_job_selected(self.history.currentItem())

    def put_job(self, job: Job, loadable: bool = False) -> None:
        """Show ``job`` in place of its earlier line, or first when it is new."""
        for row in range(self.history.count()):
            if self.history.item(row).data(JOB_ID) == job.id:
                self.history.takeItem(row)
                self.history.insertItem(row, self._job_item(job, loadable))
                break
        else:
            self.history.insertItem(0, self._job_item(job, loadable))
        self._on_job_selected(self.history.currentItem())

    def select_job(self, job_id: str) -> None:
        for row in range(self.history.count()):
            if self.history.item(row).data(JOB_ID) == job_id:
                self.history.setCurrentRow(row)

    def selected_job_id(self) -> Optional[str]:
        item = self.history.currentItem()
        return item.data(JOB_ID) if item is not None else None

    @staticmethod
    def _job_item(job: Job, loadable: bool) -> QListWidgetItem:
        created = datetime.datetime.fromtimestamp(job.created) if job.created else None
        when = "" if created is None else created.strftime(
            "%H:%M" if created.date() == datetime.date.today() else "%Y-%m-%d %H:%M")
        state = f"{job.state} {100 * job.progress:.0f}%" if job.state == "running" else job.state
        hint = " · result not loaded" if loadable and job.state == "done" else ""
        item = QListWidgetItem(f"{job.title} · {state} · {when}{hint}")
        item.setData(JOB_ID, job.id)
        item.setData(JOB_LOADABLE, loadable)
        item.setToolTip("\n".join(filter(None, (f"job {job.id}", job.scene, job.output, job.error))))
        return item

    def _on_job_selected(self, item) -> None:
        self.load_button.setEnabled(bool(item is not None and item.data(JOB_LOADABLE)))

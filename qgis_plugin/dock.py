"""The dock widget: raster, ROIs (drawn or from a layer), prompt, mode, preset, seed, Run,
progress, Cancel, job history, backend settings and health, diagnostics."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransform, QgsMapLayerProxyModel, QgsProject,
                       QgsRasterLayer)
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (QApplication, QCheckBox, QComboBox, QDockWidget, QFormLayout, QGroupBox,
                                 QHBoxLayout, QLabel, QLineEdit, QListWidget, QProgressBar, QPushButton,
                                 QSpinBox, QVBoxLayout, QWidget)

from .client import BackendClient, BackendError, LocalBackend
from .maptool import PolygonTool, add_polygon
from .rois import rois_geojson, scratch_layer
from .settings import MODES, PRESETS, set_setting, setting
from .task import EditTask


class EditDock(QDockWidget):
    def __init__(self, iface, parent=None):
        super().__init__("rs-geo-edit", parent)
        self.setObjectName("RsGeoEditDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.backend = None
        self.task = None
        self.roi_layer = None
        self.tool = PolygonTool(self.canvas)
        self.tool.polygonFinished.connect(self.on_polygon)
        self._build()

    # ---------------------------------------------------------------------------------- layout
    def _build(self) -> None:
        root = QWidget()
        layout = QVBoxLayout(root)
        form = QFormLayout()
        self.raster = QgsMapLayerComboBox()
        self.raster.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Raster", self.raster)
        self.roi_source = QComboBox()
        self.roi_source.addItems(["Drawn ROIs", "Polygon layer"])
        form.addRow("ROIs", self.roi_source)
        self.roi_layer_combo = QgsMapLayerComboBox()
        self.roi_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        form.addRow("ROI layer", self.roi_layer_combo)
        self.selected_only = QCheckBox("selected features only")
        form.addRow("", self.selected_only)
        draw_row = QHBoxLayout()
        self.draw = QPushButton("Draw ROI")
        self.draw.setToolTip("Left click: add a vertex; right click: finish; Esc: cancel")
        self.draw.clicked.connect(self.start_drawing)
        draw_row.addWidget(self.draw)
        form.addRow("", draw_row)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("e.g. dense forest (ROIs' own 'prompt' attributes take precedence)")
        form.addRow("Prompt", self.prompt)
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        form.addRow("Mode", self.mode)
        self.preset = QComboBox()
        self.preset.addItems(PRESETS)
        form.addRow("Preset", self.preset)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2 ** 31 - 1)
        form.addRow("Seed", self.seed)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        layout.addWidget(self.progress)
        self.stage = QLabel("idle")
        self.stage.setWordWrap(True)
        layout.addWidget(self.stage)
        layout.addWidget(QLabel("Jobs"))
        self.history = QListWidget()
        layout.addWidget(self.history)
        box = QGroupBox("Backend")
        bform = QFormLayout(box)
        self.url = QLineEdit(setting("url", "http://127.0.0.1:8765"))
        self.token = QLineEdit(setting("token", ""))
        self.token.setEchoMode(QLineEdit.Password)
        self.exe = QLineEdit(setting("executable", "rs-geo-edit"))
        self.autostart = QCheckBox("start the local backend")
        self.autostart.setChecked(setting("autostart", "false") in (True, "true"))
        bform.addRow("URL", self.url)
        bform.addRow("Token", self.token)
        bform.addRow("Executable", self.exe)
        bform.addRow("", self.autostart)
        row = QHBoxLayout()
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(self.connect_backend)
        self.diagnostics_button = QPushButton("Copy diagnostics")
        self.diagnostics_button.clicked.connect(self.copy_diagnostics)
        row.addWidget(self.connect_button)
        row.addWidget(self.diagnostics_button)
        bform.addRow(row)
        self.health = QLabel("not connected")
        self.health.setWordWrap(True)
        bform.addRow(self.health)
        layout.addWidget(box)
        layout.addStretch(1)
        self.setWidget(root)

    # ---------------------------------------------------------------------------------- backend
    def save_settings(self) -> None:
        set_setting("url", self.url.text().strip())
        set_setting("token", self.token.text().strip())
        set_setting("executable", self.exe.text().strip())
        set_setting("autostart", "true" if self.autostart.isChecked() else "false")

    def client(self) -> BackendClient:
        self.save_settings()
        return BackendClient(self.url.text().strip(), self.token.text().strip())

    def connect_backend(self) -> dict:
        """Start the local backend if asked, then show its health line."""
        try:
            if self.autostart.isChecked() and self.backend is None:
                port = int(self.url.text().rsplit(":", 1)[-1].strip("/") or 8765)
                self.backend = LocalBackend(self.exe.text().strip(), port)
                self.token.setText(self.backend.start())
                self.url.setText(self.backend.url)
            info = self.client().health()
        except (BackendError, ValueError) as exc:
            self.health.setText(f"backend unavailable: {exc}")
            self.message(str(exc), Qgis.Warning)
            return {}
        device = info.get("cuda_name") or info.get("device")
        weights = ", ".join(info.get("clip_weights") or []) or "none"
        self.health.setText(f"rs-geo-edit {info.get('version')} on {device}; CLIP weights: {weights}; "
                            f"queue {info.get('queue_length')}")
        return info

    def stop_backend(self) -> None:
        if self.backend is not None:
            self.backend.stop()
            self.backend = None

    def copy_diagnostics(self) -> str:
        try:
            health = self.client().health()
        except BackendError as exc:
            health = {"error": str(exc)}
        from . import __file__ as plugin_file

        metadata = Path(plugin_file).with_name("metadata.txt")
        version = next((line.split("=", 1)[1].strip() for line in metadata.read_text().splitlines()
                        if line.startswith("version=")), "?") if metadata.exists() else "?"
        text = json.dumps({"plugin": version, "qgis": Qgis.QGIS_VERSION, "python": platform.python_version(),
                           "platform": platform.platform(), "backend_url": self.url.text(), "backend": health},
                          indent=2)
        QApplication.clipboard().setText(text)
        return text

    def message(self, text: str, level=Qgis.Info) -> None:
        self.iface.messageBar().pushMessage("rs-geo-edit", text, level=level, duration=8)

    # ---------------------------------------------------------------------------------- ROIs
    def drawn_layer(self):
        if self.roi_layer is None or not QgsProject.instance().mapLayer(self.roi_layer.id()):
            crs = QgsProject.instance().crs()
            self.roi_layer = scratch_layer(crs)
            QgsProject.instance().addMapLayer(self.roi_layer)
        return self.roi_layer

    def start_drawing(self) -> None:
        self.roi_source.setCurrentIndex(0)
        self.canvas.setMapTool(self.tool)

    def on_polygon(self, geometry) -> None:
        """A polygon drawn in map coordinates, stored in the scratch layer's CRS."""
        layer = self.drawn_layer()
        map_crs = self.canvas.mapSettings().destinationCrs()
        if map_crs != layer.crs():
            geometry.transform(QgsCoordinateTransform(map_crs, layer.crs(), QgsProject.instance()))
        add_polygon(layer, geometry, self.prompt.text().strip())

    # ---------------------------------------------------------------------------------- jobs
    def build_request(self) -> dict:
        raster = self.raster.currentLayer()
        if not isinstance(raster, QgsRasterLayer) or not os.path.isfile(raster.source().split("|")[0]):
            raise ValueError("choose a raster layer stored in a file (GeoTIFF)")
        if self.roi_source.currentIndex() == 0:
            layer, selected = self.drawn_layer(), False
        else:
            layer, selected = self.roi_layer_combo.currentLayer(), self.selected_only.isChecked()
            if layer is None:
                raise ValueError("choose a polygon layer of ROIs")
        prompt = self.prompt.text().strip() or None
        aoi = rois_geojson(layer, selected, default_prompt=prompt)
        source = Path(raster.source().split("|")[0])
        tag = (prompt or self.mode.currentText()).replace(" ", "_")[:40]
        output = source.with_name(f"{source.stem}_{tag}_{self.seed.value()}.tif")
        if output.exists():
            output = Path(tempfile.mkstemp(prefix=f"{source.stem}_{tag}_", suffix=".tif", dir=source.parent)[1])
            output.unlink()
        return {"scene": str(source), "aoi": aoi, "prompt": prompt, "mode": self.mode.currentText(),
                "preset": self.preset.currentText(), "seed": self.seed.value(), "output": str(output)}

    def run(self, extra_options: dict | None = None) -> EditTask | None:
        try:
            request = self.build_request()
        except ValueError as exc:
            self.message(str(exc), Qgis.Warning)
            return None
        if extra_options:
            request["options"] = dict(extra_options)
        raster = self.raster.currentLayer()
        self.task = EditTask(self.client(), request, lambda ok, job, err: self.on_finished(ok, job, err, raster))
        self.task.progressChanged.connect(self.on_progress)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.stage.setText("submitting ...")
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def on_progress(self, value: float) -> None:
        self.progress.setValue(int(value))
        job = self.task.job if self.task is not None else {}
        eta = f", ETA {job['eta_s']:.0f} s" if job.get("eta_s") else ""
        self.stage.setText(f"{job.get('stage', '')}: {job.get('message', '')}{eta}")

    def on_finished(self, ok: bool, job: dict, error, source_layer) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        name = job.get("request", {}).get("prompt") or job.get("request", {}).get("mode", "edit")
        state = job.get("state", "failed")
        self.history.insertItem(0, f"{job.get('id', '-')}  {state}  {name}")
        if ok:
            self.progress.setValue(100)
            self.stage.setText("done")
            self.add_result(job["result"]["output"], name, source_layer)
        elif state == "cancelled":
            self.stage.setText("cancelled")
            self.message("edit cancelled; nothing was written")
        else:
            self.stage.setText(f"failed: {error}")
            self.message(error or "the edit failed", Qgis.Critical)
        self.task = None

    def add_result(self, path: str, name: str, source_layer) -> QgsRasterLayer:
        """Add the output GeoTIFF just above its source layer, named after the prompt."""
        layer = QgsRasterLayer(path, f"{name} (rs-geo-edit)")
        project = QgsProject.instance()
        project.addMapLayer(layer, False)
        root = project.layerTreeRoot()
        node = root.findLayer(source_layer.id()) if source_layer is not None else None
        parent = node.parent() if node is not None else root
        index = parent.children().index(node) if node is not None else 0
        parent.insertLayer(index, layer)
        return layer

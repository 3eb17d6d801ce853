"""Processing provider: "Edit raster regions" (rs_geo_edit:edit), for the model builder, batch
mode and ``qgis_process``. It submits to the backend service and follows the job."""

from __future__ import annotations

import json
import time

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingProvider, QgsCoordinateTransform,
                       QgsCoordinateReferenceSystem)

from .client import BackendClient, BackendError
from .settings import MODES, PRESETS, setting


class EditAlgorithm(QgsProcessingAlgorithm):
    INPUT, ROIS, PROMPT, MODE, PRESET, SEED, OUTPUT = "INPUT", "ROIS", "PROMPT", "MODE", "PRESET", "SEED", "OUTPUT"

    def name(self):
        return "edit"

    def displayName(self):  # noqa: N802
        return "Edit raster regions"

    def shortHelpString(self):  # noqa: N802
        return ("Edits the ROIS of INPUT with the rs-geo-edit backend (a running 'rs-geo-edit serve'; URL and "
                "token from the plugin's settings) and writes OUTPUT, a GeoTIFF with the input's CRS and "
                "metadata. MODE text follows PROMPT (or each ROI's 'prompt' attribute). Extra job options (JSON, "
                "e.g. {\"steps\": 500}) can be set in the setting rs_geo_edit/job_options.")

    def createInstance(self):  # noqa: N802
        return EditAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(self.ROIS, "ROI polygons",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, "Prompt", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Mode", options=list(MODES), defaultValue=1))
        self.addParameter(QgsProcessingParameterEnum(self.PRESET, "Preset", options=list(PRESETS), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Seed", QgsProcessingParameterNumber.Integer, 0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Edited raster"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = self.parameterAsSource(parameters, self.ROIS, context)
        prompt = self.parameterAsString(parameters, self.PROMPT, context) or None
        mode = MODES[self.parameterAsEnum(parameters, self.MODE, context)]
        preset = PRESETS[self.parameterAsEnum(parameters, self.PRESET, context)]
        seed = self.parameterAsInt(parameters, self.SEED, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        transform = QgsCoordinateTransform(source.sourceCrs(), QgsCoordinateReferenceSystem("EPSG:4326"),
                                           context.transformContext())
        features = []
        prompt_index = source.fields().indexOf("prompt")
        for feature in source.getFeatures():
            geometry = feature.geometry()
            geometry.transform(transform)
            own = feature.attributes()[prompt_index] if prompt_index >= 0 else None
            features.append({"type": "Feature", "properties": {"prompt": own if isinstance(own, str) and own else prompt},
                             "geometry": json.loads(geometry.asJson(9))})
        if not features:
            raise QgsProcessingException("ROIS has no polygon")
        request = {"scene": raster.source().split("|")[0], "aoi": {"type": "FeatureCollection", "features": features},
                   "prompt": prompt, "mode": mode, "preset": preset, "seed": seed, "output": output,
                   "options": {"overwrite": True}}
        options = setting("job_options", "")
        if options:
            request["options"].update(json.loads(options))
        client = BackendClient(setting("url", "http://127.0.0.1:8765"), setting("token", ""))
        try:
            job = client.submit(request)
            feedback.pushInfo(f"job {job['id']} submitted to {client.url}")
            while job["state"] not in ("done", "failed", "cancelled"):
                if feedback.isCanceled():
                    client.cancel(job["id"])
                    raise QgsProcessingException("cancelled; the backend job was cancelled too")
                time.sleep(0.5)
                job = client.job(job["id"])
                feedback.setProgress(100.0 * job["progress"])
                if job.get("message"):
                    feedback.setProgressText(f"{job['stage']}: {job['message']}")
        except BackendError as exc:
            raise QgsProcessingException(str(exc)) from None
        if job["state"] != "done":
            raise QgsProcessingException(job.get("error") or f"job {job['state']}")
        return {self.OUTPUT: job["result"]["output"]}


class EditProvider(QgsProcessingProvider):
    def id(self):
        return "rs_geo_edit"

    def name(self):
        return "rs-geo-edit"

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(EditAlgorithm())

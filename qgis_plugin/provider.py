"""Processing provider: "Edit raster regions" (rs_geo_edit:edit), for the model builder, batch
mode and ``qgis_process``. Its option parameters are generated from the backend's options schema
(options_schema.json), so an option the backend gains appears here without code."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsProcessingProvider)
from qgis.PyQt.QtGui import QIcon

from .backend import client_for
from .entities import OptionSpec, load_option_specs
from .errors import BackendError
from .jobs import follow_job
from .remote import RemoteEdit
from .layers import source_path
from .rois import features_geojson
from .preferences import Preferences
from .settings import MODES, PRESETS, QgsSettingsStore

# Options the algorithm's own parameters (or Processing itself) already decide.
FIXED = {"scene", "aoi", "prompt", "mode", "preset", "seed", "output", "layer", "prompt_field", "copy_from",
         "overwrite"}


def option_parameter(spec: OptionSpec) -> QgsProcessingParameterDefinition:
    """The Processing parameter for one option (its name upper-cased): an enum for choices, a bounded
    number, a boolean or a string; optional when the preset decides its default."""
    key, label, optional = spec.name.upper(), spec.name.replace("_", " ").capitalize(), spec.default is None
    if spec.choices:
        default = spec.choices.index(spec.default) if spec.default in spec.choices else None
        param = QgsProcessingParameterEnum(key, label, options=list(spec.choices), defaultValue=default,
                                           optional=optional)
    elif spec.type == "bool":
        param = QgsProcessingParameterBoolean(key, label, defaultValue=bool(spec.default), optional=True)
    elif spec.type in ("int", "float"):
        kind = QgsProcessingParameterNumber.Integer if spec.type == "int" else QgsProcessingParameterNumber.Double
        bounds = {k: v for k, v in (("minValue", spec.minimum), ("maxValue", spec.maximum)) if v is not None}
        param = QgsProcessingParameterNumber(key, label, kind, spec.default, optional, **bounds)
    else:
        param = QgsProcessingParameterString(key, label, defaultValue=spec.default, optional=True)
    param.setHelp(spec.help)
    if spec.group != "basic":
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


def _choices(specs: list, name: str, known: tuple) -> list:
    """The plugin's own order first, since saved models and scripts store enum indices (MODE=1 is
    regenerate); choices the schema adds come after."""
    listed = next((list(s.choices) for s in specs if s.name == name and s.choices), [])
    return list(known) + [choice for choice in listed if choice not in known]


class EditAlgorithm(QgsProcessingAlgorithm):
    INPUT, ROIS, PROMPT, MODE, PRESET, SEED, OUTPUT = "INPUT", "ROIS", "PROMPT", "MODE", "PRESET", "SEED", "OUTPUT"
    JOB_ID = "JOB_ID"

    def __init__(self):
        super().__init__()
        self.specs = load_option_specs()
        self.modes, self.presets = _choices(self.specs, "mode", MODES), _choices(self.specs, "preset", PRESETS)
        self.options = [s for s in self.specs if s.name not in FIXED]

    def name(self):
        return "edit"

    def displayName(self):  # noqa: N802
        return "Edit raster regions"

    def shortHelpString(self):  # noqa: N802
        return ("Edits the ROIS of INPUT with the rs-geo-edit backend (a running 'rs-geo-edit serve'; URL and "
                "credentials from the plugin's settings) and writes OUTPUT, a GeoTIFF with the input's CRS and "
                "metadata. MODE text follows PROMPT (or each ROI's 'prompt' attribute). The other parameters "
                "are the backend's editing options; left empty, the preset decides. Example: "
                "qgis_process run rs_geo_edit:edit -- INPUT=scene.tif ROIS=rois.gpkg MODE=1 STEPS=500 "
                "OUTPUT=edited.tif")

    def createInstance(self):  # noqa: N802
        return EditAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(self.ROIS, "ROI polygons",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, "Prompt", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, "Mode", options=self.modes,
                                                     defaultValue=self.modes.index("regenerate")
                                                     if "regenerate" in self.modes else 0))
        self.addParameter(QgsProcessingParameterEnum(self.PRESET, "Preset", options=self.presets, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, "Seed", QgsProcessingParameterNumber.Integer, 0))
        for spec in self.options:
            self.addParameter(option_parameter(spec))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Edited raster"))
        self.addOutput(QgsProcessingOutputString(self.JOB_ID, "Backend job id"))

    def option_values(self, parameters, context) -> dict:
        """The options given (None and empty strings are left to the preset)."""
        values = {}
        for spec in self.options:
            key = spec.name.upper()
            if parameters.get(key) in (None, ""):
                continue
            if spec.choices:
                values[spec.name] = spec.choices[self.parameterAsEnum(parameters, key, context)]
            elif spec.type == "bool":
                values[spec.name] = self.parameterAsBool(parameters, key, context)
            elif spec.type == "int":
                values[spec.name] = self.parameterAsInt(parameters, key, context)
            elif spec.type == "float":
                values[spec.name] = self.parameterAsDouble(parameters, key, context)
            else:
                values[spec.name] = self.parameterAsString(parameters, key, context)
        return values

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = self.parameterAsSource(parameters, self.ROIS, context)
        prompt = self.parameterAsString(parameters, self.PROMPT, context).strip() or None
        aoi = features_geojson(source.getFeatures(), source.sourceCrs(), source.fields(), default_prompt=prompt,
                               context=context.transformContext())
        if not aoi["features"]:
            raise QgsProcessingException("ROIS has no polygon with a geometry: give at least one ROI polygon")
        # Processing asks before replacing OUTPUT, so the backend may
        options = {"overwrite": True, **self.option_values(parameters, context)}
        request = {"scene": source_path(raster), "aoi": aoi, "prompt": prompt,
                   "mode": self.modes[self.parameterAsEnum(parameters, self.MODE, context)],
                   "preset": self.presets[self.parameterAsEnum(parameters, self.PRESET, context)],
                   "seed": self.parameterAsInt(parameters, self.SEED, context),
                   "output": self.parameterAsOutputLayer(parameters, self.OUTPUT, context), "options": options}
        settings = Preferences(QgsSettingsStore()).backend()

        def report(job):
            if not feedback.isCanceled():
                feedback.setProgress(100.0 * job.progress)
            if job.message:
                feedback.setProgressText(f"{job.stage}: {job.message}")

        try:
            client = client_for(settings)
            if settings.remote:  # the dock's "Runs on: remote server": only the windows travel
                if request["mode"] == "copy":
                    raise QgsProcessingException("copy mode needs the whole scene: run it on a local backend")
                job = RemoteEdit(client, request, overwrite=True, report=report).run(feedback.isCanceled)
            else:
                job = follow_job(client, request, is_canceled=feedback.isCanceled, on_update=report)
        except (BackendError, ValueError, OSError) as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(f"job {job.id} on {client.url}: {job.state}")
        if job.state == "cancelled":
            raise QgsProcessingException("cancelled; the backend job was cancelled too")
        if job.state != "done":
            raise QgsProcessingException(job.error or f"job {job.state}")
        return {self.OUTPUT: job.output, self.JOB_ID: job.id}


class EditProvider(QgsProcessingProvider):
    def icon(self):
        return QIcon(str(Path(__file__).with_name("icon.svg")))

    def id(self):
        return "rs_geo_edit"

    def name(self):
        return "rs-geo-edit"

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(EditAlgorithm())

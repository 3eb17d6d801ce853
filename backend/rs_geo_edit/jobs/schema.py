"""The service's request and response models, generated from :mod:`rs_geo_edit.options`.

``JobRequest.options`` holds every edit option by its public name, with the bounds, choices,
defaults and help of the schema (so ``/openapi.json`` shows them and an out-of-range value is a
422 naming the option and the bound). ``prompt``, ``mode``, ``preset``, ``seed``, ``layer``,
``prompt_field`` and ``copy_from`` are also accepted beside ``options``, as clients have sent
them; given in both places they must agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from ..options import SPEC_BY_NAME, SPECS, OptionSpec

REQUEST_LEVEL = ("prompt", "mode", "preset", "seed", "layer", "prompt_field", "copy_from")
INPUTS = ("scene", "aoi", "output")


def _field(spec: OptionSpec) -> tuple[Any, Any]:
    kind: Any = Literal[spec.choices] if spec.choices is not None else spec.type
    if spec.nullable:
        kind = Optional[kind]
    bounds = {"ge": spec.minimum, "le": spec.maximum} if spec.minimum is not None else {}
    if spec.even:
        bounds["multiple_of"] = 2
    return kind, Field(spec.default, description=spec.help_text(), **bounds)


JobOptions = create_model("JobOptions", __config__=ConfigDict(extra="forbid"),
                          **{spec.name: _field(spec) for spec in SPECS})
JobOptions.__doc__ = "Every edit option, by its public name (the same names as the CLI's, with _ for -)."


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(..., ge=1, description="Bytes the upload will hold (the window GeoTIFF's file size).")


class WindowUpload(BaseModel):
    """One uploaded window of a remote job: its upload and its place in the client's scene."""

    model_config = ConfigDict(extra="forbid")
    upload: str
    index: int = Field(..., ge=0)
    col_off: int = Field(..., ge=0)
    row_off: int = Field(..., ge=0)


class UploadView(BaseModel):
    """An upload's state: ``offset`` bytes of ``size`` have arrived; ``complete`` once all have and
    they were checked to be a GeoTIFF with a CRS."""

    id: str
    size: int
    offset: int
    complete: bool


class ResultWindow(BaseModel):
    """The changed box of one window: its place in the client's scene (pixels), its size, the
    file ``GET /jobs/{id}/result/{index}`` streams (``None`` when nothing changed) and the
    window's provenance record (prompt, seed, realism figures)."""

    index: int
    col_off: int
    row_off: int
    width: int
    height: int
    file: Optional[str]
    bytes: int
    record: dict[str, Any]


class ResultManifest(BaseModel):
    job: str
    windows: list[ResultWindow]
    editor: dict[str, Any]


class _OptionsBase(BaseModel):
    """A request carrying the edit options, in ``options`` or (some of them) beside it."""

    model_config = ConfigDict(extra="forbid")
    options: JobOptions = Field(default_factory=JobOptions)

    @model_validator(mode="after")
    def _one_value_per_option(self):
        """Request-level fields and ``options`` agree afterwards, whichever the client used."""
        for name in REQUEST_LEVEL:
            top_set, opt_set = name in self.model_fields_set, name in self.options.model_fields_set
            top, opt = getattr(self, name), getattr(self.options, name)
            if top_set and opt_set and top != opt:
                raise ValueError(f"{name} is given twice with different values ({top!r} and options.{name} "
                                 f"{opt!r}): give it once")
            if top_set:
                setattr(self.options, name, top)
            else:
                setattr(self, name, opt)
        return self


class _RequestBase(_OptionsBase):
    """An edit: the scene, the ROIs (a vector file path or an inline GeoJSON FeatureCollection),
    the output path (default: <scene>_edited.tif) and the options."""

    scene: str
    aoi: Union[str, dict[str, Any]]
    output: Optional[str] = None
    windows: Optional[list[WindowUpload]] = Field(
        None, description="Remote edit: the uploaded windows (see /uploads); scene and output are then the "
                          "client's names, and aoi a FeatureCollection whose features carry their 'window' "
                          "(as POST /plan returns them).")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class SceneGrid(BaseModel):
    """A client's scene as a plan needs it, without its pixels."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(..., ge=1, le=10_000_000)
    height: int = Field(..., ge=1, le=10_000_000)
    crs: str = Field(..., min_length=1, max_length=100_000,
                     description="The scene's CRS: WKT (GDAL's GetProjection), 'EPSG:32633' or a PROJ string.")
    transform: list[FiniteFloat] = Field(
        ..., min_length=6, max_length=6,
        description="The pixel-to-map affine as a, b, c, d, e, f (x = a*col + b*row + c, y = d*col + e*row + f); "
                    "from GDAL's geotransform g: g[1], g[2], g[0], g[4], g[5], g[3].")


class _PlanBase(_OptionsBase):
    """The windows a remote edit uploads: the scene's grid, the ROIs as an inline GeoJSON
    FeatureCollection (EPSG:4326 unless it names its CRS) and the options that shape the windows."""

    grid: SceneGrid
    aoi: dict[str, Any]


class PlannedWindow(BaseModel):
    """A window to crop from the scene (context margin included), in scene pixels."""

    index: int
    col_off: int
    row_off: int
    width: int
    height: int
    rois: int


class PlanView(BaseModel):
    """The windows to upload, and the ROIs in the scene's CRS, each tagged with its ``window``:
    the ``aoi`` and, with the upload ids, the ``windows`` of the ``POST /jobs`` that follows."""

    windows: list[PlannedWindow]
    aoi: dict[str, Any]
    warnings: list[str]


JobRequest = create_model("JobRequest", __base__=_RequestBase,
                          **{name: _field(SPEC_BY_NAME[name]) for name in REQUEST_LEVEL})
PlanRequest = create_model("PlanRequest", __base__=_PlanBase,
                           **{name: _field(SPEC_BY_NAME[name]) for name in REQUEST_LEVEL})


def inline_aoi_error(exc: Exception, aoi_path) -> str:
    """An input error as the service reports it: options by their API names, and the file an
    inline AOI was staged in (a server path the client never gave) as "the inline aoi"."""
    message = exc.render(api_name) if hasattr(exc, "render") else str(exc)
    if aoi_path is not None:
        message = message.replace(f"AOI file {str(aoi_path)!r}", "the inline aoi")
        message = message.replace(f"{str(aoi_path)!r}", "the inline aoi").replace(str(aoi_path), "the inline aoi")
    return message


def api_name(name: str) -> str:
    """How the service names an option or input in an error: ``options.max_side``, ``scene``."""
    return name if name in INPUTS or name in REQUEST_LEVEL else f"options.{name}"


class JobView(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    interrupted: bool
    attempts: int
    progress: float
    stage: str
    message: str
    eta_s: Optional[float]
    created: float
    started: Optional[float]
    finished: Optional[float]
    log: list[dict]
    result: Optional[dict]
    error: Optional[str]
    request: dict
    transfer: Optional[dict] = None


class ErrorView(BaseModel):
    """Every refusal: one line saying what is wrong and what to change; ``errors`` lists each
    invalid field of a request body (location, message) when there are several."""

    detail: str
    errors: Optional[list[dict]] = None


def error_response(description: str) -> dict:
    """An OpenAPI ``responses`` entry for a refusal with :class:`ErrorView` as its body."""
    return {"model": ErrorView, "description": description}


AUTH = {401: error_response("missing or wrong token (bearer, or the password of HTTP Basic)"),
        429: error_response("too many failed authentications from this address lately: wait and check the token")}


class HealthView(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
    version: str
    device: str
    workers: int
    workers_alive: int
    worker_restarts: int
    clip_weights: list[str]
    modes: list[str]
    engines: list[str]
    queue_length: int

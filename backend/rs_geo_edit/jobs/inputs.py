"""From a validated job request (``jobs/schema.py``) to what an edit takes: the one home of that
step, for the door (service, transfer), the workers and the supervisor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .layout import JobLayout, inline_aoi

if TYPE_CHECKING:
    from ..config import EditConfig


@dataclass(frozen=True)
class JobInputs:
    """The scene, the AOI file (None for an inline AOI not written anywhere), the output GeoTIFF
    and the configuration of one job."""

    scene: Path
    aoi: Optional[Path]
    output: Path
    config: "EditConfig"


@dataclass(frozen=True)
class UploadedWindow:
    """One window of a window job: ``index`` in the client's plan, the uploaded GeoTIFF holding
    it, its offsets in the client's scene (pixels) and its ROIs (GeoJSON features, scene CRS)."""

    index: int
    path: Path
    col_off: int
    row_off: int
    features: list[dict]


def output_path(request: dict[str, Any]) -> Path:
    """The output GeoTIFF a request names, or the default beside its scene."""
    from ..pipeline import default_output

    return Path(request["output"]) if request.get("output") else default_output(Path(request["scene"]))


def job_inputs(request: dict[str, Any], aoi_folder: Optional[Path] = None) -> JobInputs:
    """The inputs of ``request`` (its ``options`` hold every option); an inline GeoJSON AOI is
    written into ``aoi_folder`` (not written without one). Raises RsGeoEditError subclasses
    for bad options."""
    from ..files import atomic_path
    from ..options import EditOptions

    aoi = request["aoi"]
    if not isinstance(aoi, dict):
        aoi_path: Optional[Path] = Path(aoi)
    elif aoi_folder is None:
        aoi_path = None
    else:
        aoi_path = inline_aoi(aoi_folder)
        aoi_folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(aoi_path) as tmp:
            tmp.write_text(json.dumps(aoi))
    config = EditOptions.from_dict(request.get("options") or {}).to_config()
    return JobInputs(Path(request["scene"]), aoi_path, output_path(request), config)


def uploaded_windows(request: dict[str, Any], layout: JobLayout) -> list[UploadedWindow]:
    """The windows of a window job in index order, each with its upload and its ROIs."""
    features = request["aoi"]["features"]
    return [UploadedWindow(w["index"], layout.upload(w["upload"]), w["col_off"], w["row_off"],
                           [f for f in features if f["properties"].get("window") == w["index"]])
            for w in sorted(request["windows"], key=lambda w: w["index"])]

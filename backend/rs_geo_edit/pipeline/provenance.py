"""Provenance: the JSON record written beside every output, and the test batch resume uses.

The record holds the inputs (paths and sha256), the output's sha256, every parameter, the seed,
the editor's description, the plan, per-window facts and metrics, warnings, timings and versions.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import __version__
from ..config import EditConfig
from ..files import atomic_path, sha256_file
from .plan import ScenePlan

# Parameters that do not change the pixels: a difference in them never makes a record stale.
VOLATILE = ("cache_dir", "cache_max_gb", "threads", "device")


def provenance_path(output: str | Path) -> Path:
    """``<output>.json``: where the record of ``output`` lives."""
    return Path(output).with_suffix(".json")


def build_record(plan: ScenePlan, config: EditConfig, editor_description: dict, windows: list, timings: dict,
                 write_info: dict, output: Path) -> dict:
    return {
        "software": "rs-geo-edit", "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {
            "scene": {"path": str(Path(plan.scene).resolve()), "sha256": sha256_file(plan.scene)},
            "aoi": {"path": str(Path(plan.aoi.path).resolve()), "sha256": sha256_file(plan.aoi.path)
                    if Path(plan.aoi.path).is_file() else None, "layer": plan.aoi.layer},
        },
        "output": {**write_info, "sha256": sha256_file(output)},
        "parameters": config.to_dict(),
        "seed": config.seed,
        "editor": editor_description,
        "plan": plan.as_dict(),
        "windows": windows,
        "warnings": plan.warnings,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    }


def write_record(record: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=_json_default))


def matches(output: str | Path, scene: str | Path, aoi: str | Path, config: EditConfig) -> bool:
    """Whether ``output`` exists with a provenance record saying it was made from these exact
    inputs (sha256 of scene and AOI) with these parameters, and has not changed since (its
    sha256). Parameters that do not change pixels (:data:`VOLATILE`, ``overwrite``) are ignored."""
    record = read_record(output)
    try:
        return (record is not None and record["inputs"]["scene"]["sha256"] == sha256_file(scene)
                and record["inputs"]["aoi"]["sha256"] == sha256_file(aoi)
                and record["output"]["sha256"] == sha256_file(output)
                and _fingerprint(record["parameters"]) == _fingerprint(config.to_dict()))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def written_by_us(output: str | Path) -> bool:
    """Whether ``output`` and its provenance JSON are an earlier rs-geo-edit result left as it was
    written: the record is ours, names this output, and the output's sha256 still matches. Only
    then may a rerun (a batch redoing a stale scene) replace them without ``overwrite``."""
    output = Path(output)
    record = read_record(output)
    try:
        return (isinstance(record, dict) and record.get("software") == "rs-geo-edit"
                and Path(record["output"]["path"]).name == output.name
                and record["output"]["sha256"] == sha256_file(output))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def read_record(output: str | Path) -> Optional[Any]:
    """The parsed provenance JSON of an existing ``output``, or None."""
    output = Path(output)
    record_path = provenance_path(output)
    if not (output.is_file() and record_path.is_file()):
        return None
    try:
        return json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None


def _fingerprint(parameters: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in parameters.items() if k not in VOLATILE}
    out["output"] = {k: v for k, v in parameters.get("output", {}).items() if k != "overwrite"}
    return out


def finite(value: float) -> Optional[float]:
    """A metric for JSON: rounded, or None where it is undefined (NaN)."""
    return None if not np.isfinite(value) else round(float(value), 5)


def _versions() -> dict:
    import sys

    import rasterio

    versions = {"rs_geo_edit": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    return versions


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

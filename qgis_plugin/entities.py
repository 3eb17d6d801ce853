"""Small data types shared by the plugin's layers: a job as the service reports it, one editing
option as the backend's options schema (options_schema.json) declares it, what the dock's forms
hold, and where a remote job's files are on this machine. Qt-free."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

TERMINAL = ("done", "failed", "cancelled")
SCHEMA_FILE = Path(__file__).with_name("options_schema.json")
DEFAULT_PACKAGE = "rs-geo-edit"


@dataclass(frozen=True)
class Job:
    """One job of ``rs-geo-edit serve`` (``GET /jobs/{id}``); ``progress`` is 0..1."""

    id: str
    state: str
    progress: float = 0.0
    stage: str = ""
    message: str = ""
    eta_s: Optional[float] = None
    error: Optional[str] = None
    output: Optional[str] = None
    request: dict = field(default_factory=dict)
    created: float = 0.0

    @classmethod
    def from_api(cls, data: dict) -> "Job":
        result = data.get("result") or {}
        return cls(id=data["id"], state=data["state"], progress=float(data.get("progress") or 0.0),
                   stage=data.get("stage") or "", message=data.get("message") or "", eta_s=data.get("eta_s"),
                   error=data.get("error"), output=result.get("output"), request=data.get("request") or {},
                   created=float(data.get("created") or 0.0))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def title(self) -> str:
        """What the user asked for: the prompt, else the mode."""
        return self.request.get("prompt") or self.request.get("mode") or "edit"

    @property
    def scene(self) -> Optional[str]:
        return self.request.get("scene")


@dataclass(frozen=True)
class OptionSpec:
    """One public editing option: ``type`` is int, float, bool or str; ``default`` None means the
    preset decides; ``group`` is basic or advanced."""

    name: str
    type: str
    default: Any = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[tuple] = None
    help: str = ""
    group: str = "advanced"

    @classmethod
    def from_dict(cls, data: dict) -> "OptionSpec":
        if data.get("type") not in ("int", "float", "bool", "str"):
            raise ValueError(f"option {data.get('name')!r} has unknown type {data.get('type')!r}")
        choices = data.get("choices")
        return cls(name=data["name"], type=data["type"], default=data.get("default"), minimum=data.get("minimum"),
                   maximum=data.get("maximum"), choices=tuple(choices) if choices else None,
                   help=data.get("help") or "", group=data.get("group") or "advanced")


def is_remote_job(job: Job) -> bool:
    """Whether ``job`` edited uploaded windows (its result is written by the client)."""
    return bool(job.request.get("windows"))


@dataclass(frozen=True)
class LocalFiles:
    """Where a remote job's scene is and where its output goes, on this machine."""

    scene: str
    output: str


@dataclass(frozen=True)
class InstallSpec:
    """``package``: a name for pip (``rs-geo-edit``), a wheel file or a source folder;
    ``pip_args``: extra arguments for ``pip install`` (e.g. ``--no-deps``, ``--index-url URL``);
    ``system_site_packages``: let the environment see the interpreter's packages (e.g. a torch
    already installed with CUDA)."""

    folder: Path
    python: str
    package: str = DEFAULT_PACKAGE
    pip_args: tuple = field(default_factory=tuple)
    system_site_packages: bool = False


@dataclass(frozen=True)
class EditForm:
    """The dock's edit form as the analyst left it: ``raster`` and ``roi_layer`` are map layers
    (or None), ``drawn`` says the ROIs are the drawn ones, ``prompt`` is stripped."""

    raster: Any = None
    drawn: bool = True
    roi_layer: Any = None
    selected_only: bool = False
    prompt: str = ""
    mode: str = "text"
    preset: str = "fast"
    seed: int = 0


def load_option_specs(path: Path = SCHEMA_FILE) -> list[OptionSpec]:
    """The options the backend accepts, as generated from its ``EditOptions``."""
    return [OptionSpec.from_dict(item) for item in json.loads(path.read_text(encoding="utf-8"))]

"""The library call: ``edit_scene`` over options or a configuration, like rio-cogeo's
``cog_translate``. Exported lazily as ``rs_geo_edit.edit_scene``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .config import EditConfig
from .options import EditOptions
from .pipeline import EditResult, Editor, edit_scene as _edit_scene
from .progress import ProgressCallback

OptionsOrConfig = Union[EditOptions, EditConfig, Mapping[str, Any]]


def to_config(options_or_config: OptionsOrConfig) -> EditConfig:
    """An :class:`EditConfig` from edit options, a mapping of option names, or a config as is."""
    if isinstance(options_or_config, EditConfig):
        return options_or_config
    if isinstance(options_or_config, EditOptions):
        return options_or_config.to_config()
    if isinstance(options_or_config, Mapping):
        return EditOptions.from_dict(options_or_config).to_config()
    raise TypeError(f"edit_scene takes EditOptions, a dict of options or an EditConfig, "
                    f"not {type(options_or_config).__name__}")


def edit_scene(scene: str | Path, aoi: str | Path, output: str | Path, options_or_config: OptionsOrConfig, *,
               editor: Optional[Editor] = None, progress: Optional[ProgressCallback] = None) -> EditResult:
    """Edit the ROIs of ``aoi`` (a vector file) in ``scene`` (a GeoTIFF) and write ``output``
    with its provenance JSON beside it.

    ``options_or_config``: :class:`~rs_geo_edit.options.EditOptions`, a dict of option names
    (``{"prompt": "dense forest", "steps": 2000}``) or an :class:`EditConfig`. ``editor``
    defaults to the engine the options choose; ``progress`` receives
    :class:`~rs_geo_edit.progress.ProgressEvent` s and may raise ``JobCancelled`` to stop.
    Errors are :class:`~rs_geo_edit.errors.RsGeoEditError` s, raised before any output exists.
    """
    return _edit_scene(scene, aoi, output, to_config(options_or_config), editor=editor, progress=progress)

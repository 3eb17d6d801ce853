"""The scene plan: the scene's raster facts, its ROIs and copy sources, and the edit windows."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from ..config import EditConfig
from ..errors import AOIError, IncompatibleOptions
from ..geo.aoi import AOI, ROI, list_layers, read_aoi, read_features
from ..geo.check import check_scene_complete
from ..geo.raster import data_bands, footprint, grid_footprint, open_scene, rgb_positions
from ..geo.windows import EditWindow, plan_windows, whole_window


@dataclass
class ScenePlan:
    """The scene, its ROIs and the windows they will be edited in.

    ``bands`` are the scene's 1-based data band numbers; ``rgb`` are 0-based positions into
    ``bands`` (so into a window's pixel array), the bands an RGB model sees.
    """

    scene: Path
    aoi: AOI
    windows: list[EditWindow]
    width: int
    height: int
    count: int
    dtype: str
    crs: str
    transform: tuple
    bands: list[int]
    rgb: list[int]
    copy_sources: list[ROI] = field(default_factory=list)
    copy_raster: Optional[Path] = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        from affine import Affine

        transform = Affine(*self.transform[:6])
        return {
            "scene": str(self.scene), "width": self.width, "height": self.height, "count": self.count,
            "dtype": self.dtype, "crs": self.crs, "data_bands": self.bands,
            "rgb_bands": [self.bands[i] for i in self.rgb],
            "aoi": {"path": self.aoi.path, "layer": self.aoi.layer, "crs": self.aoi.source_crs,
                    "rois": len(self.aoi.targets), "sources": len(self.aoi.sources),
                    "skipped": self.aoi.skipped, "repaired": self.aoi.repaired},
            "windows": [w.as_dict(transform) for w in self.windows],
        }


def plan_grid(aoi: str | Path, crs, transform, width: int, height: int,
              config: EditConfig) -> tuple[AOI, list[EditWindow]]:
    """The ROIs of ``aoi`` and their edit windows over a pixel grid known by its CRS, transform
    (an Affine) and size: all a plan needs, so a service can plan a scene it never sees."""
    result = read_aoi(aoi, crs, grid_footprint(transform, width, height), layer=config.layer,
                      prompt_field=config.prompt_field, role_field=config.role_field, default_prompt=config.prompt)
    windows = plan_windows(result.targets, transform, height, width, margin_px=config.windows.margin_px,
                           margin_frac=config.windows.margin_frac, margin_max_px=config.windows.margin_max_px,
                           max_side=config.windows.max_side,
                           merge=config.windows.merge)
    if not windows:
        raise AOIError(f"no ROI of {str(aoi)!r} covers a whole pixel of the scene: draw larger ROIs")
    return result, windows


def plan_scene(scene: str | Path, aoi: str | Path, config: EditConfig) -> ScenePlan:
    """Open the scene and AOI, validate them and plan the edit windows (no pixels read)."""
    scene = Path(scene)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_scene(scene) as src:
            check_scene_complete(src, scene)  # a truncated file must fail now, not at writing, after training
            result, windows = plan_grid(aoi, src.crs, src.transform, src.width, src.height, config)
            plan = ScenePlan(scene=scene, aoi=result, windows=windows, width=src.width, height=src.height,
                             count=src.count, dtype=src.dtypes[0], crs=src.crs.to_string(),
                             transform=tuple(src.transform), bands=data_bands(src),
                             rgb=rgb_positions(src, config.rgb_bands), copy_sources=result.sources)
            if config.copy_from:
                plan = _with_copy_from(plan, config.copy_from, config.prompt_field, src)
    plan.warnings = [str(w.message) for w in caught]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return plan


def _with_copy_from(plan: ScenePlan, copy_from: str | Path, prompt_field: str, src) -> ScenePlan:
    """``plan`` with the content of ``copy_from``: polygons of a vector file become copy sources
    (ahead of the AOI's own), a raster is the content itself."""
    path = Path(copy_from)
    if not path.exists():
        raise IncompatibleOptions(f"`copy_from` {str(path)!r} does not exist: check the path")
    try:
        is_vector = bool(list_layers(path))
    except Exception:  # not a vector file: try it as a raster
        is_vector = False
    if is_vector:
        donors = read_aoi(path, src.crs, footprint(src), layer=None, prompt_field=prompt_field,
                          role_field="__none__", default_prompt=None)
        return replace(plan, copy_sources=list(donors.rois) + plan.copy_sources)
    with open_scene(path):
        pass  # raises a clear SceneError if it is not a raster either
    return replace(plan, copy_raster=path)


def plan_window_file(src, features: list[dict], index: int, config: EditConfig) -> EditWindow:
    """Window ``index`` of a plan made elsewhere, held whole by the open raster ``src`` (the window
    a client cropped from its scene, context margin included): its ROIs are the GeoJSON
    ``features`` (``src``'s CRS, as :func:`window_features` gives them) and its pixels ``src``'s.
    The client's plan has the same window, so its edit is the same."""
    check_scene_complete(src, Path(src.name))
    rois = read_features(features, src.crs, src.crs, footprint(src), name=f"the ROIs of window {index}",
                         prompt_field=config.prompt_field, role_field=config.role_field, default_prompt=config.prompt)
    return whole_window(index, rois.targets, src.height, src.width, config.windows.max_side)


def window_features(windows: list[EditWindow]) -> list[dict]:
    """The ROIs of ``windows`` as GeoJSON features in scene CRS, each with its prompt and the
    index of its ``window``: the AOI of a window job."""
    from shapely.geometry import mapping

    return [{"type": "Feature", "geometry": mapping(roi.geometry),
             "properties": {"prompt": roi.prompt, "window": ew.index}}
            for ew in windows for roi in ew.rois]

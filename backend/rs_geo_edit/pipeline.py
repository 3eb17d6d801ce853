"""``edit_scene``: the one orchestrator behind the CLI, the service, QGIS Processing and batch.

scene + AOI -> window plan -> per window: read, validity mask, normalise, edit (an
:class:`Editor`), blend -> stream the edited copy of the scene -> provenance JSON.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from . import __version__
from .blend import blend_window
from .config import EditConfig
from .errors import SceneError
from .eval import boundary_step, seam_gradient_ratio
from .eval.metrics import realism
from .geo.aoi import AOI, ROI, read_aoi
from .geo.raster import (Normaliser, Patch, atomic_path, avoid_nodata, check_output_path, data_bands,
                         footprint, open_scene, read_window, rgb_bands, sha256_file, validity_mask,
                         write_edited)
from .geo.windows import EditWindow, plan_windows, roi_labels
from .imaging import fill_invalid, resize
from .progress import ProgressCallback, StageReporter


@dataclass
class EditRequest:
    """What an editor gets for one window, at the working resolution.

    ``image`` is (bands, rows, cols) float32 in [-1, 1] with invalid pixels filled from their
    nearest valid neighbour; ``roi`` is where new content goes (valid pixels only); ``labels``
    tells which ROI (1-based, 0 = none) owns each pixel and ``prompts[k-1]`` is ROI k's prompt.
    ``rgb`` are the band positions an RGB model sees. ``copy_source`` (copy mode) is content
    aligned with the window, valid where ``copy_mask`` is True.
    """

    image: np.ndarray
    roi: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    prompts: list[Optional[str]]
    rgb: list[int]
    seed: int
    window: EditWindow
    copy_source: Optional[np.ndarray] = None
    copy_mask: Optional[np.ndarray] = None


class Editor(Protocol):
    """Anything that turns an :class:`EditRequest` into an edited image of the same shape
    (float32, [-1, 1]); it reports progress through the reporter and may be cancelled by it."""

    def edit(self, request: EditRequest, progress: StageReporter) -> np.ndarray: ...

    def describe(self) -> dict: ...


@dataclass
class ScenePlan:
    """The scene, its ROIs and the windows they will be edited in."""

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


@dataclass
class EditResult:
    output: Path
    provenance: Optional[Path]
    record: dict


def plan_scene(scene: str | Path, aoi: str | Path, config: EditConfig) -> ScenePlan:
    """Open the scene and AOI, validate them and plan the edit windows (no pixels read)."""
    scene = Path(scene)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_scene(scene) as src:
            result = read_aoi(aoi, src.crs, footprint(src), layer=config.layer,
                              prompt_field=config.prompt_field, role_field=config.role_field,
                              default_prompt=config.prompt)
            windows = plan_windows(result.targets, src.transform, src.height, src.width,
                                   margin_px=config.windows.margin_px, margin_frac=config.windows.margin_frac,
                                   max_side=config.windows.max_side, merge=config.windows.merge)
            if not windows:
                from .errors import AOIError

                raise AOIError(f"no ROI of {str(aoi)!r} covers a whole pixel of the scene: draw larger ROIs")
            plan = ScenePlan(scene=scene, aoi=result, windows=windows, width=src.width, height=src.height,
                             count=src.count, dtype=src.dtypes[0], crs=src.crs.to_string(),
                             transform=tuple(src.transform), bands=data_bands(src),
                             rgb=rgb_bands(src, config.rgb_bands), copy_sources=result.sources)
            if config.copy_from:
                _add_copy_from(plan, config, src)
    plan.warnings = [str(w.message) for w in caught]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return plan


def _add_copy_from(plan: ScenePlan, config: EditConfig, src) -> None:
    """``--copy-from``: polygons of a vector file become copy sources; a raster is content."""
    from .geo.aoi import list_layers

    path = Path(config.copy_from)
    if not path.exists():
        from .errors import IncompatibleOptions

        raise IncompatibleOptions(f"--copy-from {str(path)!r} does not exist: check the path")
    try:
        is_vector = bool(list_layers(path))
    except Exception:  # not a vector file: try it as a raster
        is_vector = False
    if is_vector:
        donors = read_aoi(path, src.crs, footprint(src), layer=None, prompt_field=config.prompt_field,
                          role_field="__none__", default_prompt=None)
        plan.copy_sources = list(donors.rois) + plan.copy_sources
    else:
        with open_scene(path):
            pass  # raises a clear SceneError if it is not a raster either
        plan.copy_raster = path


def make_editor(config: EditConfig) -> Editor:
    """The editor for ``config.mode`` (SinDDM for regenerate and copy); torch loads here."""
    from .model.editor import SinDDMEditor

    return SinDDMEditor(config)


def default_output(scene: str | Path) -> Path:
    """``<scene>_edited.tif`` beside the scene."""
    scene = Path(scene)
    return scene.with_name(f"{scene.stem}_edited.tif")


def provenance_path(output: str | Path) -> Path:
    return Path(output).with_suffix(".json")


def window_seed(seed: int, index: int) -> int:
    """A per-window seed: the same (seed, window) always gives the same edit."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _copy_donor(src, plan: ScenePlan, transform) -> tuple[np.ndarray, np.ndarray]:
    """Copy mode: the content to paste, in source units, and where it is valid.

    From the first source polygon (``role=source`` in the AOI, or polygons of ``--copy-from``),
    read from the scene; or from a ``--copy-from`` raster with the scene's data band count.
    """
    from rasterio.windows import Window

    from .errors import IncompatibleOptions
    from .geo.windows import pixel_bbox

    if plan.copy_raster is not None:
        with open_scene(plan.copy_raster) as donor_src:
            bands = data_bands(donor_src)
            if len(bands) != len(plan.bands):
                raise IncompatibleOptions(f"--copy-from raster {str(plan.copy_raster)!r} has {len(bands)} data band(s), "
                                          f"the scene {len(plan.bands)}: give a raster with the same bands")
            full = Window(0, 0, donor_src.width, donor_src.height)
            pixels = read_window(donor_src, full)
            return pixels, validity_mask(donor_src, full, pixels)
    if not plan.copy_sources:
        raise IncompatibleOptions("copy mode needs a source region: give a feature the attribute role=source in "
                                  "the AOI file, or pass --copy-from with a vector or raster")
    donor_roi = plan.copy_sources[0]
    r0, c0, r1, c1 = pixel_bbox(donor_roi.geometry, transform)
    r0, c0, r1, c1 = max(0, r0), max(0, c0), min(src.height, r1), min(src.width, c1)
    donor_window = Window(c0, r0, c1 - c0, r1 - r0)
    pixels = read_window(src, donor_window)
    valid = validity_mask(src, donor_window, pixels) & _mask_of([donor_roi], donor_window, transform)
    return pixels, valid


def _copy_content(donor: tuple[np.ndarray, np.ndarray], ew: EditWindow, transform, norm: Normaliser,
                  work_shape) -> tuple[np.ndarray, np.ndarray]:
    """The donor resampled onto each target ROI's bounding box, as a window-aligned image
    (normalised with the window's normaliser) plus the mask where it holds content."""
    from .geo.windows import pixel_bbox

    pixels, donor_valid = donor
    donor_n = norm.forward(pixels)
    h, w = ew.shape
    content = np.zeros((donor_n.shape[0], h, w), np.float32)
    has = np.zeros((h, w), bool)
    for roi in ew.rois:
        tr0, tc0, tr1, tc1 = pixel_bbox(roi.geometry, transform)
        th, tw = max(1, tr1 - tr0), max(1, tc1 - tc0)
        scaled = resize(donor_n, (th, tw), "lanczos")
        scaled_mask = resize(donor_valid.astype(np.float32), (th, tw), "bilinear") > 0.5
        wr, wc = tr0 - int(ew.window.row_off), tc0 - int(ew.window.col_off)
        rs, cs = max(0, -wr), max(0, -wc)
        re, ce = min(th, h - wr), min(tw, w - wc)
        if re <= rs or ce <= cs:
            continue
        content[:, wr + rs:wr + re, wc + cs:wc + ce] = scaled[:, rs:re, cs:ce]
        has[wr + rs:wr + re, wc + cs:wc + ce] |= scaled_mask[rs:re, cs:ce]
    if ew.reduced:
        content = resize(content, work_shape, "area")
        has = resize(has.astype(np.float32), work_shape, "area") > 0.5
    return content, has


def _mask_of(rois: list[ROI], window, transform) -> np.ndarray:
    from .geo.windows import geometry_mask_in_window

    return geometry_mask_in_window([r.geometry for r in rois], window, transform)


def edit_scene(scene: str | Path, aoi: str | Path, output: str | Path, editor: Editor,
               config: EditConfig, progress: Optional[ProgressCallback] = None) -> EditResult:
    """Edit the ROIs of ``aoi`` in ``scene`` with ``editor`` and write ``output`` (GeoTIFF).

    Pixels outside the ROIs grown by the blend band are bit-identical to the source. Raises a
    :class:`rs_geo_edit.errors.RsGeoEditError` subclass on bad input before any output exists;
    nothing is left at ``output`` if the edit fails or is cancelled.
    """
    from affine import Affine

    config.validate()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    output = check_output_path(output, [scene, aoi, config.copy_from], config.output.overwrite)
    prov_path = provenance_path(output) if config.output.provenance else None
    if prov_path is not None:
        check_output_path(prov_path, [scene, aoi], True)
    report = StageReporter(progress, "plan", 0.0, 0.02)
    plan = plan_scene(scene, aoi, config)
    report(1, 1, f"{len(plan.windows)} window(s)")
    timings["plan_s"] = time.perf_counter() - started
    transform = Affine(*plan.transform[:6])

    patches: list[Patch] = []
    window_records = []
    span = 0.88 / len(plan.windows)
    donor = None
    with open_scene(scene) as src:
        for ew in plan.windows:
            t0 = time.perf_counter()
            raw = read_window(src, ew.window)
            valid = validity_mask(src, ew.window, raw)
            labels = roi_labels(ew, transform)
            labels[~valid] = 0
            roi = labels > 0
            if not roi.any():
                window_records.append({**ew.as_dict(transform), "skipped": "no valid pixel in the ROIs"})
                continue
            norm = Normaliser.fit(raw, valid)
            image = fill_invalid(norm.forward(raw), valid)
            work_shape = ew.work_shape
            if ew.reduced:
                w_image = resize(image, work_shape, "area")
                w_valid = resize(valid.astype(np.float32), work_shape, "area") > 0.999
                w_roi = (resize(roi.astype(np.float32), work_shape, "area") > 0.0) & w_valid
                w_labels = resize(labels.astype(np.float32), work_shape, "nearest").astype(np.int16)
                w_labels[~w_roi] = 0
            else:
                w_image, w_valid, w_roi, w_labels = image, valid, roi, labels
            copy_source, copy_mask = (None, None)
            # copy mode, and text mode with a content source (pasted content guides the coarse scales)
            if config.mode == "copy" or (config.mode == "text" and (plan.copy_sources or plan.copy_raster)):
                if donor is None:
                    donor = _copy_donor(src, plan, transform)
                copy_source, copy_mask = _copy_content(donor, ew, transform, norm, work_shape)
            request = EditRequest(image=w_image, roi=w_roi, labels=w_labels, valid=w_valid,
                                  prompts=[r.prompt for r in ew.rois], rgb=plan.rgb,
                                  seed=window_seed(config.seed, ew.index), window=ew,
                                  copy_source=copy_source, copy_mask=copy_mask)
            start = 0.02 + span * len(window_records)
            reporter = StageReporter(progress, "edit", start, start + span * 0.95, ew.index)
            edited = np.asarray(editor.edit(request, reporter), dtype=np.float32)
            if edited.shape != w_image.shape:
                raise RuntimeError(f"editor returned shape {edited.shape}, expected {w_image.shape}")
            if ew.reduced:
                edited = resize(edited, ew.shape, "lanczos")
            composite, alpha, blend_info = blend_window(image, edited, roi, valid, config.blend)
            changed = alpha > 0
            pixels = norm.inverse(composite)
            avoid_nodata(pixels, changed, src.nodata)
            patches.append(_cropped_patch(ew, pixels, changed))
            written = np.where(changed[None], norm.forward(pixels, np.float64), norm.forward(raw, np.float64))
            window_records.append({
                **ew.as_dict(transform), "roi_pixels": int(roi.sum()), "changed_pixels": int(changed.sum()),
                "normalisation": norm.as_dict(), "blend": blend_info, "seed": request.seed,
                "seam_gradient_ratio": _finite(seam_gradient_ratio(written, roi, valid)),
                "boundary_step": _finite(boundary_step(written, roi, valid)),
                "realism": {k: _finite(v) for k, v in
                            realism(written, norm.forward(raw, np.float64), roi, valid, plan.rgb).items()},
                "seconds": round(time.perf_counter() - t0, 3),
            })
            StageReporter(progress, "blend", start + span * 0.95, start + span, ew.index)(1, 1, "blended")
    if not patches:
        raise SceneError(f"every ROI of {str(aoi)!r} lies on nodata pixels of {str(scene)!r}: "
                         "draw the ROIs over valid data")
    timings["edit_s"] = time.perf_counter() - started - timings["plan_s"]

    t0 = time.perf_counter()
    write_info = write_edited(scene, output, patches, compress=config.output.compress, cog=config.output.cog,
                              progress=StageReporter(progress, "write", 0.9, 1.0))
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    record = _provenance(plan, config, editor, window_records, timings, write_info, output)
    if prov_path is not None:
        with atomic_path(prov_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=_json_default))
    return EditResult(output=output, provenance=prov_path, record=record)


def _cropped_patch(ew: EditWindow, pixels: np.ndarray, changed: np.ndarray) -> Patch:
    """Keep only the bounding box of the changed pixels: the context margin costs no memory."""
    from rasterio.windows import Window

    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    window = Window(int(ew.window.col_off) + c0, int(ew.window.row_off) + r0, c1 - c0, r1 - r0)
    return Patch(window, np.ascontiguousarray(pixels[:, r0:r1, c0:c1]), np.ascontiguousarray(changed[r0:r1, c0:c1]))


def _versions() -> dict:
    import sys

    import rasterio

    versions = {"rs_geo_edit": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    return versions


def _provenance(plan: ScenePlan, config: EditConfig, editor: Editor, windows: list, timings: dict,
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
        "editor": editor.describe(),
        "plan": plan.as_dict(),
        "windows": windows,
        "warnings": plan.warnings,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": _versions(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    }


def _finite(value: float) -> Optional[float]:
    """A metric for JSON: rounded, or None where it is undefined (NaN)."""
    return None if not np.isfinite(value) else round(float(value), 5)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

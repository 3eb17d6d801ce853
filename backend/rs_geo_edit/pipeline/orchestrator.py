"""``edit_scene``: the one orchestrator behind the CLI, the service, QGIS Processing and batch.

scene + AOI -> window plan -> per window: read, validity mask, normalise, edit (an
:class:`~.contract.Editor`), blend -> stream the edited copy of the scene -> provenance JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..blend import blend_window
from ..config import EditConfig
from ..editors import make_editor
from ..errors import SceneError
from ..eval import boundary_step, seam_gradient_ratio
from ..eval.metrics import realism
from ..geo.raster import (Normaliser, Patch, avoid_nodata, check_output_path, open_scene, read_window,
                          remove_partials, validity_mask, write_edited)
from ..geo.windows import EditWindow, roi_labels
from ..imaging import fill_invalid, resize
from ..progress import ProgressCallback, StageReporter
from .contract import EditRequest, Editor
from .copy_source import CopyInputs
from .plan import plan_scene
from .provenance import build_record, finite, provenance_path, write_record


@dataclass
class EditResult:
    output: Path
    provenance: Optional[Path]
    record: dict


def default_output(scene: str | Path) -> Path:
    """``<scene>_edited.tif`` beside the scene."""
    scene = Path(scene)
    return scene.with_name(f"{scene.stem}_edited.tif")


def window_seed(seed: int, index: int) -> int:
    """A per-window seed: the same (seed, window) always gives the same edit."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _check_config(config) -> EditConfig:
    if isinstance(config, EditConfig):
        return config.validate()
    if hasattr(config, "edit") and hasattr(config, "describe"):
        raise TypeError("edit_scene(scene, aoi, output, config, *, editor=None, progress=None): "
                        "the editor goes in editor=")
    raise TypeError(f"edit_scene needs an EditConfig, not {type(config).__name__}")


def check_outputs(scene: str | Path, aoi: Optional[str | Path], output: str | Path,
                  config: EditConfig) -> tuple[Path, Optional[Path]]:
    """(GeoTIFF, provenance JSON or None): every file an edit of ``scene`` writes, checked before
    any work. Each must not be an input and must not exist unless ``config.output.overwrite``;
    raises :class:`rs_geo_edit.errors.OutputError` naming the first that fails."""
    inputs = [scene, aoi, config.copy_from]
    output = check_output_path(output, inputs, config.output.overwrite)
    prov_path = provenance_path(output) if config.output.provenance else None
    if prov_path is not None:
        check_output_path(prov_path, inputs, config.output.overwrite, role="provenance")
    return output, prov_path


def edit_scene(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, *,
               editor: Optional[Editor] = None, progress: Optional[ProgressCallback] = None) -> EditResult:
    """Edit the ROIs of ``aoi`` in ``scene`` with ``config`` and write ``output`` (GeoTIFF) plus
    its provenance record.

    ``editor`` defaults to the engine ``config.engine`` names (``editors.make_editor``). Pixels
    outside the ROIs grown by the blend band are bit-identical to the source. Raises a
    :class:`rs_geo_edit.errors.RsGeoEditError` subclass on bad input before any output exists;
    nothing is left at ``output`` if the edit fails or is cancelled.
    """
    from affine import Affine

    config = _check_config(config)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    output, prov_path = check_outputs(scene, aoi, output, config)
    remove_partials(output)  # what a killed earlier run to this output left behind
    report = StageReporter(progress, "plan", 0.0, 0.02)
    plan = plan_scene(scene, aoi, config)
    report(1, 1, f"{len(plan.windows)} window(s)")
    timings["plan_s"] = time.perf_counter() - started
    transform = Affine(*plan.transform[:6])
    if editor is None:
        editor = make_editor(config)

    patches: list[Patch] = []
    window_records = []
    first, span = 0.02, 0.88 / len(plan.windows)
    with open_scene(scene) as src:
        if getattr(editor, "shares_model", False) and len(plan.windows) > 1:
            # One model for the scene: trained on every window before any is edited.
            editor.prepare(_model_inputs(src, plan, transform), StageReporter(progress, "train", 0.02, 0.45))
            first, span = 0.45, 0.45 / len(plan.windows)
        copies = CopyInputs(config.mode, plan, src, transform)
        for ew in plan.windows:
            t0 = time.perf_counter()
            data = _window_data(src, ew, transform)
            if data is None:
                window_records.append({**ew.as_dict(transform), "skipped": "no valid pixel in the ROIs"})
                continue
            raw, valid, labels, roi, norm, image = data.raw, data.valid, data.labels, data.roi, data.norm, data.image
            w_image, w_valid, w_roi, w_labels = data.w_image, data.w_valid, data.w_roi, data.w_labels
            work_shape = ew.work_shape
            copy_source, copy_mask = copies.for_window(ew, norm, work_shape)
            request = EditRequest(image=w_image, roi=w_roi, labels=w_labels, valid=w_valid,
                                  prompts=[r.prompt for r in ew.rois], rgb=plan.rgb,
                                  seed=window_seed(config.seed, ew.index), window=ew,
                                  copy_source=copy_source, copy_mask=copy_mask)
            start = first + span * len(window_records)
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
                "seam_gradient_ratio": finite(seam_gradient_ratio(written, roi, valid)),
                "boundary_step": finite(boundary_step(written, roi, valid)),
                "realism": {k: finite(v) for k, v in
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
    record = build_record(plan, config, editor.describe(), window_records, timings, write_info, output)
    if prov_path is not None:
        write_record(record, prov_path)
    return EditResult(output=output, provenance=prov_path, record=record)


@dataclass
class _WindowData:
    """A window as read (``raw``, ``valid``, ROI ``labels`` and ``roi``, the normaliser and the
    normalised ``image``) and at the working resolution (``w_*``: the same unless reduced)."""

    raw: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    roi: np.ndarray
    norm: Normaliser
    image: np.ndarray
    w_image: np.ndarray
    w_valid: np.ndarray
    w_roi: np.ndarray
    w_labels: np.ndarray


def _window_data(src, ew: EditWindow, transform) -> Optional[_WindowData]:
    """Read and prepare one window; None when its ROIs hold no valid pixel."""
    raw = read_window(src, ew.window)
    valid = validity_mask(src, ew.window, raw)
    labels = roi_labels(ew, transform)
    labels[~valid] = 0
    roi = labels > 0
    if not roi.any():
        return None
    norm = Normaliser.fit(raw, valid)
    image = fill_invalid(norm.forward(raw), valid)
    if not ew.reduced:
        return _WindowData(raw, valid, labels, roi, norm, image, image, valid, roi, labels)
    work_shape = ew.work_shape
    w_valid = resize(valid.astype(np.float32), work_shape, "area") > 0.999
    w_roi = (resize(roi.astype(np.float32), work_shape, "area") > 0.0) & w_valid
    w_labels = resize(labels.astype(np.float32), work_shape, "nearest").astype(np.int16)
    w_labels[~w_roi] = 0
    return _WindowData(raw, valid, labels, roi, norm, image, resize(image, work_shape, "area"), w_valid, w_roi,
                       w_labels)


def model_inputs(scene: str | Path, aoi: str | Path, config: EditConfig) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(window index, image, validity) at the working resolution for every window an edit of
    ``scene`` makes: what a scene model (``model_scope`` scene) is trained on."""
    from affine import Affine

    plan = plan_scene(scene, aoi, config)
    with open_scene(scene) as src:
        return _model_inputs(src, plan, Affine(*plan.transform[:6]))


def _model_inputs(src, plan, transform) -> list[tuple[int, np.ndarray, np.ndarray]]:
    return [(ew.index, data.w_image, data.w_valid) for ew in plan.windows
            if (data := _window_data(src, ew, transform)) is not None]


def _cropped_patch(ew: EditWindow, pixels: np.ndarray, changed: np.ndarray) -> Patch:
    """Keep only the bounding box of the changed pixels: the context margin costs no memory."""
    from rasterio.windows import Window

    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    window = Window(int(ew.window.col_off) + c0, int(ew.window.row_off) + r0, c1 - c0, r1 - r0)
    return Patch(window, np.ascontiguousarray(pixels[:, r0:r1, c0:c1]), np.ascontiguousarray(changed[r0:r1, c0:c1]))

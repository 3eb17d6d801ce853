"""``edit_scene``: the one orchestrator behind the CLI, the service, QGIS Processing and batch.

scene + AOI -> window plan -> per window: read, validity mask, normalise, edit (an
:class:`~.contract.Editor`), blend -> stream the edited copy of the scene -> provenance JSON.

The same steps run apart for a scene whose windows are separate tasks (``batch
--split-windows``): :func:`prepare_windows` (plan, scene model), :func:`edit_one_window` per
window, :func:`write_windows` (writer and provenance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..blend import DETAIL_REACH, blend_window
from ..config import BlendConfig, EditConfig
from ..editors import make_editor
from ..errors import SceneError
from ..eval import boundary_step, seam_gradient_ratio
from ..eval.metrics import FOCUS_PX, percentile_scale, realism
from ..geo.raster import (Normaliser, Patch, avoid_nodata, check_output_path, open_scene, read_window,
                          remove_partials, validity_mask, write_edited)
from ..geo.windows import EditWindow, roi_labels
from ..imaging import crop_around, fill_invalid, resize, return_freed_memory
from ..progress import ProgressCallback, StageReporter
from .contract import EditedBox, EditRequest, Editor, SceneModelEditor
from .copy_source import CopyInputs
from .plan import ScenePlan, plan_scene
from .provenance import build_record, finite, provenance_path, write_record


@dataclass
class EditResult:
    output: Path
    provenance: Optional[Path]
    record: dict


@dataclass
class SceneEdit:
    """An edit of one scene under way: its inputs, checked outputs, configuration and plan."""

    scene: str | Path
    aoi: str | Path
    output: Path
    provenance: Optional[Path]
    config: EditConfig
    plan: ScenePlan

    @property
    def transform(self):
        return _affine(self.plan)


@dataclass
class WindowEdit:
    """One edited window: the ``patch`` to write (None when its ROIs hold no valid pixel), its
    provenance ``record``, and, from a window edited alone (:func:`edit_one_window`), the
    ``editor`` description of that edit."""

    index: int
    patch: Optional[Patch]
    record: dict
    editor: Optional[dict] = None


@dataclass
class ScenePrep:
    """What the first task of a scene edited window by window (:func:`prepare_windows`) hands to
    the window tasks and the final writer: the window indices in plan order, the scene model's
    cache key and per-window scale offsets (None when every window trains, or loads, its own),
    the model records of the editor and the seconds spent planning and training."""

    windows: list[int]
    scene_model: Optional[dict]
    models: list[dict]
    plan_s: float
    train_s: float


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


def start_edit(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig,
               progress: Optional[ProgressCallback] = None) -> SceneEdit:
    """Check the configuration and every output, clear what a killed earlier run to ``output``
    left behind, and plan the windows: the start of every edit of ``scene``."""
    config = _check_config(config)
    output, prov_path = check_outputs(scene, aoi, output, config)
    remove_partials(output)
    report = StageReporter(progress, "plan", 0.0, 0.02)
    plan = plan_scene(scene, aoi, config)
    report(1, 1, f"{len(plan.windows)} window(s)")
    return SceneEdit(scene, aoi, output, prov_path, config, plan)


def edit_scene(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, *,
               editor: Optional[Editor] = None, progress: Optional[ProgressCallback] = None) -> EditResult:
    """Edit the ROIs of ``aoi`` in ``scene`` with ``config`` and write ``output`` (GeoTIFF) plus
    its provenance record.

    ``editor`` defaults to the engine ``config.engine`` names (``editors.make_editor``). Pixels
    outside the ROIs grown by the blend band are bit-identical to the source. Raises a
    :class:`rs_geo_edit.errors.RsGeoEditError` subclass on bad input before any output exists;
    nothing is left at ``output`` if the edit fails or is cancelled.
    """
    started = time.perf_counter()
    job = start_edit(scene, aoi, output, config, progress)
    timings = {"plan_s": time.perf_counter() - started}
    plan, transform = job.plan, job.transform
    if editor is None:
        editor = make_editor(job.config)
    edits: list[WindowEdit] = []
    first, span = 0.02, 0.88 / len(plan.windows)
    with open_scene(scene) as src:
        if _shares_model(editor, plan):
            # One model for the scene: trained on every window before any is edited.
            editor.prepare(_model_inputs(src, plan, transform), StageReporter(progress, "train", 0.02, 0.45))
            first, span = 0.45, 0.45 / len(plan.windows)
        copies = CopyInputs(job.config.mode, plan, src, transform)
        for n, ew in enumerate(plan.windows):
            edits.append(edit_window(plan, job.config, src, ew, editor, copies, progress, first + span * n, span))
    timings["edit_s"] = time.perf_counter() - started - timings["plan_s"]
    return write_output(job, editor.describe(), edits, timings, progress)


def edit_window(plan: ScenePlan, config: EditConfig, src, ew: EditWindow, editor: Editor, copies: CopyInputs,
                progress: Optional[ProgressCallback], start: float, span: float) -> WindowEdit:
    """Read, edit and blend window ``ew`` of ``plan`` (``src``: the open scene); its progress
    covers [start, start + span] of the edit. The patch holds only the box of changed pixels."""
    t0 = time.perf_counter()
    transform = _affine(plan)
    data = _window_data(src, ew, transform)
    if data is None:
        return WindowEdit(ew.index, None, {**ew.as_dict(transform), "skipped": "no valid pixel in the ROIs"})
    valid, roi, norm, image = data.valid, data.roi, data.norm, data.image
    # the figures' scale comes from the whole window as read; the window as read is then let go
    # and only its box around the ROIs read again after the edit (a large window's raw copy is
    # a window's worth of source pixels held through training and sampling for nothing)
    scale = percentile_scale((norm.forward(band, np.float64, band=b) for b, band in enumerate(data.raw)), valid)
    data.raw = None
    copy_source, copy_mask = copies.for_window(ew, norm, ew.work_shape)
    request = EditRequest(image=data.w_image, roi=data.w_roi, labels=data.w_labels, valid=data.w_valid,
                          prompts=[r.prompt for r in ew.rois], rgb=plan.rgb,
                          seed=window_seed(config.seed, ew.index), window=ew,
                          copy_source=copy_source, copy_mask=copy_mask)
    reporter = StageReporter(progress, "edit", start, start + span * 0.95, ew.index)
    return_freed_memory()   # reading and normalising the window
    # The blend and the figures read nothing beyond their box around the ROIs: the rest of the
    # window is let go before they run (at native resolution each window copy is hundreds of MB).
    box = blend_box(roi, config.blend)
    edited = _edited_on(editor.edit(request, reporter), image, data.w_image, ew, box)
    source = np.ascontiguousarray(image[(slice(None),) + box])
    seed = request.seed
    del data, request, image
    return_freed_memory()
    composite, alpha, blend_info = blend_window(source, edited, roi[box], valid[box], config.blend)
    del source, edited
    changed = alpha > 0
    pixels = norm.inverse(composite)
    del composite, alpha
    return_freed_memory()
    avoid_nodata(pixels, changed, src.nodata)
    raw = read_window(src, _sub_window(ew.window, box))
    record = {
        **ew.as_dict(transform), "roi_pixels": int(roi.sum()), "changed_pixels": int(changed.sum()),
        "normalisation": norm.as_dict(), "blend": blend_info, "seed": seed,
        **_figures(norm, raw, pixels, changed, roi[box], valid[box], plan.rgb, scale),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    StageReporter(progress, "blend", start + span * 0.95, start + span, ew.index)(1, 1, "blended")
    return WindowEdit(ew.index, _cropped_patch(ew, pixels, changed, (box[0].start, box[1].start)), record)


def _edited_on(result, image: np.ndarray, w_image: np.ndarray, ew: EditWindow, box: tuple[slice, slice]) -> np.ndarray:
    """The editor's ``result`` (the window at the working resolution, or an :class:`EditedBox`
    of it) on ``box`` of the window at full resolution, float32; ``image`` and ``w_image`` are the
    request's image at full and working resolution."""
    if isinstance(result, EditedBox):
        rows, cols = result.rows, result.cols
        if (rows.start < 0 or cols.start < 0 or rows.stop > w_image.shape[1] or cols.stop > w_image.shape[2]
                or result.pixels.shape != (w_image.shape[0], rows.stop - rows.start, cols.stop - cols.start)):
            raise RuntimeError(f"editor returned a box of shape {result.pixels.shape} at rows {rows.start}:{rows.stop}, "
                               f"columns {cols.start}:{cols.stop} of a window of shape {w_image.shape}")
        if not ew.reduced:   # the window is unchanged beyond the editor's box
            return result.on(image, *box)
        result = result.whole(w_image)
    edited = np.asarray(result, dtype=np.float32)
    if edited.shape != w_image.shape:
        raise RuntimeError(f"editor returned shape {edited.shape}, expected {w_image.shape}")
    if ew.reduced:
        edited = resize(edited, ew.shape, "lanczos")
    return np.ascontiguousarray(edited[(slice(None),) + box])


def _sub_window(window, box: tuple[slice, slice]):
    """The part ``box`` (rows, columns of the window's pixels) of the scene window ``window``."""
    from rasterio.windows import Window

    rows, cols = box
    return Window(int(window.col_off) + cols.start, int(window.row_off) + rows.start, cols.stop - cols.start,
                  rows.stop - rows.start)


def blend_box(roi: np.ndarray, blend: BlendConfig) -> tuple[slice, slice]:
    """Rows and columns of the window that the blend and the figures read: the ROIs' box grown
    by the transition band (and the matching ring, and the reach of detail matching's blurs
    beyond it) or the figures' reach (``FOCUS_PX``), whichever is farther, plus a pixel of
    neighbours for the Poisson solve. The Laplacian blend's coarse levels read the whole window,
    so it gets the whole window."""
    if blend.mode == "laplacian":
        return slice(0, roi.shape[0]), slice(0, roi.shape[1])
    ring = blend.ring_px if blend.color_match or blend.detail_match else 0
    reach = blend.band_px + ring + (DETAIL_REACH if blend.detail_match else 0) + 1
    return crop_around(roi, max(reach, FOCUS_PX))


def _figures(norm: Normaliser, raw: np.ndarray, pixels: np.ndarray, changed: np.ndarray, roi: np.ndarray,
             valid: np.ndarray, rgb, scale: tuple[np.ndarray, np.ndarray]) -> dict:
    """The window's seam and realism figures, on the written pixels against the source (arrays
    of a box of the window reaching ``FOCUS_PX`` beyond the ROIs, or the whole window), scaled by
    ``scale``: the whole window's percentiles, taken a band at a time. The figures are computed
    on the crop around the ROIs that they read: float64 copies of the whole window were a large
    ROI's peak memory, for figures that read only the ROI and a ring around it."""
    rows, cols = crop_around(roi, FOCUS_PX)
    # float32 crops (the figures take each band to float64 as they read it): a large ROI's crop
    # is most of its window, and two float64 copies of it were the edit's peak memory
    source = norm.forward(raw[:, rows, cols])
    written = norm.forward(pixels[:, rows, cols])
    np.copyto(written, source, where=~changed[None, rows, cols])
    roi, valid = roi[rows, cols], valid[rows, cols]
    return {"seam_gradient_ratio": finite(seam_gradient_ratio(written, roi, valid)),
            "boundary_step": finite(boundary_step(written, roi, valid)),
            "realism": {k: finite(v) for k, v in realism(written, source, roi, valid, rgb, scale).items()}}


def write_output(job: SceneEdit, editor_description: dict, edits: list[WindowEdit], timings: dict,
                 progress: Optional[ProgressCallback] = None) -> EditResult:
    """Stream the patches of ``edits`` (in plan order) into a copy of the scene at ``job.output``
    and write the provenance record; ``timings`` holds ``plan_s`` and ``edit_s``."""
    patches = [e.patch for e in edits if e.patch is not None]
    if not patches:
        raise SceneError(f"every ROI of {str(job.aoi)!r} lies on nodata pixels of {str(job.scene)!r}: "
                         "draw the ROIs over valid data")
    t0 = time.perf_counter()
    config = job.config
    write_info = write_edited(job.scene, job.output, patches, compress=config.output.compress, cog=config.output.cog,
                              progress=StageReporter(progress, "write", 0.9, 1.0))
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = timings["plan_s"] + timings["edit_s"] + timings["write_s"]
    record = build_record(job.plan, config, editor_description, [e.record for e in edits], timings, write_info,
                          job.output)
    if job.provenance is not None:
        write_record(record, job.provenance)
    return EditResult(output=job.output, provenance=job.provenance, record=record)


# ------------------------------------------------------------------------ one window per task
# A huge scene's windows can run as separate tasks (``batch --split-windows``): one task trains
# the scene model, one task per window edits it, and the caller stitches the results. Each step
# is the one ``edit_scene`` takes, so the output is the same bytes.

def prepare_windows(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, *,
                    progress: Optional[ProgressCallback] = None) -> ScenePrep:
    """The first task of a scene edited window by window: check the outputs, plan, and train (or
    load from the cache) the scene model when the editor shares one over the scene's windows,
    as :func:`edit_scene` does. The model stays in the cache, where the window tasks find it."""
    started = time.perf_counter()
    job = start_edit(scene, aoi, output, config, progress)
    plan_s = time.perf_counter() - started
    scene_model, models = None, []
    if len(job.plan.windows) > 1:  # a single window trains its own model in its task
        editor = make_editor(job.config)
        if _shares_model(editor, job.plan):
            with open_scene(scene) as src:
                editor.prepare(_model_inputs(src, job.plan, job.transform), StageReporter(progress, "train", 0.02, 1.0))
            if editor.shared is not None:
                scene_model = {"key": editor.shared.key, "offsets": dict(editor.shared.offsets)}
            models = editor.describe().get("models", [])
    return ScenePrep([ew.index for ew in job.plan.windows], scene_model, models, plan_s,
                     time.perf_counter() - started - plan_s)


def edit_one_window(scene: str | Path, aoi: str | Path, config: EditConfig, index: int, *,
                    scene_model: Optional[dict] = None,
                    progress: Optional[ProgressCallback] = None) -> WindowEdit:
    """Edit window ``index`` of the scene's plan alone, reading only that window: with
    ``scene_model`` (from :func:`prepare_windows`) the editor takes the scene model from the
    cache, else the window trains or loads its own. Writes nothing."""
    config = _check_config(config)
    plan = plan_scene(scene, aoi, config)
    windows = {ew.index: ew for ew in plan.windows}
    if index not in windows:
        raise ValueError(f"window {index} is not in the plan of {str(scene)!r} ({len(windows)} window(s))")
    editor = make_editor(config)
    if scene_model is not None:
        editor.use_scene_model(scene_model["key"], scene_model["offsets"])
    with open_scene(scene) as src:
        copies = CopyInputs(config.mode, plan, src, _affine(plan))
        edit = edit_window(plan, config, src, windows[index], editor, copies, progress, 0.0, 1.0)
    edit.editor = editor.describe()
    return edit


def write_windows(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, prep: ScenePrep,
                  edits: list[WindowEdit], progress: Optional[ProgressCallback] = None) -> EditResult:
    """Stitch the windows of a scene edited one per task (:func:`edit_one_window`, one result per
    window of ``prep``, in any order) into ``output`` with the writer and provenance record of
    :func:`edit_scene`: the editor description joins the tasks' model and window entries."""
    started = time.perf_counter()
    job = start_edit(scene, aoi, output, config)
    by_index = {e.index: e for e in edits}
    if sorted(by_index) != sorted(prep.windows):
        raise ValueError(f"windows {sorted(by_index)} edited, the plan has {sorted(prep.windows)}")
    ordered = [by_index[index] for index in prep.windows]
    descriptions = [e.editor or {} for e in ordered]
    description = dict(descriptions[0])
    if "models" in description:
        description["models"] = prep.models + [m for d in descriptions for m in d.get("models", [])]
    if "windows" in description:
        description["windows"] = [w for d in descriptions for w in d.get("windows", [])]
    timings = {"plan_s": prep.plan_s + time.perf_counter() - started,
               "edit_s": prep.train_s + sum(e.record.get("seconds", 0.0) for e in ordered)}
    return write_output(job, description, ordered, timings, progress)


def _shares_model(editor: Editor, plan: ScenePlan) -> bool:
    return isinstance(editor, SceneModelEditor) and editor.shares_model and len(plan.windows) > 1


def _affine(plan: ScenePlan):
    from affine import Affine

    return Affine(*plan.transform[:6])


@dataclass
class _WindowData:
    """A window as read (``raw``, ``valid``, ROI ``labels`` and ``roi``, the normaliser and the
    normalised ``image``) and at the working resolution (``w_*``: the same unless reduced)."""

    raw: Optional[np.ndarray]   # None once let go (edit_window)
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
    plan = plan_scene(scene, aoi, config)
    with open_scene(scene) as src:
        return _model_inputs(src, plan, _affine(plan))


def _model_inputs(src, plan, transform) -> list[tuple[int, np.ndarray, np.ndarray]]:
    return [(ew.index, data.w_image, data.w_valid) for ew in plan.windows
            if (data := _window_data(src, ew, transform)) is not None]


def _cropped_patch(ew: EditWindow, pixels: np.ndarray, changed: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Patch:
    """Keep only the bounding box of the changed pixels: the context margin costs no memory.
    ``offset`` is the (row, column) of ``pixels``' first pixel in the window."""
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    window = _sub_window(ew.window, (slice(offset[0] + r0, offset[0] + r1), slice(offset[1] + c0, offset[1] + c1)))
    return Patch(window, np.ascontiguousarray(pixels[:, r0:r1, c0:c1]), np.ascontiguousarray(changed[r0:r1, c0:c1]))

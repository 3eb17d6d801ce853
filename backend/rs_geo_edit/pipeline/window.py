"""One planned window, edited: read, validity mask, normalise, edit, blend, figures.

Every edit of a window runs :func:`edit_window`: ``edit_scene`` for each window of a scene, a
split-window task for its one window, and the service for a window a client cropped and uploaded
(a GeoTIFF holding that window whole). The caller gives the window's seed, and the window carries
its index in the scene's plan, so the three give the same pixels. Nothing here writes a file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..blend import DETAIL_REACH, blend_window
from ..config import BlendConfig, EditConfig
from ..eval import boundary_step, seam_gradient_ratio
from ..eval.metrics import FOCUS_PX, percentile_scale, realism
from ..geo.raster import Normaliser, Patch, avoid_nodata, read_window, rgb_positions, validity_mask
from ..geo.windows import EditWindow, roi_labels
from ..imaging import crop_around, fill_invalid, resize, return_freed_memory
from ..progress import ProgressCallback, StageReporter
from .contract import EditedBox, EditRequest, Editor
from .copy_source import CopyInputs, missing_source
from .provenance import finite


@dataclass
class WindowEdit:
    """One edited window: the ``patch`` to write (None when its ROIs hold no valid pixel), its
    provenance ``record``, and, from a window edited alone (:func:`edit_one_window`), the
    ``editor`` description of that edit."""

    index: int
    patch: Optional[Patch]
    record: dict
    editor: Optional[dict] = None


def window_seed(seed: int, index: int) -> int:
    """A per-window seed: the same (seed, window) always gives the same edit."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def edit_window(src, ew: EditWindow, seed: int, config: EditConfig, editor: Editor, *,
                copies: Optional[CopyInputs] = None, progress: Optional[ProgressCallback] = None,
                start: float = 0.0, span: float = 1.0) -> WindowEdit:
    """Read, edit and blend window ``ew`` of the open raster ``src`` (a scene, or a file holding
    the window whole) with ``seed``; ``copies`` gives copy content (None: none). Its progress
    covers [start, start + span]. The patch holds only the box of changed pixels."""
    if copies is None and config.mode == "copy":
        raise missing_source()
    t0 = time.perf_counter()
    data = _window_data(src, ew)
    if data is None:
        return WindowEdit(ew.index, None, {**ew.as_dict(src.transform), "skipped": "no valid pixel in the ROIs"})
    valid, roi, norm, image = data.valid, data.roi, data.norm, data.image
    # the figures' scale comes from the whole window as read; the window as read is then let go
    # and only its box around the ROIs read again after the edit (a large window's raw copy is
    # a window's worth of source pixels held through training and sampling for nothing)
    scale = percentile_scale((norm.forward(band, np.float64, band=b) for b, band in enumerate(data.raw)), valid)
    data.raw = None
    copy_source, copy_mask = copies.for_window(ew, norm, ew.work_shape) if copies is not None else (None, None)
    request = EditRequest(image=data.w_image, roi=data.w_roi, labels=data.w_labels, valid=data.w_valid,
                          prompts=[r.prompt for r in ew.rois], rgb=rgb_positions(src, config.rgb_bands), seed=seed,
                          window=ew, copy_source=copy_source, copy_mask=copy_mask)
    reporter = StageReporter(progress, "edit", start, start + span * 0.95, ew.index)
    return_freed_memory()   # reading and normalising the window
    # The blend and the figures read nothing beyond their box around the ROIs: the rest of the
    # window is let go before they run (at native resolution each window copy is hundreds of MB).
    blend = blend_for(editor, request, config.blend)
    box = blend_box(roi, blend)
    edited = _edited_on(editor.edit(request, reporter), image, data.w_image, ew, box)
    source = np.ascontiguousarray(image[(slice(None),) + box])
    rgb = request.rgb
    del data, request, image
    return_freed_memory()
    composite, alpha, blend_info = blend_window(source, edited, roi[box], valid[box], blend)
    del source, edited
    changed = alpha > 0
    pixels = norm.inverse(composite)
    del composite, alpha
    return_freed_memory()
    avoid_nodata(pixels, changed, src.nodata)
    raw = read_window(src, _sub_window(ew.window, box))
    record = {
        **ew.as_dict(src.transform), "roi_pixels": int(roi.sum()), "changed_pixels": int(changed.sum()),
        "normalisation": norm.as_dict(), "blend": blend_info, "seed": seed,
        **_figures(norm, raw, pixels, changed, roi[box], valid[box], rgb, scale),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    StageReporter(progress, "blend", start + span * 0.95, start + span, ew.index)(1, 1, "blended")
    return WindowEdit(ew.index, _cropped_patch(ew, pixels, changed, (box[0].start, box[1].start)), record)


def model_input(src, ew: EditWindow) -> Optional[tuple[int, np.ndarray, np.ndarray]]:
    """(window index, image, validity) of window ``ew`` of ``src`` at the working resolution, as
    an edit reads it: what a scene model (``model_scope`` scene) learns from; None when the
    window's ROIs hold no valid pixel."""
    data = _window_data(src, ew)
    return None if data is None else (ew.index, data.w_image, data.w_valid)


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


def blend_for(editor: Editor, request: EditRequest, blend: BlendConfig) -> BlendConfig:
    """The blend as it runs on this window: where the editor's pixels are copies of the scene
    (its ``copies_scene(request)``), their grain is never matched to the ring (matching smeared a
    coast's busy marsh into a flat dark band that a reviewer spotted at once; docs/quality.md)."""
    copies_scene = getattr(editor, "copies_scene", None)
    if blend.detail_match and copies_scene is not None and copies_scene(request):
        return dataclasses.replace(blend, detail_match=False)
    return blend


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


def _window_data(src, ew: EditWindow) -> Optional[_WindowData]:
    """Read and prepare one window; None when its ROIs hold no valid pixel."""
    raw = read_window(src, ew.window)
    valid = validity_mask(src, ew.window, raw)
    labels = roi_labels(ew, src.transform)
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


def _cropped_patch(ew: EditWindow, pixels: np.ndarray, changed: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Patch:
    """Keep only the bounding box of the changed pixels: the context margin costs no memory.
    ``offset`` is the (row, column) of ``pixels``' first pixel in the window."""
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    window = _sub_window(ew.window, (slice(offset[0] + r0, offset[0] + r1), slice(offset[1] + c0, offset[1] + c1)))
    return Patch(window, np.ascontiguousarray(pixels[:, r0:r1, c0:c1]), np.ascontiguousarray(changed[r0:r1, c0:c1]))

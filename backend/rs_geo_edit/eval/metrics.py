"""Texture-realism metrics of an edited region against its own surroundings.

Both figures compare the fine detail inside the edit with the detail of the source just
around it, so they read the same on forest, snow or roads: 1.0 means "as busy as the
neighbourhood", above means speckle or noise, below means blur.

- Luminance detail ratio: mean |discrete Laplacian| (4-neighbour) of the band-mean image over
  the ROI eroded by 4 px, on the edited image, divided by the same over the ring 16..48 px
  outside the ROI, on the source image.
- Colour detail ratio: the same on the colour-difference images (R - G and B - G of the RGB
  bands), the two means summed before dividing. Real imagery carries little fine detail in
  colour differences, so single-pixel colour speckle shows here first. Scenes with fewer than
  three bands have no colour figure (NaN).

Values are first scaled per band by the source's 1st-99th percentile range over the valid
pixels of the window, so the figures do not depend on dtype or radiometric range; only pixels
whose whole Laplacian stencil is valid count.

Calibration on the bundled aerial scene (``tests/test_metrics.py`` repeats it), 96 px ROIs in
192 px windows: forest pasted into forest from elsewhere in the scene scores luminance 0.8-1.2
and colour 0.65-0.95 (real content of a different texture spreads wider, 0.55-1.85, which is
why a realistic edit must continue its surroundings); the source plus Gaussian noise of sigma
6 DN scores about 1.5 / 13; a Gaussian blur of sigma 1.5 px scores below 0.5 on both.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from ..imaging import band_mean, crop_around, distance_to
from .seams import seam_ratio, seam_reach

ERODE_PX = 4
RING_PX = (16, 48)
# How far from an ROI the figures read (the rings, the seam's blur, the stencils): a crop of
# the window this far around the ROI gives the same figures (see ``imaging.crop_around``).
FOCUS_PX = max(RING_PX[1] + 2, seam_reach())


def percentile_scale(source: np.ndarray, valid: Optional[np.ndarray] = None,
                     low: float = 1.0, high: float = 99.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (offset, span) such that ``(x - offset) / span`` maps the source's
    ``low``..``high`` percentiles over valid pixels to 0..1. ``source`` is (bands, rows, cols),
    or any sequence of (rows, cols) bands (a generator computing them one at a time)."""
    mask = None if valid is None else valid.astype(bool)
    offsets, spans = [], []
    for band in source:     # a band at a time: no float64 copy of the whole window
        keep = np.isfinite(band) if mask is None else mask & np.isfinite(band)
        values = band[keep].astype(np.float64, copy=False)   # a copy already (boolean indexing)
        del keep
        if values.size == 0:
            offsets.append(0.0)
            spans.append(1.0)
            continue
        # partitioned in place: another copy of a large window's band is hundreds of megabytes
        lo, hi = np.percentile(values, [low, high], overwrite_input=True)
        offsets.append(float(lo))
        spans.append(float(hi - lo) if hi > lo else 1.0)
    return np.array(offsets)[:, None, None], np.array(spans)[:, None, None]


def _laplacian(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|4-neighbour Laplacian| of a (rows, cols) image, and where its whole stencil is valid."""
    lap = np.zeros_like(image)
    core = lap[1:-1, 1:-1]   # summed in place, in the order of the stencil: no image-sized temporaries
    core += image[:-2, 1:-1]
    core += image[2:, 1:-1]
    core += image[1:-1, :-2]
    core += image[1:-1, 2:]
    core -= 4.0 * image[1:-1, 1:-1]
    ok = np.zeros_like(valid)
    ok[1:-1, 1:-1] = (valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1]
                      & valid[1:-1, :-2] & valid[1:-1, 2:])
    return np.abs(lap, out=lap), ok


def _regions(roi: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inside: the ROI eroded by ERODE_PX, or the ROI itself if that leaves nothing;
    ring: RING_PX outside the ROI), both restricted to valid pixels."""
    inside_dist = distance_to(~roi, ERODE_PX)
    outside_dist = distance_to(roi, RING_PX[1])
    inside = (inside_dist > ERODE_PX) & valid
    if not inside.any():
        inside = roi & valid
    ring = (outside_dist >= RING_PX[0]) & (outside_dist <= RING_PX[1]) & valid
    return inside, ring


def _detail(images: Iterable[np.ndarray], region: np.ndarray, valid: np.ndarray) -> float:
    """Sum over ``images`` of the mean |Laplacian| over ``region``; ``images`` may be a generator
    computing them one at a time (a large ROI's crop is tens of megapixels in float64)."""
    total = 0.0
    for image in images:
        lap, ok = _laplacian(image, valid)
        del image
        sel = region & ok
        if not sel.any():
            return float("nan")
        total += float(lap[sel].mean())
    return total


def detail_ratios(edited: np.ndarray, source: np.ndarray, roi: np.ndarray,
                  valid: Optional[np.ndarray] = None, rgb: Sequence[int] = (0, 1, 2),
                  scale: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict[str, float]:
    """Luminance and colour detail ratios of ``edited`` inside ``roi`` against ``source``
    around it. Arrays are (bands, rows, cols) in the same units (DN or normalised); ``roi`` and
    ``valid`` are (rows, cols) booleans of the same window; ``rgb`` are the 0-based positions
    of the red, green and blue bands. ``scale`` is the window's :func:`percentile_scale` when
    the arrays are a crop of it (computed from ``source`` otherwise). Returns
    ``{"luminance": .., "colour": ..}`` (NaN where a figure cannot be computed: no ring, no
    valid pixel, fewer than three bands)."""
    roi = roi.astype(bool)
    valid = np.ones(roi.shape, bool) if valid is None else valid.astype(bool)
    offset, span = percentile_scale(source, valid) if scale is None else scale
    offset, span = offset.reshape(-1), span.reshape(-1)
    rows, cols = crop_around(roi, FOCUS_PX)
    edited, source, roi, valid = edited[:, rows, cols], source[:, rows, cols], roi[rows, cols], valid[rows, cols]

    def band(image, b):
        return (image[b].astype(np.float64) - offset[b]) / span[b]

    inside, ring = _regions(roi, valid)
    result = {"luminance": float("nan"), "colour": float("nan")}
    if not inside.any() or not ring.any():
        return result

    def ratio(edited_imgs, source_imgs):
        num, den = _detail(edited_imgs, inside, valid), _detail(source_imgs, ring, valid)
        return float(num / den) if np.isfinite(num) and np.isfinite(den) and den > 0 else float("nan")

    def luminance(image):   # images are made as they are read: one float64 image at a time
        yield band_mean(image, offset, span)

    result["luminance"] = ratio(luminance(edited), luminance(source))
    if source.shape[0] >= 3 and len(rgb) >= 3:
        r, g, b = rgb[:3]

        def differences(image):
            for c in (r, b):
                diff = band(image, c)
                diff -= band(image, g)
                yield diff

        result["colour"] = ratio(differences(edited), differences(source))
    return result


def realism(edited: np.ndarray, source: np.ndarray, roi: np.ndarray, valid: Optional[np.ndarray] = None,
            rgb: Sequence[int] = (0, 1, 2), scale: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict[str, float]:
    """The three figures an edit is judged by: luminance and colour detail ratios and the seam
    gradient ratio (output seam gradient / source seam gradient at the same boundary, see
    ``eval/seams.py``). Target for a realistic edit: luminance 0.8-1.2, colour <= 1.3,
    seam <= 1.1. ``scale``: see :func:`detail_ratios`."""
    figures = detail_ratios(edited, source, roi, valid, rgb, scale)
    figures["seam"] = seam_ratio(edited, source, roi, valid)
    return figures

"""Seam visibility and fidelity of a composited image.

- Seam-gradient ratio (SGR): mean |grad(G_3 * I)| on a 2-px band around the ROI boundary divided
  by the same on a ring 8-40 px outside the ROI, where I is the band mean and G_3 a Gaussian blur
  with sigma 3 pixels. 1.0 means the boundary is no busier than the surroundings; a visible seam
  gives a clearly larger value.
- Seam ratio: SGR of the output divided by SGR of the source at the same boundary, so a
  boundary that runs along a real edge (a road, a forest border) is not counted as a seam.
  1.0 means the edit made the boundary no busier than it was.
- Boundary step: the largest per-band difference between the mean just inside (1-3 px) and just
  outside (1-3 px) the ROI boundary, in the image's units.
- Outside fidelity: the fraction of pixels outside a mask whose every band equals the source.
"""

from __future__ import annotations

import math

import numpy as np

from ..imaging import band_mean, crop_around, distance_to


SEAM_SIGMA = 3
SEAM_RING = (8, 40)


def seam_reach(ring: tuple[float, float] = SEAM_RING) -> int:
    """How far from the ROI the seam-gradient ratio reads: the ring, the blur's reach (4 sigma)
    and the gradient's pixel."""
    return int(math.ceil(ring[1])) + 4 * SEAM_SIGMA + 2


def _distances(roi: np.ndarray, outside: float, inside: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the ROI and, within it, to its outside, exact up to ``outside`` and
    ``inside`` px (the farthest each figure looks)."""
    return distance_to(roi, outside), distance_to(~roi, inside)


def seam_gradient_ratio(image: np.ndarray, roi: np.ndarray, valid: np.ndarray | None = None,
                        ring: tuple[float, float] = SEAM_RING) -> float:
    """SGR of ``image`` (bands, rows, cols) around the boundary of ``roi`` (rows, cols)."""
    from scipy.ndimage import gaussian_filter

    roi = roi.astype(bool)
    if not roi.any() or roi.all():
        return float("nan")
    rows, cols = crop_around(roi, seam_reach(ring))
    image, roi = image[:, rows, cols], roi[rows, cols]
    valid = None if valid is None else valid[rows, cols]
    intensity = gaussian_filter(band_mean(image), sigma=SEAM_SIGMA, mode="nearest")
    gy, gx = np.gradient(intensity)
    del intensity
    magnitude = np.hypot(gx, gy, out=gx)
    del gy
    outside, inside = _distances(roi, ring[1], 1)
    boundary = ((outside > 0) & (outside <= 1)) | ((inside > 0) & (inside <= 1))
    context = (outside >= ring[0]) & (outside <= ring[1])
    if valid is not None:
        boundary &= valid
        context &= valid
    if not boundary.any() or not context.any():
        return float("nan")
    return float(magnitude[boundary].mean() / max(magnitude[context].mean(), 1e-12))


def seam_ratio(output: np.ndarray, source: np.ndarray, roi: np.ndarray,
               valid: np.ndarray | None = None) -> float:
    """SGR of ``output`` / SGR of ``source`` around ``roi`` (same units, same window)."""
    before = seam_gradient_ratio(source, roi, valid)
    after = seam_gradient_ratio(output, roi, valid)
    if not np.isfinite(before) or not np.isfinite(after) or before <= 0:
        return float("nan")
    return float(after / before)


def boundary_step(image: np.ndarray, roi: np.ndarray, valid: np.ndarray | None = None,
                  width: float = 3) -> float:
    """Largest per-band |mean just inside - mean just outside| of the ROI boundary."""
    roi = roi.astype(bool)
    rows, cols = crop_around(roi, int(math.ceil(width)) + 2)
    image, roi = image[:, rows, cols], roi[rows, cols]
    valid = None if valid is None else valid[rows, cols]
    outside, inside = _distances(roi, width, width)
    near_in = (inside > 0) & (inside <= width)
    near_out = (outside > 0) & (outside <= width)
    if valid is not None:
        near_in &= valid
        near_out &= valid
    if not near_in.any() or not near_out.any():
        return float("nan")
    return float(max(abs(band[near_in].astype(np.float64).mean() - band[near_out].astype(np.float64).mean())
                     for band in image))


def outside_fidelity(output: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of pixels outside ``mask`` where all bands of ``output`` equal ``source``
    (NaN equals NaN)."""
    outside = ~mask.astype(bool)
    if not outside.any():
        return float("nan")
    same = (output == source) | (np.isnan(output) & np.isnan(source)) if np.issubdtype(output.dtype, np.floating) \
        else output == source
    return float(np.all(same, axis=0)[outside].mean())

"""Where an engine keeps the original: per scale, 0 inside the ROI rising to 1 across the blend
band outside it, and the mask of the exact original restored at the end (beyond the band)."""

from __future__ import annotations

import numpy as np

from ..imaging import crop_around, distance_to, resize


def band_px(request, blend_band_px: float) -> float:
    """The blend band in window pixels at the working resolution: ``blend_band_px`` (scene
    pixels), shrunk with a window that is edited at reduced resolution."""
    return blend_band_px / (request.window.shape[0] / request.image.shape[1])


def keep_pyramid(roi: np.ndarray, band_px: float, sizes, rim_hold: float = 0.0) -> tuple[list[np.ndarray], np.ndarray]:
    """The sampler's keep masks (see ``model.sampler.KeepOriginal``): per scale, 0 inside the ROI,
    rising linearly to 1 across ``band_px`` pixels (of the window) outside it, area-resized to
    the scale; and the last step's mask, True only beyond the band. With ``rim_hold``, every
    scale but the finest also keeps that much of the original on the ROI's rim: all of it within
    ``band_px`` of the outline, fading to nothing over two more bands (docs/quality.md, "Large
    ROIs")."""
    dist = distance_to(roi, max(band_px, 1.0))   # read only up to the band
    final = dist > band_px
    if band_px > 0:   # in place: at native resolution each float64 temporary is a window's worth
        keep = np.clip(np.divide(dist, band_px, out=dist), 0.0, 1.0, out=dist).astype(np.float32)
    else:
        keep = (~roi).astype(np.float32)
    del dist
    coarse = keep
    if rim_hold > 0 and band_px > 0 and roi.any():
        rows, cols = crop_around(roi, 1)   # on the ROI's box: its depth, up to three bands
        box = roi[rows, cols]
        rim = distance_to(~box, 3 * band_px)
        np.clip(np.subtract(3 * band_px, rim, out=rim) / (2 * band_px), 0.0, 1.0, out=rim)
        rim[~box] = 0.0
        coarse = keep.copy()
        np.maximum(coarse[rows, cols], (rim_hold * rim).astype(np.float32), out=coarse[rows, cols])
        del rim, box
    last = len(sizes) - 1
    per_scale = []
    for s, size in enumerate(sizes):
        mask = keep if s == last else coarse
        per_scale.append(mask if tuple(size) == mask.shape else np.clip(resize(mask, size, "area"), 0.0, 1.0))
    return per_scale, final

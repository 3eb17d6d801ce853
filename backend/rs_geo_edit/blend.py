"""Seam-free compositing of an edited window back onto its source.

All functions work on normalised float arrays (bands, rows, cols) in [-1, 1], whatever the
scene's dtype and band count. The returned alpha is exactly 0 outside the ROI grown by the
transition band and on invalid (nodata) pixels: the writer copies the source there bit for bit.

Modes:
- ``feather``: a cosine ramp of alpha over ``band_px`` pixels outside the ROI (distance transform).
- ``laplacian``: multi-band blending of Laplacian pyramids, tapered to zero at the band's edge.
- ``poisson``: gradient-domain compositing; the edited window's gradients inside the ROI and
  band, the source's values on its boundary; nodata neighbours are no-flux (Neumann) edges.
"""

from __future__ import annotations

import numpy as np

from .config import BlendConfig
from .imaging import distance_to, fill_invalid, resize, row_strips


def feather_alpha(roi: np.ndarray, band_px: int, valid: np.ndarray | None = None) -> np.ndarray:
    """1 inside the ROI, a cosine ramp to 0 over ``band_px`` pixels outside, 0 beyond and on
    invalid pixels."""
    alpha = roi.astype(np.float32)
    if band_px > 0:   # the ramp computed on the band's pixels only (in float64, then stored)
        dist = distance_to(roi, band_px)
        band = (dist <= band_px) & ~roi
        alpha[band] = 0.5 * (1.0 + np.cos(np.pi * dist[band] / (band_px + 1)))
        del dist, band
    if valid is not None:
        alpha[~valid] = 0.0
    return alpha


def context_ring(roi: np.ndarray, valid: np.ndarray, band_px: int, ring_px: int) -> np.ndarray:
    """The valid pixels of the ``ring_px`` just outside the transition band: the source's context
    that colour and detail matching take their statistics from."""
    dist = distance_to(roi, band_px + ring_px)
    return (dist > band_px) & (dist <= band_px + ring_px) & valid


def _edited_bands(edited: np.ndarray, source: np.ndarray, roi: np.ndarray) -> list[int]:
    """The bands that the editor changed somewhere in the ROI: the matchings leave the others
    (e.g. a near-infrared band an RGB engine passes through) exactly as they are."""
    return [b for b in range(edited.shape[0]) if not np.array_equal(edited[b][roi], source[b][roi])]


def match_colors(edited: np.ndarray, source: np.ndarray, roi: np.ndarray, valid: np.ndarray,
                 band_px: int, ring_px: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Per-band gain/offset that give the edited ROI the mean and spread of the source's context
    ring (the ``ring_px`` pixels just outside the transition band): the ROI takes the colour
    statistics of its surroundings. Gains are clamped to [0.5, 2]. Applied to the whole window
    (only ROI + band reach the output); a band the editor did not change keeps its values (fit
    (1, 0)). Returns the corrected array and the (gain, offset) pairs."""
    ring = context_ring(roi, valid, band_px, ring_px)
    inside = roi & valid
    out = edited.copy()
    fits = []
    changed = _edited_bands(edited, source, roi)
    for b in range(edited.shape[0]):
        if b not in changed:
            fits.append((1.0, 0.0))
            continue
        e, s = edited[b][inside].astype(np.float64), source[b][ring].astype(np.float64)
        if e.size < 16 or s.size < 16 or e.std() < 1e-6:
            fits.append((1.0, float(s.mean() - e.mean()) if e.size and s.size else 0.0))
        else:
            gain = float(np.clip(s.std() / e.std(), 0.5, 2.0))
            fits.append((gain, float(s.mean() - gain * e.mean())))
        out[b] = np.clip(edited[b] * fits[-1][0] + fits[-1][1], -1.0, 1.0)
    return out, fits


# Detail matching: band-pass octaves between Gaussian blurs of these sigmas (pixels); the first
# octave is the image minus its sigma-1 blur (single-pixel detail), the last ends at sigma 8
# (blotches of ~16-30 px). Gains are clamped to [DETAIL_GAIN_MIN, DETAIL_GAIN_MAX].
DETAIL_SIGMAS = (1.0, 2.0, 4.0, 8.0)
DETAIL_GAIN_MIN, DETAIL_GAIN_MAX = 0.5, 1.0
DETAIL_ERODE_PX = 4
# How far beyond the context ring the blurs read: a box this far around the ring gives the same result.
DETAIL_REACH = int(4.0 * DETAIL_SIGMAS[-1] + 0.5) + 1


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma, mode="nearest", truncate=4.0)


def octave_energy(image: np.ndarray, region: np.ndarray) -> list[float]:
    """Mean |band-pass| of a (rows, cols) image over ``region``, per octave of ``DETAIL_SIGMAS``."""
    out, previous = [], image
    for sigma in DETAIL_SIGMAS:
        blurred = _blur(image, sigma)
        out.append(float(np.abs((previous - blurred)[region]).mean()))
        previous = blurred
    return out


def match_detail(edited: np.ndarray, source: np.ndarray, roi: np.ndarray, valid: np.ndarray,
                 alpha: np.ndarray, band_px: int, ring_px: int) -> tuple[np.ndarray, list[float]]:
    """Grain matching: the edited ROI's texture takes no more detail than its surroundings have.

    The luminance (the mean of the bands the editor changed) is split into octaves of band-pass
    detail (``DETAIL_SIGMAS``: from single pixels to blotches of ~16-30 px). Per octave, the
    mean |detail| of the edited ROI (eroded by ``DETAIL_ERODE_PX``) is compared with the
    source's on the context ring (the ``ring_px`` pixels beyond the transition band), and that
    octave of every changed band of the edited window is scaled by their ratio, clamped to
    [DETAIL_GAIN_MIN, DETAIL_GAIN_MAX]: a generated texture busier than the scene around it
    (speckle, mottling) is calmed to the scene's level, and one that is calmer is left as it is
    (detail is never invented). The correction is weighted by the blend's ``alpha`` (1 inside
    the ROI, fading out over the transition band). Returns the corrected array and the gains,
    finest octave first (all 1.0 when nothing was changed)."""
    inside = (distance_to(~roi, DETAIL_ERODE_PX) > DETAIL_ERODE_PX) & valid
    if inside.sum() < 64:
        inside = roi & valid
    ring = context_ring(roi, valid, band_px, ring_px)
    gains = [1.0] * len(DETAIL_SIGMAS)
    bands = _edited_bands(edited, source, roi)
    if inside.sum() < 16 or ring.sum() < 16 or not bands:
        return edited, gains
    own = octave_energy(edited[bands].mean(axis=0), inside)
    scene = octave_energy(source[bands].mean(axis=0), ring)
    gains = [float(np.clip(s / e, DETAIL_GAIN_MIN, DETAIL_GAIN_MAX)) if e > 1e-9 else 1.0
             for e, s in zip(own, scene)]
    return scale_octaves(edited, bands, gains, alpha), [round(g, 4) for g in gains]


def scale_octaves(image: np.ndarray, bands: list[int], gains: list[float], alpha: np.ndarray) -> np.ndarray:
    """``image`` (bands, rows, cols) with each octave of ``DETAIL_SIGMAS`` detail of ``bands``
    scaled by its gain, weighted by ``alpha`` (0: unchanged, 1: the full gain); clipped to
    [-1, 1]. The image itself when every gain is 1."""
    if all(g == 1.0 for g in gains):
        return image
    # sum_k (g_k - 1) (G_k - G_k+1) x with G_0 = identity, as weights of the blurs G_k x
    weights = [gains[0] - 1.0] + [gains[k] - gains[k - 1] for k in range(1, len(gains))] + [1.0 - gains[-1]]
    out = image.copy()
    for b in bands:
        change = image[b] * weights[0]
        for sigma, w in zip(DETAIL_SIGMAS, weights[1:]):
            if w != 0.0:
                change += w * _blur(image[b], sigma)
        out[b] += alpha * change
        np.clip(out[b], -1.0, 1.0, out=out[b])
    return out


def _gauss_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    from scipy.ndimage import gaussian_filter

    pyr = [x]
    for _ in range(levels):
        prev = pyr[-1]
        blurred = gaussian_filter(prev, sigma=(0, 1.0, 1.0)[-prev.ndim:], mode="nearest")
        shape = ((prev.shape[-2] + 1) // 2, (prev.shape[-1] + 1) // 2)
        pyr.append(resize(blurred, shape, "bilinear"))
    return pyr


def laplacian_blend(source: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Multi-band blend of ``edited`` over ``source`` with weight ``alpha`` (rows, cols)."""
    levels = max(1, min(5, int(np.log2(max(2, min(alpha.shape)) / 8))))
    gs, ge, ga = (_gauss_pyramid(a, levels) for a in (source, edited, alpha))
    out = ga[-1] * ge[-1] + (1 - ga[-1]) * gs[-1]
    for k in range(levels - 1, -1, -1):
        shape = gs[k].shape[-2:]
        ls = gs[k] - resize(gs[k + 1], shape, "bilinear")
        le = ge[k] - resize(ge[k + 1], shape, "bilinear")
        out = resize(out, shape, "bilinear") + ga[k] * le + (1 - ga[k]) * ls
    return out


def poisson_blend(source: np.ndarray, edited: np.ndarray, region: np.ndarray,
                  valid: np.ndarray) -> np.ndarray:
    """Gradient-domain compositing: inside ``region`` the result has the gradients of
    ``edited``; on the region's boundary it equals ``source``. Works for any band count."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    inside = region & valid
    out = source.astype(np.float64, copy=True)
    n = int(inside.sum())
    if n == 0:
        return out.astype(np.float32)
    index = -np.ones(region.shape, dtype=np.int64)
    index[inside] = np.arange(n)
    rows, cols = np.nonzero(inside)
    h, w = region.shape
    diag = np.full(n, 1e-6)   # a whisper of regularisation: components with no boundary stay solvable
    bands = source.shape[0]
    rhs = 1e-6 * edited[:, rows, cols].astype(np.float64).T
    a_rows, a_cols, a_vals = [], [], []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nr, nc = rows + dr, cols + dc
        inb = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        nr_c, nc_c = np.clip(nr, 0, h - 1), np.clip(nc, 0, w - 1)
        ok = inb & valid[nr_c, nc_c]               # nodata neighbours: no-flux edge
        grad = (edited[:, rows, cols] - edited[:, nr_c, nc_c]).astype(np.float64).T
        diag += ok
        rhs += grad * ok[:, None]
        nbr = index[nr_c, nc_c]
        unknown = ok & (nbr >= 0)
        a_rows.append(np.nonzero(unknown)[0])
        a_cols.append(nbr[unknown])
        a_vals.append(-np.ones(int(unknown.sum())))
        known = ok & (nbr < 0)
        rhs[known] += source[:, nr_c[known], nc_c[known]].astype(np.float64).T
    a_rows.append(np.arange(n))
    a_cols.append(np.arange(n))
    a_vals.append(diag)
    matrix = coo_matrix((np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))),
                        shape=(n, n)).tocsc()
    solver = splu(matrix)
    for b in range(bands):
        out[b, rows, cols] = solver.solve(rhs[:, b])
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def blend_window(source: np.ndarray, edited: np.ndarray, roi: np.ndarray, valid: np.ndarray,
                 config: BlendConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Composite ``edited`` onto ``source`` around ``roi``.

    Returns (composite, alpha, info): alpha in [0, 1] is 0 wherever the source must be kept
    exactly (outside ROI + band, invalid pixels); ``info`` records the colour-match fit.
    """
    roi = roi & valid
    info: dict = {"mode": config.mode, "band_px": config.band_px}
    src = source if valid.all() else fill_invalid(source, valid)   # read only: no copy of a whole window
    if config.color_match:
        edited, fits = match_colors(edited, src, roi, valid, config.band_px, config.ring_px)
        info["color_match"] = fits
    alpha = feather_alpha(roi, config.band_px, valid)
    if config.detail_match:
        edited, gains = match_detail(edited, src, roi, valid, alpha, config.band_px, config.ring_px)
        info["detail_gains"] = gains
    if config.mode == "feather":
        out = np.empty(src.shape, np.float32)
        for top, bottom, _, _ in row_strips(out.shape[1]):   # temporaries follow a strip of rows
            r = slice(top, bottom)
            out[:, r] = alpha[r] * edited[:, r] + (1 - alpha[r]) * src[:, r]
    elif config.mode == "laplacian":
        inner = feather_alpha(roi, config.band_px // 2, valid)
        blended = laplacian_blend(src, fill_invalid(edited, valid), inner)
        out = src + alpha * (blended - src)
    elif config.mode == "poisson":
        region = distance_to(roi, max(1, config.band_px)) <= max(1, config.band_px)
        out = poisson_blend(src, edited, region, valid)
        alpha = (region & valid).astype(np.float32)
    else:
        raise ValueError(f"unknown blend mode {config.mode!r}")
    out = np.clip(out, -1.0, 1.0, out=out if out.dtype == np.float32 else None).astype(np.float32, copy=False)
    return out, alpha, info

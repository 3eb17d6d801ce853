"""Array resampling and hole filling shared by window planning, blending and the model.

Arrays are (bands, rows, cols) float32; resampling goes through Pillow's float ("F") mode, which
supports area (box), bilinear and Lanczos filters without a dependency on OpenCV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from typing import Optional

import numpy as np

_FILTERS = {"area": "BOX", "box": "BOX", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
            "lanczos": "LANCZOS", "nearest": "NEAREST"}


def resize(array: np.ndarray, shape: tuple[int, int], method: str = "lanczos") -> np.ndarray:
    """Resample a (bands, rows, cols) or (rows, cols) array to ``shape`` = (rows, cols)."""
    from PIL import Image

    squeeze = array.ndim == 2
    stack = array[None] if squeeze else array
    rows, cols = int(shape[0]), int(shape[1])
    if stack.shape[1:] == (rows, cols):
        return array.astype(np.float32, copy=True)
    resample = getattr(Image.Resampling, _FILTERS[method])
    out = np.empty((stack.shape[0], rows, cols), dtype=np.float32)
    for b in range(stack.shape[0]):
        img = Image.fromarray(np.ascontiguousarray(stack[b], dtype=np.float32), mode="F")
        out[b] = np.asarray(img.resize((cols, rows), resample=resample), dtype=np.float32)
    return out[0] if squeeze else out


def distance_to(mask: np.ndarray, limit: Optional[float] = None) -> np.ndarray:
    """Euclidean distance (pixels, float64) of every pixel to the nearest True pixel of ``mask``
    (0 on it; inf everywhere if it has none). With ``limit``, distances up to ``limit`` are exact
    and every farther pixel gets some value above it (inf where no mask pixel is within
    ``limit`` rows): computed in strips of rows that read ``limit`` rows beyond their own, so the
    transform's temporaries follow the strip. A whole-window transform of a large ROI's window
    costs about four times its output's memory; callers that only threshold near the mask
    pass the farthest distance they look at."""
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return np.full(mask.shape, np.inf)
    if limit is None:
        return distance_transform_edt(~mask)
    out = np.empty(mask.shape, np.float64)
    for top, bottom, a, b in row_strips(mask.shape[0], int(math.ceil(limit)) + 1):
        part = mask[a:b]
        out[top:bottom] = distance_transform_edt(~part)[top - a:bottom - a] if part.any() else np.inf
    return out


STRIP_ROWS = 512   # rows per strip of the strip-wise computations on large windows


def row_strips(rows: int, reach: int = 0):
    """(top, bottom, a, b) for strips of ``STRIP_ROWS`` rows covering ``rows``: a strip's own
    rows are top..bottom, and a..b are those it reads, ``reach`` more on each side (clipped),
    so a computation that looks at most ``reach`` rows away gives its rows as on the whole."""
    for top in range(0, rows, STRIP_ROWS):
        bottom = min(rows, top + STRIP_ROWS)
        yield top, bottom, max(0, top - reach), min(rows, bottom + reach)


def return_freed_memory() -> None:
    """Hand the memory of freed arrays back to the system (the C library's ``malloc_trim``) where
    the allocator would keep it for reuse: freed blocks of a few megabytes (bands of rows, strips,
    tiles) otherwise stay in the resident set, and the stages of a large window's edit add them
    up. Called between stages; costs a few milliseconds; a no-op without glibc."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def one_malloc_arena() -> None:
    """Make the C library's allocator serve every thread from one arena (``mallopt``
    M_ARENA_MAX = 1; a no-op without glibc). Each compute thread otherwise gets arenas of its
    own, whose freed blocks no other thread reuses: a 4096 px ROI's edit peaked 0.16 GB higher
    with them, and ran no faster (2 threads). Called when an editor is made, before its work
    starts threads."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, 1)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def fill_invalid(array: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy of a (bands, rows, cols) array whose invalid pixels take the value of the nearest
    valid pixel, so filters and models never see nodata values. All-invalid input is zeros."""
    from scipy.ndimage import distance_transform_edt

    if valid.all():
        return array.copy()
    if not valid.any():
        return np.zeros_like(array)
    _, (ri, ci) = distance_transform_edt(~valid, return_indices=True)
    return array[:, ri, ci]


def band_mean(image: np.ndarray, offset=None, span=None) -> np.ndarray:
    """The mean over bands of a (bands, rows, cols) image in float64, optionally of each band
    scaled as ``(band - offset[b]) / span[b]``, one band at a time (no float64 copy of the
    whole image); the same values as ``image.astype(np.float64).mean(axis=0)``."""
    total = None
    for b in range(image.shape[0]):
        band = image[b].astype(np.float64)
        if offset is not None:
            band = (band - offset[b]) / span[b]
        total = band if total is None else total + band
    return total / image.shape[0]


def crop_around(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns of the bounding box of ``mask`` grown by ``margin`` px, within the array
    (the whole array when ``mask`` is empty). A computation that reads nothing farther than
    ``margin`` from the mask gives the same values on this crop as on the whole window, at the
    memory of the mask's box rather than the window's (a large ROI's window holds tens of
    megapixels)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    return (slice(max(0, rows[0] - margin), min(mask.shape[0], rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(mask.shape[1], cols[-1] + 1 + margin)))


def _box(array: np.ndarray, radius: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return uniform_filter(array, 2 * radius + 1, mode="reflect")


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of ``source`` (rows, cols) by ``guide`` (rows, cols): the
    output is locally a linear function of the guide, fitted over (2r+1)^2 boxes (He et al.'s
    guided filter), so edges of the guide survive and detail the guide lacks does not."""
    mean_g, mean_s = _box(guide, radius), _box(source, radius)
    cov = _box(guide * source, radius) - mean_g * mean_s
    var = _box(guide * guide, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return _box(a, radius) * guide + _box(b, radius)


def smooth_chroma(image: np.ndarray, radius: int = 2, eps: float = 1e-3) -> np.ndarray:
    """Keep the band-mean (luminance) of a (bands, rows, cols) image and guide-filter each band's
    difference from it by the luminance: fine colour detail that does not follow a luminance
    edge (single-pixel colour speckle) goes, colour edges that do follow one stay. Real imagery
    carries little such detail (sensors and JPEG subsample colour for the same reason).
    Values are in [-1, 1]; images with fewer than two bands are returned unchanged."""
    if image.shape[0] < 2 or radius <= 0:
        return image.astype(np.float32, copy=True)
    out = np.empty(image.shape, np.float32)
    # In strips of rows, a band at a time, in float64: the filter's temporaries follow the strip,
    # not the image (a large ROI's window holds tens of megapixels). Its two box passes reach
    # 2 * radius rows, so a strip read with that many rows more on each side gives its rows
    # exactly as the whole image would.
    for top, bottom, a, b in row_strips(image.shape[1], 2 * radius):
        part = image[:, a:b]
        lum = band_mean(part)
        for band in range(image.shape[0]):
            smoothed = lum + guided_filter(lum, part[band].astype(np.float64) - lum, radius, eps)
            out[band, top:bottom] = np.clip(smoothed[top - a:bottom - a], -1.0, 1.0)
    return out

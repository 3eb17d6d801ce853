"""The image pyramid of SinDDM, computed from the window itself.

Scale 0 is the coarsest: its short side is ``sqrt(3110 * short / long)`` clamped to 42..55 px
(an area of about 3110 px whatever the aspect ratio). Unlike the reference, which first shrinks
images to ~50k pixels, the finest scale here is the window's native resolution. The scale factor
(nominally 1.411) is refitted so that the steps between scales are equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..imaging import resize

COARSE_AREA = 3110.0
COARSE_MIN, COARSE_MAX = 42, 55


@dataclass(frozen=True)
class PyramidSpec:
    sizes: tuple[tuple[int, int], ...]   # (rows, cols) per scale, coarsest first
    factor: float                        # refitted scale factor between neighbouring scales

    @property
    def n_scales(self) -> int:
        return len(self.sizes)


def pyramid_spec(height: int, width: int, factor: float = 1.411) -> PyramidSpec:
    """Scale sizes for a window of ``height`` x ``width`` pixels."""
    short, long = min(height, width), max(height, width)
    coarse_short = min(max(math.sqrt(COARSE_AREA * short / long), COARSE_MIN), COARSE_MAX)
    if short <= coarse_short:
        return PyramidSpec(((height, width),), 1.0)
    n_scales = max(1, round(math.log(short / coarse_short) / math.log(factor)) + 1)
    if n_scales == 1:
        return PyramidSpec(((height, width),), 1.0)
    fitted = (short / coarse_short) ** (1.0 / (n_scales - 1))
    sizes = []
    for s in range(n_scales):
        shrink = fitted ** (n_scales - 1 - s)
        sizes.append((max(1, round(height / shrink)), max(1, round(width / shrink))))
    sizes[-1] = (height, width)
    return PyramidSpec(tuple(sizes), fitted)


@dataclass
class Pyramid:
    """The images of every scale and, for s > 0, the blurry input (the upsampled scale s-1)."""

    spec: PyramidSpec
    images: list[np.ndarray]       # (bands, rows, cols) float32 in [-1, 1]; the finest may be the input, never written
    blurry: list[np.ndarray]       # blurry[0] is images[0] (unused)
    valid: list[np.ndarray]        # (rows, cols) bool
    recon_error: list[float]       # RMS(blurry_s - image_s) over valid pixels; 0 for s = 0


def build_pyramid(image: np.ndarray, valid: np.ndarray, factor: float = 1.411) -> Pyramid:
    """Resize the window to every scale (Lanczos from the original each time)."""
    spec = pyramid_spec(image.shape[1], image.shape[2], factor)
    images, blurry, valids, errors = [], [], [], []
    for s, size in enumerate(spec.sizes):
        if tuple(size) == image.shape[1:] and image.dtype == np.float32 and -1.0 <= image.min() <= image.max() <= 1.0:
            img = image   # the window itself, not a copy: at native resolution a copy is a window's worth
        else:
            img = resize(image, size, "lanczos")
            np.clip(img, -1.0, 1.0, out=img)
        ok = resize(valid.astype(np.float32), size, "area") > 0.999 if s < spec.n_scales - 1 else valid.copy()
        images.append(img)
        valids.append(ok)
        if s == 0:
            blurry.append(img)
            errors.append(0.0)
            continue
        up = upsample(images[s - 1], size)
        blurry.append(up)
        errors.append(_rms_difference(up, img, ok))
    return Pyramid(spec, images, blurry, valids, errors)


def _rms_difference(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    """RMS of ``a - b`` over the valid pixels of every band, in float64: the difference of two
    images in [-1, 1], never wrapped around. A band at a time, since at native resolution a
    float64 copy of a large window is hundreds of megabytes; 0 without a valid pixel."""
    every = bool(valid.all())
    total, count = 0.0, 0
    for band_a, band_b in zip(a, b):
        diff = band_a.astype(np.float64)
        diff -= band_b
        diff = diff.ravel() if every else diff[valid]
        total += float(np.dot(diff, diff))
        count += diff.size
    return math.sqrt(total / count) if count else 0.0


def upsample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling, the operator that links neighbouring scales."""
    return resize(image, size, "bilinear")


def mask_pyramid(mask: np.ndarray, sizes) -> list[np.ndarray]:
    """A boolean mask at every scale: a pixel is in the mask if any of it is (area > 0)."""
    out = []
    for size in sizes:
        if tuple(size) == mask.shape:
            out.append(mask.copy())
        else:
            out.append(resize(mask.astype(np.float32), size, "area") > 1e-3)
    return out

"""The image pyramid of SinDDM, computed from the window itself.

Scale 0 is the coarsest: its short side is ``sqrt(3110 * short / long)`` clamped to 42..55 px
(an area of about 3110 px whatever the aspect ratio). Unlike the reference, which first shrinks
images to ~50k pixels, the finest scale here is the window's native resolution. The scale factor
(nominally 1.411) is refitted so that the steps between scales are equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..imaging import resize, row_strips

SCALE_FACTOR = 1.411   # nominal factor between scales, refitted to the window

COARSE_AREA = 3110.0
COARSE_MIN, COARSE_MAX = 42, 55
# A scale of more pixels holds no blurry copy: training upsamples the scale below for each crop it
# draws (upsample_crop, equal to the whole upsampled image to float rounding). At native
# resolution the blurry inputs of a 5120 px window would hold another ~0.5 GB.
HELD_BLUR_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class PyramidSpec:
    sizes: tuple[tuple[int, int], ...]   # (rows, cols) per scale, coarsest first
    factor: float                        # refitted scale factor between neighbouring scales

    @property
    def n_scales(self) -> int:
        return len(self.sizes)


def pyramid_spec(height: int, width: int, factor: float = SCALE_FACTOR) -> PyramidSpec:
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
    """The images of every scale and, for s > 0, the blurry input (the upsampled scale s-1);
    None for a scale of more than ``HELD_BLUR_PIXELS``, whose crops are upsampled when drawn."""

    spec: PyramidSpec
    images: list[np.ndarray]       # (bands, rows, cols) float32 in [-1, 1]; the finest may be the input, never written
    blurry: list[Optional[np.ndarray]]   # blurry[0] is images[0] (unused)
    valid: list[np.ndarray]        # (rows, cols) bool
    recon_error: list[float]       # RMS(blurry_s - image_s) over valid pixels; 0 for s = 0


def build_pyramid(image: np.ndarray, valid: np.ndarray, factor: float = SCALE_FACTOR) -> Pyramid:
    """Resize the window to every scale (Lanczos from the original each time)."""
    spec = pyramid_spec(image.shape[1], image.shape[2], factor)
    images, blurry, valids, errors = [], [], [], []
    every_valid = bool(valid.all())
    for s, size in enumerate(spec.sizes):
        if tuple(size) == image.shape[1:] and image.dtype == np.float32 and -1.0 <= image.min() <= image.max() <= 1.0:
            img = image   # the window itself, not a copy: at native resolution a copy is a window's worth
        else:
            img = resize(image, size, "lanczos")
            np.clip(img, -1.0, 1.0, out=img)
        if s == spec.n_scales - 1:
            ok = valid.copy()
        elif every_valid:   # no float copy of the mask to resize: every pixel of every scale is valid
            ok = np.ones(size, bool)
        else:
            ok = resize(valid.astype(np.float32), size, "area") > 0.999
        images.append(img)
        valids.append(ok)
        if s == 0:
            blurry.append(img)
            errors.append(0.0)
            continue
        if size[0] * size[1] <= HELD_BLUR_PIXELS:
            up = upsample(images[s - 1], size)
            blurry.append(up)
            total, count = _squared_difference(up, img, ok)
        else:   # the error strip by strip, from the same upsampling that training's crops get
            blurry.append(None)
            below, total, count = torch.from_numpy(images[s - 1]), 0.0, 0
            for top, bottom, _, _ in row_strips(size[0]):
                up = upsample_crop(below, size, (top, bottom), (0, size[1])).numpy()
                part = _squared_difference(up, img[:, top:bottom], ok[top:bottom])
                total, count = total + part[0], count + part[1]
        errors.append(math.sqrt(total / count) if count else 0.0)
    return Pyramid(spec, images, blurry, valids, errors)


def _squared_difference(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[float, int]:
    """(sum of squares of ``a - b``, count) over the valid pixels of every band, in float64: the
    difference of two images in [-1, 1], never wrapped around. A band at a time, since at native
    resolution a float64 copy of a large window is hundreds of megabytes."""
    every = bool(valid.all())
    total, count = 0.0, 0
    for band_a, band_b in zip(a, b):
        diff = band_a.astype(np.float64)
        diff -= band_b
        diff = diff.ravel() if every else diff[valid]
        total += float(np.dot(diff, diff))
        count += diff.size
    return total, count


def upsample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling, the operator that links neighbouring scales."""
    return resize(image, size, "bilinear")


def blur_level(image: np.ndarray, below: tuple[int, int]) -> np.ndarray:
    """``image`` of a scale taken down to the scale below (size ``below``) and back up: the blur
    a scale's input has (its pyramid ``blurry`` when ``image`` is the scale's own image)."""
    return upsample(resize(image, below, "lanczos"), image.shape[-2:])


def _bilinear_taps(n_out: int, n_in: int, start: int, stop: int):
    """For output positions [start, stop) of an axis upsampled from ``n_in`` to ``n_out`` px
    (pixel centres aligned, edges clamped): the lower and upper source index and the upper's weight."""
    pos = ((torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    low = pos.floor().long().clamp(max=n_in - 1)
    return low, (low + 1).clamp(max=n_in - 1), (pos - low).float()


def upsample_crop(image: torch.Tensor, size: tuple[int, int], rows: tuple[int, int],
                  cols: tuple[int, int]) -> torch.Tensor:
    """Rows [r0, r1) and columns [c0, c1) of ``upsample(image, size)`` for a (bands, h, w) image,
    computed from the part of ``image`` they read: the same bilinear weights, so equal to the
    crop of the whole upsampled image to float rounding, at the cost of the crop."""
    (h, w), dtype = image.shape[-2:], image.dtype
    top, bottom, wr = _bilinear_taps(size[0], h, *rows)
    left, right, wc = _bilinear_taps(size[1], w, *cols)
    a, c = int(top[0]), int(left[0])
    part = image[..., a:int(bottom[-1]) + 1, c:int(right[-1]) + 1].float()
    wr = wr[:, None]
    mixed = part[..., top - a, :] * (1 - wr) + part[..., bottom - a, :] * wr
    return (mixed[..., left - c] * (1 - wc) + mixed[..., right - c] * wc).to(dtype)


def mask_pyramid(mask: np.ndarray, sizes) -> list[np.ndarray]:
    """A boolean mask at every scale: a pixel is in the mask if any of it is (area > 0)."""
    out = []
    for size in sizes:
        if tuple(size) == mask.shape:
            out.append(mask.copy())
        else:
            out.append(resize(mask.astype(np.float32), size, "area") > 1e-3)
    return out

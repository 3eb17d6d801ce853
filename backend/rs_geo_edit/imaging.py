"""Array resampling and hole filling shared by window planning, blending and the model.

Arrays are (bands, rows, cols) float32; resampling goes through Pillow's float ("F") mode, which
supports area (box), bilinear and Lanczos filters without a dependency on OpenCV.
"""

from __future__ import annotations

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

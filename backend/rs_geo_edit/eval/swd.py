"""Patch sliced-Wasserstein distance (SWD) between two images.

All (or ``max_patches`` random) 7x7 patches of each image, flattened, are projected on 256 random
unit directions; per direction the sorted projections are compared as quantiles, and the mean
absolute difference is the distance. Lower means closer patch statistics. Images are
(bands, rows, cols) in the same units (e.g. normalised [-1, 1]).
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def _patches(image: np.ndarray, size: int, max_patches: Optional[int], rng: np.random.Generator,
             valid: Optional[np.ndarray]) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(image, (size, size), axis=(1, 2))  # (bands, R, C, size, size)
    bands, rows, cols = windows.shape[:3]
    flat = windows.transpose(1, 2, 0, 3, 4).reshape(rows * cols, bands * size * size)
    keep = np.arange(rows * cols)
    if valid is not None:
        ok = sliding_window_view(valid, (size, size)).all(axis=(2, 3)).reshape(-1)
        keep = keep[ok]
    if max_patches is not None and keep.size > max_patches:
        keep = rng.choice(keep, size=max_patches, replace=False)
    return flat[keep].astype(np.float64)


def patch_swd(a: np.ndarray, b: np.ndarray, *, patch: int = 7, directions: int = 256,
              max_patches: Optional[int] = 4096, seed: int = 0, valid_a: Optional[np.ndarray] = None,
              valid_b: Optional[np.ndarray] = None) -> float:
    """SWD between the patch distributions of ``a`` and ``b`` (same band count)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"band counts differ: {a.shape[0]} vs {b.shape[0]}")
    rng = np.random.default_rng(seed)
    pa = _patches(a, patch, max_patches, rng, valid_a)
    pb = _patches(b, patch, max_patches, rng, valid_b)
    if len(pa) == 0 or len(pb) == 0:
        return float("nan")
    dirs = rng.standard_normal((pa.shape[1], directions))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    qa = np.sort(pa @ dirs, axis=0)
    qb = np.sort(pb @ dirs, axis=0)
    if len(qa) != len(qb):  # compare at common quantile levels
        levels = np.linspace(0, 1, min(len(qa), len(qb)))
        qa = np.quantile(qa, levels, axis=0)
        qb = np.quantile(qb, levels, axis=0)
    return float(np.abs(qa - qb).mean())

"""Quick-look PNGs: a scene (or window) stretched to 8-bit RGB, with windows and ROIs drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def stretch_rgb(pixels: np.ndarray, rgb: Sequence[int], valid: Optional[np.ndarray] = None,
                limits: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols, 3) uint8 of the ``rgb`` band positions of ``pixels`` (bands, rows, cols),
    stretched per band between the 2nd and 98th percentile of the valid pixels (or ``limits``,
    a (3, 2) array, so that before/after images share one stretch). Returns (image, limits)."""
    bands = pixels[list(rgb)].astype(np.float64)
    if valid is None:
        valid = np.ones(bands.shape[1:], bool)
    if limits is None:
        limits = np.zeros((3, 2))
        for b in range(3):
            values = bands[b][valid & np.isfinite(bands[b])]
            limits[b] = np.percentile(values, (2, 98)) if values.size else (0.0, 1.0)
    out = np.zeros(bands.shape[1:] + (3,), np.uint8)
    for b in range(3):
        lo, hi = limits[b]
        scaled = (bands[b] - lo) / max(hi - lo, 1e-12)
        out[..., b] = np.clip(np.nan_to_num(scaled) * 255.0, 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out, limits


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    from .raster import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def render_plan(scene: str | Path, plan, path: str | Path, max_side: int = 1024) -> Path:
    """Draw the window plan (yellow) and ROIs (red) over a decimated scene and save a PNG."""
    from PIL import Image, ImageDraw
    from affine import Affine

    from .raster import open_scene
    from .windows import to_pixel_space

    with open_scene(scene) as src:
        factor = max(1.0, max(src.width, src.height) / max_side)
        shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
        bands = [plan.bands[i] for i in plan.rgb]
        pixels = src.read(bands, out_shape=(3,) + shape)
        valid = src.dataset_mask(out_shape=shape) > 0
    image, _ = stretch_rgb(pixels, [0, 1, 2], valid)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    transform = Affine(*plan.transform[:6])
    sx, sy = shape[1] / plan.width, shape[0] / plan.height
    for ew in plan.windows:
        w = ew.window
        box = [w.col_off * sx, w.row_off * sy, (w.col_off + w.width) * sx - 1, (w.row_off + w.height) * sy - 1]
        draw.rectangle(box, outline=(255, 220, 0), width=2)
        draw.text((box[0] + 4, box[1] + 2), f"w{ew.index}", fill=(255, 220, 0))
        for roi in ew.rois:
            geom = to_pixel_space(roi.geometry, transform)
            for poly in getattr(geom, "geoms", [geom]):
                draw.line([(x * sx, y * sy) for x, y in poly.exterior.coords], fill=(255, 40, 40), width=2)
    return save_png(np.asarray(canvas), path)

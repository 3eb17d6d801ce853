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


def render_before_after(scene: str | Path, output: str | Path, plan, path: str | Path, max_side: int = 768) -> Path:
    """Side-by-side PNG of every edit window, source on the left and edit on the right, with the
    ROIs outlined; both halves share one stretch so colours compare."""
    from PIL import Image, ImageDraw
    from affine import Affine

    from .raster import open_scene
    from .windows import to_pixel_space

    transform = Affine(*plan.transform[:6])
    bands = [plan.bands[i] for i in plan.rgb]
    rows = []
    with open_scene(scene) as src, open_scene(output) as dst:
        for ew in plan.windows:
            before = src.read(bands, window=ew.window)
            after = dst.read(bands, window=ew.window)
            valid = src.dataset_mask(window=ew.window) > 0
            left, limits = stretch_rgb(before, [0, 1, 2], valid)
            right, _ = stretch_rgb(after, [0, 1, 2], valid, limits)
            h, w = left.shape[:2]
            pair = Image.new("RGB", (2 * w + 8, h), (255, 255, 255))
            pair.paste(Image.fromarray(left), (0, 0))
            pair.paste(Image.fromarray(right), (w + 8, 0))
            draw = ImageDraw.Draw(pair)
            for roi in ew.rois:
                geom = to_pixel_space(roi.geometry, transform)
                for poly in getattr(geom, "geoms", [geom]):
                    pts = [(x - ew.window.col_off, y - ew.window.row_off) for x, y in poly.exterior.coords]
                    draw.line(pts, fill=(255, 40, 40), width=1)
                    draw.line([(x + w + 8, y) for x, y in pts], fill=(255, 40, 40), width=1)
            scale = min(1.0, max_side / max(pair.size))
            if scale < 1.0:
                pair = pair.resize((round(pair.size[0] * scale), round(pair.size[1] * scale)), Image.Resampling.LANCZOS)
            rows.append(pair)
    width = max(r.size[0] for r in rows)
    sheet = Image.new("RGB", (width, sum(r.size[1] for r in rows) + 8 * (len(rows) - 1)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.size[1] + 8
    return save_png(np.asarray(sheet), path)

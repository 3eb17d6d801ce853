"""Window planning: one window of context around each ROI, merged where they overlap.

A window is the ROI's pixel bounding box grown by a context margin of
``max(margin_px, min(margin_frac * ROI extent, margin_max_px))`` on each axis (``margin_max_px``
0: no limit), clamped to the scene and snapped to whole pixels. The limit keeps a large ROI's
window from growing with the square of its margin: context is what the model learns the
surroundings from, and a few hundred pixels of it serve an ROI of any size. ROIs whose windows
overlap share one window (so no pixel is edited twice and the model sees the joint context).

Reduced resolution (opt-in, ``max_side`` > 0): a window whose longer side exceeds ``max_side``
is edited at a working size scaled by ``max_side / longer side`` (area-resampled), and the edit
is brought back to full resolution (Lanczos) before blending. This saves time; the price is that
generated content inside such a window has the detail of the working resolution. By default
windows are edited at native resolution (the sampler tiles large scales, so memory stays bounded).
Pixels outside the ROIs are never taken from the resampled window, so they stay exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from affine import Affine
from rasterio.windows import Window

from .aoi import ROI


@dataclass
class EditWindow:
    """A window of the scene (integer pixel offsets and sizes) and the ROIs edited inside it."""

    index: int
    window: Window
    rois: list[ROI]
    scale: float = 1.0                      # working size / full size (<= 1)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.window.height), int(self.window.width)

    @property
    def work_shape(self) -> tuple[int, int]:
        h, w = self.shape
        if self.scale >= 1.0:
            return h, w
        return max(1, round(h * self.scale)), max(1, round(w * self.scale))

    @property
    def reduced(self) -> bool:
        return self.scale < 1.0

    def as_dict(self, transform: Affine) -> dict:
        h, w = self.shape
        return {
            "index": self.index,
            "col_off": int(self.window.col_off), "row_off": int(self.window.row_off),
            "width": w, "height": h,
            "bounds": list(window_bounds(self.window, transform)),
            "features": [r.feature for r in self.rois],
            "prompts": [r.prompt for r in self.rois],
            "scale": round(self.scale, 6),
            "work_shape": list(self.work_shape),
        }


def window_bounds(window: Window, transform: Affine) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a window in map units (north-up or not)."""
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    xs, ys = zip(*(transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))))
    return min(xs), min(ys), max(xs), max(ys)


def to_pixel_space(geometry, transform: Affine):
    """The geometry in (col, row) pixel coordinates of the scene's transform."""
    from shapely.affinity import affine_transform

    inv = ~transform
    return affine_transform(geometry, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


def pixel_bbox(geometry, transform: Affine) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the pixels a geometry touches, unclamped, end-exclusive."""
    minx, miny, maxx, maxy = to_pixel_space(geometry, transform).bounds
    # A tolerance of 0.01 px absorbs coordinate round-off (GeoJSON at 7-8 decimals, reprojection).
    eps = 1e-2
    return math.floor(miny + eps), math.floor(minx + eps), math.ceil(maxy - eps), math.ceil(maxx - eps)


def _grow(bbox, margin_px: int, margin_frac: float, height: int, width: int, margin_max_px: int = 0):
    r0, c0, r1, c1 = bbox

    def margin(extent: int) -> int:
        frac = math.ceil(margin_frac * extent)
        return max(margin_px, min(frac, margin_max_px) if margin_max_px > 0 else frac)

    my, mx = margin(r1 - r0), margin(c1 - c0)
    return max(0, r0 - my), max(0, c0 - mx), min(height, r1 + my), min(width, c1 + mx)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def plan_windows(rois: Sequence[ROI], transform: Affine, height: int, width: int, *,
                 margin_px: int = 64, margin_frac: float = 0.5, margin_max_px: int = 0, max_side: int = 0,
                 merge: bool = True) -> list[EditWindow]:
    """Plan the edit windows of ``rois`` on a scene of ``height`` x ``width`` pixels.

    Returns windows ordered by (row, col) of their top-left corner; each holds its ROIs.
    """
    boxes: list[tuple[tuple[int, int, int, int], list[ROI]]] = []
    for roi in rois:
        r0, c0, r1, c1 = pixel_bbox(roi.geometry, transform)
        r0, c0, r1, c1 = max(0, r0), max(0, c0), min(height, r1), min(width, c1)
        if r1 <= r0 or c1 <= c0:
            continue
        boxes.append((_grow((r0, c0, r1, c1), margin_px, margin_frac, height, width, margin_max_px), [roi]))

    changed = merge
    while changed:
        changed = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _overlap(boxes[i][0], boxes[j][0]):
                    a, b = boxes[i][0], boxes[j][0]
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    boxes[i] = (union, boxes[i][1] + boxes[j][1])
                    del boxes[j]
                    changed = True
                    break
            if changed:
                break

    boxes.sort(key=lambda item: (item[0][0], item[0][1]))
    plan = []
    for index, ((r0, c0, r1, c1), members) in enumerate(boxes):
        members = sorted(members, key=lambda r: r.feature)
        plan.append(EditWindow(index, Window(c0, r0, c1 - c0, r1 - r0), members, _scale(r1 - r0, c1 - c0, max_side)))
    return plan


def whole_window(index: int, rois: Sequence[ROI], height: int, width: int, max_side: int = 0) -> EditWindow:
    """Window ``index`` of a plan made elsewhere, covering a whole ``height`` x ``width`` grid: a
    planned window cropped into a file of its own (what a client uploads), with its ``rois``."""
    return EditWindow(index, Window(0, 0, width, height), sorted(rois, key=lambda r: r.feature),
                      _scale(height, width, max_side))


def _scale(height: int, width: int, max_side: int) -> float:
    """Working size / full size of a window (1.0 unless ``max_side`` > 0 and the window exceeds it)."""
    return min(1.0, max_side / max(height, width)) if max_side > 0 else 1.0


def roi_labels(edit_window: EditWindow, transform: Affine) -> np.ndarray:
    """ROI labels rasterized in window pixels: 0 outside, k for the window's k-th ROI (1-based).

    ``all_touched`` rasterization, so thin ROIs still cover the pixels they cross.
    """
    from rasterio.features import rasterize
    from rasterio.windows import transform as window_transform

    h, w = edit_window.shape
    wt = window_transform(edit_window.window, transform)
    shapes = [(roi.geometry, k + 1) for k, roi in enumerate(edit_window.rois)]
    return rasterize(shapes, out_shape=(h, w), transform=wt, fill=0, all_touched=True, dtype="int16")


def geometry_mask_in_window(geometries, window: Window, transform: Affine) -> np.ndarray:
    """Boolean mask of ``geometries`` (scene CRS) in the pixels of ``window``."""
    from rasterio.features import geometry_mask
    from rasterio.windows import transform as window_transform

    return geometry_mask(list(geometries), out_shape=(int(window.height), int(window.width)),
                         transform=window_transform(window, transform), invert=True, all_touched=True)

"""Copy-mode inputs: where pasted content comes from and how it lands in each window.

A source is the first polygon with ``role=source`` in the AOI, polygons of a ``copy_from``
vector file, or a ``copy_from`` raster with the scene's data bands, gathered by the scene plan
(``plan.py``). Copy mode needs one; text mode uses one when given (the pasted content guides the
coarse scales).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from ..errors import IncompatibleOptions
from ..geo.aoi import ROI
from ..geo.raster import Normaliser, data_bands, open_scene, read_window, validity_mask
from ..geo.windows import EditWindow, geometry_mask_in_window, pixel_bbox
from ..imaging import resize

if TYPE_CHECKING:
    from .plan import ScenePlan

Donor = tuple[np.ndarray, np.ndarray]  # pixels in source units (bands, rows, cols), validity mask


def missing_source() -> IncompatibleOptions:
    return IncompatibleOptions("copy mode needs a source region: give a feature the attribute role=source in "
                               "the AOI file, or give `copy_from` a vector or raster")


class CopyInputs:
    """The copy content of each window of one scene: copy mode always has it (no source, or no
    source content landing on a window's ROIs, is the one "needs a source" error); text mode has
    it when a source was given. The donor is read once, on the first window that needs it."""

    def __init__(self, mode: str, plan: "ScenePlan", src, transform):
        given = bool(plan.copy_sources or plan.copy_raster)
        self.required = mode == "copy"
        self.active = self.required or (mode == "text" and given)
        if self.required and not given:
            raise missing_source()
        self.plan, self.src, self.transform = plan, src, transform
        self.donor: Optional[Donor] = None

    def for_window(self, ew: EditWindow, norm: Normaliser,
                   work_shape) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(content, mask) at the working resolution, or (None, None) without copy content."""
        if not self.active:
            return None, None
        if self.donor is None:
            self.donor = read_donor(self.src, self.plan, self.transform)
        content, mask = window_content(self.donor, ew, self.transform, norm, work_shape)
        if content is None and self.required:
            raise missing_source()
        return content, mask


def read_donor(src, plan: "ScenePlan", transform) -> Donor:
    """The content to paste, in source units, and where it is valid: from a ``copy_from``
    raster, else from the first source polygon, read from the scene ``src``."""
    from rasterio.windows import Window

    if plan.copy_raster is not None:
        with open_scene(plan.copy_raster) as donor_src:
            bands = data_bands(donor_src)
            if len(bands) != len(plan.bands):
                raise IncompatibleOptions(f"`copy_from` raster {str(plan.copy_raster)!r} has {len(bands)} data band(s), "
                                          f"the scene {len(plan.bands)}: give a raster with the same bands")
            full = Window(0, 0, donor_src.width, donor_src.height)
            pixels = read_window(donor_src, full)
            return pixels, validity_mask(donor_src, full, pixels)
    donor_roi = plan.copy_sources[0]
    r0, c0, r1, c1 = pixel_bbox(donor_roi.geometry, transform)
    r0, c0, r1, c1 = max(0, r0), max(0, c0), min(src.height, r1), min(src.width, c1)
    donor_window = Window(c0, r0, c1 - c0, r1 - r0)
    pixels = read_window(src, donor_window)
    valid = validity_mask(src, donor_window, pixels) & _mask_of([donor_roi], donor_window, transform)
    return pixels, valid


def window_content(donor: Donor, ew: EditWindow, transform, norm: Normaliser,
                   work_shape) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The donor resampled onto each target ROI's bounding box, as a window-aligned image at the
    working resolution (normalised with the window's normaliser) plus the mask where it holds
    content; (None, None) where no content lands in the window."""
    pixels, donor_valid = donor
    donor_n = norm.forward(pixels)
    h, w = ew.shape
    content = np.zeros((donor_n.shape[0], h, w), np.float32)
    has = np.zeros((h, w), bool)
    for roi in ew.rois:
        tr0, tc0, tr1, tc1 = pixel_bbox(roi.geometry, transform)
        th, tw = max(1, tr1 - tr0), max(1, tc1 - tc0)
        scaled = resize(donor_n, (th, tw), "lanczos")
        scaled_mask = resize(donor_valid.astype(np.float32), (th, tw), "bilinear") > 0.5
        wr, wc = tr0 - int(ew.window.row_off), tc0 - int(ew.window.col_off)
        rs, cs = max(0, -wr), max(0, -wc)
        re, ce = min(th, h - wr), min(tw, w - wc)
        if re <= rs or ce <= cs:
            continue
        content[:, wr + rs:wr + re, wc + cs:wc + ce] = scaled[:, rs:re, cs:ce]
        has[wr + rs:wr + re, wc + cs:wc + ce] |= scaled_mask[rs:re, cs:ce]
    if ew.reduced:
        content = resize(content, work_shape, "area")
        has = resize(has.astype(np.float32), work_shape, "area") > 0.5
    if not has.any():
        return None, None
    return content, has


def _mask_of(rois: list[ROI], window, transform) -> np.ndarray:
    return geometry_mask_in_window([r.geometry for r in rois], window, transform)

"""Copy mode: content from a source region pasted into the target ROIs while the model samples,
as a sampler stage (:class:`CopyPaste`), with the paste's ramp and wandering outline, the hold of
the original where the paste is not whole, and the paste's grain restored after sampling.
Studies behind the settings: docs/quality.md."""

from __future__ import annotations

import math

import numpy as np

from ..blend import DETAIL_SIGMAS, octave_energy, scale_octaves
from ..imaging import resize


class CopyPaste:
    """Content copy: pasted content replaces up to ``weight`` of the predicted clean image inside
    the target ROIs at every scale but the finest, which then harmonises it. The paste starts a
    little inside the ROI and fades in (see :func:`copy_ramp`), so the ROI's edge is generated in
    agreement with the surroundings rather than cut along the ROI's outline. With ``hold`` the
    original (the window's own image at that scale) replaces up to that much of the prediction
    where the paste is not whole, in proportion to what it lacks (all of it on the inset the
    paste leaves free, less and less over its ramp), on the coarser half of the scales, where the
    layout is decided: the model neither carries the pasted material out to the outline nor ends
    it along a hard line where the hold would stop (docs/quality.md: seam ratios 1.58 -> 0.92 and
    1.11 -> 0.98 where the donor's material lay along a whole side). Held at every scale, the
    donor faded in small ROIs; held on the inset alone, its material ended along a straight line
    a band inside the outline."""

    reads_finest = False   # a sampler stage that leaves the finest scale: it may run on the box of changed pixels
    HOLD_SCALES = 0.5      # the hold acts on the coarsest half of the scales (docs/quality.md)

    def __init__(self, contents: list, masks: list, weight: float, originals: list | None = None,
                 holds: list | None = None, hold: float = 0.0, ramp: np.ndarray | None = None):
        self.contents, self.masks, self.weight = contents, masks, weight
        n = len(contents)
        self.originals, self.holds, self.hold = originals or [None] * n, holds or [None] * n, hold
        self.finest = n - 1
        self.ramp = ramp   # the paste's weight at the window's size, for restore_grain

    @classmethod
    def build(cls, request, sizes, weight: float, band_px: float, device, hold: float = 0.0,
              wiggle: float = 0.0) -> "CopyPaste":
        """From the request's copy content (present whenever the pipeline asks for copy);
        ``band_px`` is the transition band, which sets the paste's inset and ramp, ``hold`` and
        ``wiggle`` as above and in :func:`copy_ramp`."""
        target = request.copy_mask & request.roi
        ramp = copy_ramp(target, band_px, 2 * band_px, wiggle, int(request.seed))
        n = len(sizes)
        contents, masks = [None] * n, [None] * n
        for s, size in enumerate(sizes[:-1]):   # the finest scale is left to the model
            contents[s] = _tensor(resize(request.copy_source, size, "lanczos"), device)
            masks[s] = _tensor(np.clip(resize(ramp, size, "area"), 0.0, 1.0)[None], device)
        originals, holds = _held(request.image, np.where(target, 1.0 - ramp, 0.0), sizes,
                                 cls.HOLD_SCALES * (n - 1) if hold > 0 else 0, device)
        return cls(contents, masks, weight, originals, holds, hold, ramp)

    def __call__(self, x0, scale: int, t: int):
        if scale == self.finest:
            return x0
        out = x0
        if self.contents[scale] is not None:
            m = self.masks[scale] * self.weight
            out = m * self.contents[scale] + (1 - m) * x0
        if self.holds[scale] is not None:
            h = self.holds[scale] * self.hold
            out = h * self.originals[scale] + (1 - h) * out
        return out


def _tensor(array: np.ndarray, device):
    """(C, H, W) float32 array -> (1, C, H, W) tensor on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, np.float32))[None].to(device)


def _held(image: np.ndarray, lacking: np.ndarray, sizes, below: float, device) -> tuple[list, list]:
    """The original and the hold's weight map (``lacking``, window-sized) at every scale below
    ``below``; None at the others."""
    originals, holds = [None] * len(sizes), [None] * len(sizes)
    for s, size in enumerate(sizes):
        if s < below:
            originals[s] = _tensor(np.clip(resize(image, size, "lanczos"), -1, 1), device)
            holds[s] = _tensor(np.clip(resize(lacking.astype(np.float32), size, "area"), 0.0, 1.0)[None], device)
    return originals, holds


def copy_ramp(target: np.ndarray, inset_px: float, ramp_px: float, wiggle: float = 0.0, seed: int = 0) -> np.ndarray:
    """The paste's weight in [0, 1]: 0 outside ``target`` and within ``inset_px`` of its edge,
    then rising linearly with the distance inside over ``ramp_px`` pixels, 1 beyond. The inset
    is at most a quarter of the target's depth and the ramp at most half, so a small ROI keeps a
    core of pasted content.

    Measured with the realism bench (docs/quality.md): a paste reaching the ROI's edge, even at
    a low weight, leaves the outline as a straight material edge (seam ratios of 2-5; a ramp
    from the edge alone, 1.2-5). With a band-wide inset the model generates the ROI's rim as a
    continuation of the surroundings, as in ``regenerate``, and the pasted material begins
    further in, along an outline the model draws (seam 0.94-1.09 in seven of the bench's nine
    cases).

    With ``wiggle`` the paste starts further in by up to that fraction of the depth its whole
    core reaches beyond the inset and ramp (2 px in a 64 px square, 5 px in 128, 31 px in
    300), varying smoothly along the outline (:func:`wander`, drawn from ``seed``): a square donor
    pasted into a square ROI otherwise ends along a straight line parallel to each side, which
    shows at 1x on ROIs of 300 px and more where the donor's material differs from the
    surroundings (forest pasted against snow)."""
    from scipy.ndimage import distance_transform_edt

    if not target.any():
        return np.zeros(target.shape, np.float32)
    inside = distance_transform_edt(target)
    depth = float(inside.max())
    inset = min(float(inset_px), depth / 4)
    ramp = max(1.0, min(float(ramp_px), depth / 2))
    core = depth - inset - ramp   # how deep the whole paste reaches: the wiggle takes from it
    if wiggle > 0 and core >= 1:
        inside = inside - wiggle * core * wander(target.shape, depth / 4, seed)
    return np.clip((inside - inset) / ramp, 0.0, 1.0).astype(np.float32)


def wander(shape: tuple[int, int], scale: float, seed: int) -> np.ndarray:
    """A smooth random field in [0, 1] (about 0.5 on average) whose features are ``scale`` px
    across, drawn on a grid of that spacing and upsampled, so a large window costs no more than
    its own float32 copy."""
    from scipy.ndimage import gaussian_filter

    step = max(1.0, float(scale) / 2)
    grid = (int(math.ceil(shape[0] / step)) + 3, int(math.ceil(shape[1] / step)) + 3)
    coarse = gaussian_filter(np.random.default_rng(seed).standard_normal(grid), 1.0, mode="wrap")
    coarse = np.clip(0.5 + coarse / (4 * max(float(coarse.std()), 1e-12)), 0.0, 1.0).astype(np.float32)
    fine = resize(coarse, (int(round(grid[0] * step)), int(round(grid[1] * step))), "bicubic")
    return np.clip(fine[:shape[0], :shape[1]], 0.0, 1.0)


def restore_grain(edited: np.ndarray, donor: np.ndarray, weight: np.ndarray, gain_max: float) -> tuple[np.ndarray, list[float]]:
    """Copy mode's grain: where the pasted content shows (``weight``, the paste's weight per
    pixel), the generated texture takes the donor's own detail, octave by octave, when it came
    out calmer. Per octave, the mean |detail| of the luminance (band mean) of ``edited`` where
    the paste is at least half is compared with ``donor``'s there, and the octave is raised by
    their ratio, clamped to [1, ``gain_max``], weighted by ``weight``: a paste never gets more
    detail than the donor has, nothing is calmed (``blend.match_detail`` does that against the
    surroundings), and the ROI's rim, where the paste fades out, is left as generated. Measured
    with the realism bench (docs/quality.md): the model draws a pasted texture calmer than the
    donor (forest into the mixed place: 0.80 of its ring in the paste's core, the donor 0.97).
    Arrays are window-sized, in the same units; returns the result and the gains, finest
    octave first."""
    gains = [1.0] * len(DETAIL_SIGMAS)
    core = weight >= 0.5
    if gain_max <= 1.0 or core.sum() < 16:
        return edited, gains
    own = octave_energy(edited.mean(axis=0), core)
    wanted = octave_energy(donor.mean(axis=0), core)
    gains = [float(np.clip(d / e, 1.0, gain_max)) if e > 1e-9 else 1.0 for e, d in zip(own, wanted)]
    return scale_octaves(edited, list(range(edited.shape[0])), gains, weight), [round(g, 4) for g in gains]

"""A SinDDM sampler stage that makes the clean estimate of the finest scales of real patches.

At those scales an under-trained net predicts the average of the textures it could draw, which
is fog. There, at every step, the stage remakes the net's clean estimate inside the region the
sampler draws (ROI and band) of the window's own patches (``bank.py``): the estimate, taken to
the blur level of the scale below, is matched against the scene's patches at that level and
their sharp versions are copied; the net's layout stays, its grain is replaced by the scene's.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..model.pyramid import blur_level, mask_pyramid
from .bank import PatchBank, as_tensor


class PatchStage:
    """The ``model.sampler.Stage`` for the finest ``scales`` scales. ``images`` are the window's
    clean images per scale (coarsest first), ``exclude`` the ROI per scale (bool: no patch is
    taken from it) and ``free`` per scale how much of a pixel the sampler draws (1 - keep)."""

    reads_finest = True

    def __init__(self, images: list[np.ndarray], exclude: list[np.ndarray], free: list[np.ndarray], scales: int,
                 seed: int = 0):
        self.sizes = [tuple(image.shape[1:]) for image in images]
        self.first = max(1, len(images) - scales)   # the coarsest scale has no level below to match at
        self.images, self.exclude, self.free, self.seed = images, exclude, free, int(seed)
        self._banks: dict[int, PatchBank] = {}

    def __call__(self, x0: torch.Tensor, scale: int, t: int) -> torch.Tensor:
        if scale < self.first:
            return x0
        bank = self._bank(scale)
        free = as_tensor(self.free[scale])
        estimate = x0[0].cpu()
        made = bank.estimate(as_tensor(blur_level(estimate.numpy(), self.sizes[scale - 1])), free > 0)
        return (estimate + free[None] * (made - estimate))[None].to(x0.device)

    def _bank(self, scale: int) -> PatchBank:
        """The scale's patches, built at its first step; the previous scale's bank is let go."""
        if scale not in self._banks:
            self._banks = {}
            image = self.images[scale]
            keys = as_tensor(blur_level(image, self.sizes[scale - 1]))
            self._banks[scale] = PatchBank(as_tensor(image), torch.from_numpy(self.exclude[scale]), key_image=keys,
                                           seed=self.seed + scale)
        return self._banks[scale]


def patch_stage(images: list[np.ndarray], roi: np.ndarray, keep: list[np.ndarray], scales: int,
                seed: int) -> Optional[PatchStage]:
    """The stage for ``scales`` > 0 finest scales (None for 0), from the window's clean images,
    its ROI and the sampler's keep masks per scale."""
    if scales <= 0 or len(images) < 2:
        return None
    sizes = [tuple(image.shape[1:]) for image in images]
    return PatchStage(images, mask_pyramid(roi, sizes), [1.0 - k for k in keep], scales, seed)

"""A SinDDM sampler stage that makes the clean estimate of the finest scales of real patches.

At those scales an under-trained net predicts the average of the textures it could draw, which
is fog. There, at every step, the stage remakes the net's clean estimate inside the region the
sampler draws (ROI and band) of the window's own patches: a coherent nearest-neighbour field
(``match.py``) matches the estimate, taken to the blur level of the scale below, against the
scene's patches at that level, and each pixel takes the sharp centre of its match. The field is
kept from step to step and carried up from scale to scale, so a step refines it in one round;
the net's layout stays, its grain is replaced by the scene's.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..model.pyramid import blur_level, mask_pyramid
from .ops import PATCH, as_tensor
from .fill import VOTE_SIGMA
from .match import Matcher, carry, near, outside, similarity, vote

STEP_ROUNDS = 2   # propagation and random-search rounds per sampler step (the field is kept between steps)


class PatchStage:
    """The ``model.sampler.Stage`` for the finest ``scales`` scales. ``images`` are the window's
    clean images per scale (coarsest first), ``exclude`` the ROI per scale (bool: no patch is
    taken from it) and ``free`` per scale how much of a pixel the sampler draws (1 - keep)."""

    reads_finest = True

    def __init__(self, images: list[np.ndarray], exclude: list[np.ndarray], free: list[np.ndarray], scales: int,
                 seed: int = 0):
        self.sizes = [tuple(image.shape[1:]) for image in images]
        self.first = max(1, len(images) - scales)   # the coarsest scale has no level below to match at
        self.images, self.exclude, self.free = images, exclude, free
        self.generator = torch.Generator().manual_seed(int(seed))
        self.scale, self.matcher, self.field = -1, None, None

    def __call__(self, x0: torch.Tensor, scale: int, t: int) -> torch.Tensor:
        if scale < self.first:
            return x0
        if scale != self.scale:
            self._begin(scale)
        free = as_tensor(self.free[scale])
        estimate = x0[0].cpu()
        query = as_tensor(blur_level(estimate.numpy(), self.sizes[scale - 1]))
        self.field = self.matcher.improve(self.field, query, STEP_ROUNDS)
        made = vote(as_tensor(self.images[scale]), self.field, self.sizes[scale], PATCH,
                    similarity(self.field.costs), VOTE_SIGMA)
        made = torch.where(torch.isnan(made), estimate, made)
        return (estimate + free[None] * (made - estimate))[None].to(x0.device)

    def _begin(self, scale: int) -> None:
        """The scale's matcher (keys at the blur level of the scale below) and its field: carried
        up from the scale below where the stage ran there, else random."""
        image, below = self.images[scale], self.sizes[scale - 1]
        allowed = outside(torch.from_numpy(self.exclude[scale]), PATCH)
        matcher = Matcher(as_tensor(blur_level(image, below)), allowed, PATCH, self.generator)
        targets = near(torch.from_numpy(self.free[scale] > 0), PATCH)
        if self.field is not None and self.scale == scale - 1:
            self.field = carry(self.field, below, self.sizes[scale], targets, matcher)
        else:
            self.field = matcher.random(targets)
        self.scale, self.matcher = scale, matcher


def patch_stage(images: list[np.ndarray], roi: np.ndarray, keep: list[np.ndarray], scales: int,
                seed: int) -> Optional[PatchStage]:
    """The stage for ``scales`` > 0 finest scales (None for 0), from the window's clean images,
    its ROI and the sampler's keep masks per scale."""
    if scales <= 0 or len(images) < 2:
        return None
    sizes = [tuple(image.shape[1:]) for image in images]
    return PatchStage(images, mask_pyramid(roi, sizes), [1.0 - k for k in keep], scales, seed)

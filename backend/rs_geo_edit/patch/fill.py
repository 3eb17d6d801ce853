"""A content-aware fill made of the window's own patches, coarse to fine, with no training.

At the coarsest scale the region to fill starts from the original noised by ``novelty`` (so a
road or a coast keeps running through it) or from pasted content, and is remade of real patches
from outside the ROI a few times; each finer scale upsamples the result and remakes it again,
matching queries and keys at the blur level of the scale below (the keys are the pyramid's
upsampled scale below, the queries the result taken down and up the same way) while copying the
scale's sharp values. Beyond the ROI the original is kept as the keep masks say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..model.pyramid import Pyramid, blur_level, upsample
from .bank import PATCH, PatchBank, as_tensor, blur, grow

COARSE_ITERATIONS = 6   # remakes at the coarsest scale, where the layout settles
ITERATIONS = 2          # remakes at every finer scale
START_SMOOTH = 1.5      # the coarsest start's noise is smooth over this many pixels: it moves layout, not grain
COARSE_BLUR = 1.0       # the coarsest scale matches queries and keys blurred by this much, pixels


@dataclass
class FillInputs:
    """One window's pyramid (``images`` and ``blurry`` per scale, coarsest first), the ROI
    (``exclude``, bool) and keep masks (float, 1 = the original) per scale, and for copy mode
    the donor content and its weight per scale (None elsewhere)."""

    pyramid: Pyramid
    exclude: list[np.ndarray]
    keep: list[np.ndarray]
    donors: Optional[list[Optional[np.ndarray]]] = None
    donor_weights: Optional[list[Optional[np.ndarray]]] = None


def fill(inputs: FillInputs, *, novelty: float, seed: int,
         on_scale: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """The filled window at the finest scale, (bands, rows, cols) float32 in [-1, 1]."""
    images, sizes = inputs.pyramid.images, inputs.pyramid.spec.sizes
    generator = torch.Generator().manual_seed(int(seed))
    x = None
    for s, size in enumerate(sizes):
        original = as_tensor(images[s])
        keep = as_tensor(inputs.keep[s])[None]
        if s == 0:
            x = _start(original, inputs, generator, novelty)
        else:
            x = as_tensor(upsample(x.numpy(), size))
            x = keep * original + (1 - keep) * x
        bank = _bank(inputs, s, seed)
        region = torch.from_numpy(inputs.keep[s] < 1)
        for _ in range(COARSE_ITERATIONS if s == 0 else ITERATIONS):
            query = blur(x, COARSE_BLUR) if s == 0 else as_tensor(blur_level(x.numpy(), sizes[s - 1]))
            x = keep * original + (1 - keep) * bank.estimate(query, region)
        if on_scale is not None:
            on_scale(s, len(sizes))
    return x.clamp(-1, 1).numpy()


def _start(original: torch.Tensor, inputs: FillInputs, generator: torch.Generator, novelty: float) -> torch.Tensor:
    """The coarsest scale's start: the original with noise of ``novelty`` times its spread in
    the region to fill, and in copy mode the donor pasted by its weight."""
    keep = as_tensor(inputs.keep[0])[None]
    spread = original.std(dim=(1, 2), keepdim=True)
    noise = blur(torch.randn(original.shape, generator=generator), START_SMOOTH)
    noise = noise / noise.std(dim=(1, 2), keepdim=True).clamp(min=1e-6)
    x = original + novelty * spread * noise
    if inputs.donors is not None and inputs.donors[0] is not None:
        weight = as_tensor(inputs.donor_weights[0])[None]
        x = weight * as_tensor(inputs.donors[0]) + (1 - weight) * x
    return keep * original + (1 - keep) * x


def _bank(inputs: FillInputs, s: int, seed: int) -> PatchBank:
    """Scale ``s``'s real patches: keys at the blur level of the scale below, sharp values; none
    from the ROI. In copy mode the donor's own patches join them (none across its outline)."""
    sizes = inputs.pyramid.spec.sizes
    image = as_tensor(inputs.pyramid.images[s])
    blurry = inputs.pyramid.blurry[s] if s < len(inputs.pyramid.blurry) else None
    if s == 0:
        key_image = blur(image, COARSE_BLUR)
    else:
        key_image = as_tensor(blurry if blurry is not None else blur_level(inputs.pyramid.images[s], sizes[s - 1]))
    exclude = torch.from_numpy(inputs.exclude[s])
    if inputs.donors is not None and inputs.donors[s] is not None:
        weight = as_tensor(inputs.donor_weights[s])
        whole = weight >= 0.99
        donor = as_tensor(inputs.donors[s])
        image = torch.where(whole[None], donor, image)
        donor_keys = inputs.donors[s] if s == 0 else blur_level(inputs.donors[s], sizes[s - 1])
        key_image = torch.where(whole[None], as_tensor(donor_keys), key_image)
        exclude = (exclude & ~whole) | (grow(whole, PATCH // 2) & grow(~whole, PATCH // 2))
    return PatchBank(image, exclude, key_image=key_image, seed=seed + s)

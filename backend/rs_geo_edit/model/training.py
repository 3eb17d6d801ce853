"""Training batches and loss of SinDDM (``trainer.py`` runs the loop).

A step draws a scale, random crops of at most ``crop`` px (so a step costs the same whatever the
window size), timesteps below the scale's start and noise. At s > 0 the clean target is
``gamma_t * blurry + (1 - gamma_t) * image`` (:class:`~.schedule.Schedule`). The loss is L1 on the
noise over valid pixels.
"""

from __future__ import annotations

from typing import Optional

import torch

from .pyramid import upsample_crop
from .schedule import Schedule


def _bcast(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return values[t][:, None, None, None]


def _crop_box(h: int, w: int, crop: int, generator: torch.Generator) -> tuple[slice, slice]:
    """Rows and columns of a random crop of at most ``crop`` x ``crop`` px of an h x w image."""
    ch, cw = min(crop, h), min(crop, w)
    r = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    c = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return slice(r, r + ch), slice(c, c + cw)


def scale_probabilities(n_scales: int, power: float = 0.0) -> torch.Tensor:
    """How often each scale is drawn for a training step: proportional to ``(s + 1) ** power``
    (coarsest s = 0). ``power`` 0 is uniform (the reference); larger values give the finer
    scales, whose texture is what people look at, more of a fixed step budget."""
    weights = torch.arange(1, n_scales + 1, dtype=torch.float64) ** power
    return weights / weights.sum()


def training_batch(pyramid_t: list[tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]], schedule: Schedule,
                   batch: int, crop: int, generator: torch.Generator, scale_power: float = 0.0):
    """Draw a scale, crops, timesteps and noise. Returns (s, x_noisy, t, noise, weights).

    ``pyramid_t`` holds (image, blurry, valid) per scale; a blurry of None (a large scale) is
    upsampled from the scale below crop by crop. Valid masks may be boolean."""
    n_scales = len(pyramid_t)
    if scale_power == 0.0:   # the reference's uniform draw (and the same random stream as before)
        s = int(torch.randint(0, n_scales, (1,), generator=generator))
    else:
        s = int(torch.multinomial(scale_probabilities(n_scales, scale_power), 1, generator=generator))
    image, blurry, valid = pyramid_t[s]
    clean, weights = [], []
    t = torch.randint(0, schedule.t_start[s], (batch,), generator=generator)
    for b in range(batch):
        rows, cols = _crop_box(image.shape[-2], image.shape[-1], crop, generator)
        img = image[..., rows, cols]
        if s > 0:
            blr = (blurry[..., rows, cols] if blurry is not None else
                   upsample_crop(pyramid_t[s - 1][0], image.shape[-2:], (rows.start, rows.stop),
                                 (cols.start, cols.stop)))
            g = schedule.gammas[s, t[b]]
            img = g * blr + (1 - g) * img
        clean.append(img)
        weights.append(valid[..., rows, cols])
    clean = torch.stack(clean)
    weights = torch.stack(weights).float()
    noise = torch.randn(clean.shape, generator=generator)
    abar = _bcast(schedule.abar, t)
    noisy = abar.sqrt() * clean + (1 - abar).sqrt() * noise
    return s, noisy, t, noise, weights


def noise_loss(pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L1 between the predicted and the drawn noise over valid pixels (``weights``), per band."""
    err = (pred.float() - noise).abs() * weights
    return err.sum() / (weights.sum() * noise.shape[1]).clamp(min=1.0)


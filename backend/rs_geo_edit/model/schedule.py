"""The noise schedule of SinDDM: the cosine abar_t, each scale's blur-mixing weights and the
timestep its chain starts from (trained, and moved down for sampling), and the descending
timesteps a strided chain visits.

A finer scale s > 0 starts where the noise ``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)`` exceeds
``detail_factor`` times its blur error (the reference's ``loss_factor``); its clean target mixes
in the blurred scale below with ``gamma_t = clamp(sigma_t / (detail_factor * error), 0, 1)``.
Measured in float the errors are ~0.03-0.06, so ``detail_factor`` 10 gives chains of ~17-31
steps (docs/quality.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> np.ndarray:
    """abar_t of the cosine schedule (Nichol & Dhariwal), betas clipped to 0.999."""
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    return np.cumprod(1 - betas)


@dataclass
class Schedule:
    """Per-timestep constants and per-scale blur mixing weights."""

    abar: torch.Tensor                 # (T,)
    gammas: torch.Tensor               # (n_scales, T); row 0 is zeros
    t_start: list[int]                 # per scale: first timestep trained / sampled from

    @classmethod
    def build(cls, timesteps: int, recon_error: list[float], detail_factor: float = 1.0) -> "Schedule":
        """``detail_factor`` scales the reconstruction error before it is compared with the
        noise level (the reference's ``loss_factor``): a finer scale starts where the noise is
        ``detail_factor`` times its blur error, so that its detail is generated, not merely
        denoised."""
        abar = cosine_alphas_cumprod(timesteps)
        sigma = np.sqrt(1 - abar) / np.sqrt(abar)
        gammas = np.zeros((len(recon_error), timesteps))
        t_start = [timesteps]
        for s, err in enumerate(recon_error[1:], start=1):
            err = max(err * detail_factor, 1e-4)
            gammas[s] = np.clip(sigma / err, 0, 1)
            above = np.nonzero(sigma > err)[0]
            t_start.append(int(max(1, above[0])) if above.size else timesteps)
        return cls(torch.tensor(abar, dtype=torch.float32), torch.tensor(gammas, dtype=torch.float32), t_start)

    def started_at(self, mid: float, fine: float, large: Optional[list[bool]] = None,
                   start_large: float = 1.0) -> "Schedule":
        """The schedule with each finer scale's start moved down to a fraction of the trained
        one: ``fine`` for the finest scale, ``mid`` for those between it and the coarsest (whose
        start ``novelty`` sets), ``start_large`` for the middle scales flagged in ``large`` (one
        flag per scale, see :func:`large_scales`). Trained starts put a scale's noise at
        ``detail_factor`` times its blur error, so sampling from them re-invents the layout at
        every scale; a lower start refines the scale below instead (docs/quality.md). 1 and 1
        are the trained starts."""
        last = len(self.t_start) - 1
        large = large or [False] * len(self.t_start)

        def fraction(s: int) -> float:
            return fine if s == last else start_large if large[s] else mid

        starts = [t if s == 0 else max(1, round(t * fraction(s))) for s, t in enumerate(self.t_start)]
        return Schedule(self.abar, self.gammas, starts)

    def to(self, device) -> "Schedule":
        return Schedule(self.abar.to(device), self.gammas.to(device), self.t_start)


def large_scales(sizes, large_px: int) -> list[bool]:
    """Per scale: a middle scale (neither the coarsest nor the finest) whose short side is at
    least ``large_px`` (0: none is). Such scales exist in windows of about 1.41 x ``large_px``
    and more; there a layout refined from the coarsest scale's few dozen pixels is a fog of
    8-30 px blotches, so the sampler lets them draw their own (docs/quality.md, "Large ROIs")."""
    last = len(sizes) - 1
    return [0 < s < last and large_px > 0 and min(size) >= large_px for s, size in enumerate(sizes)]



def timesteps_from(t_from: int, stride: int) -> list[int]:
    """Descending timesteps t_from-1 .. 0 taking every ``stride``-th, always ending at 0."""
    steps = list(range(t_from - 1, -1, -stride))
    if steps[-1] != 0:
        steps.append(0)
    return steps

"""SinDDM diffusion: cosine schedule, the training batch and loss with blur mixing, and the sampler
(``trainer.py`` runs the training loop).

Training (per step): a scale s is drawn uniformly; for s > 0 the clean target is
``gamma_t * blurry + (1 - gamma_t) * image`` with ``gamma_t = clamp(sigma_t / (k * recon_error_s), 0, 1)``
and ``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``; timesteps at s > 0 are limited to those whose
noise is below ``k`` times the scale's reconstruction error (``t_start[s]``). ``k`` is the
``detail_factor`` (the reference's ``loss_factor``). The reference measures the error on uint8
images that wrap around, which inflates it to ~0.2-0.5 and starts its finer scales ~20-30 steps
into a 100-step chain. Measured correctly in float the error is ~0.03-0.06, and with k = 1 finer
scales would get 1-2 steps and samples come out blurred; k = 10 restores chains of ~17-31 steps
(scripts/bench/sinddm.py, and the README's note on the fast preset). L1 loss on the noise, over valid
pixels. Scales larger than the crop size are trained on random crops, so a step costs the same
whatever the window size.

Sampling: scale 0 runs the whole chain from noise; each later scale upsamples the previous
result, noises it to ``t_start[s]`` and denoises with "reblurring" (gamma clamped to [0, 0.55]).
Steps may be strided (DDIM-style updates). Hooks plug in at every step: ``x0_hook`` edits the
predicted clean image (content copy, CLIP guidance) and a mask keeps the re-noised original
outside the edited region. Scales larger than a tile run the net on overlapping tiles fused at
every step (``TiledDenoiser``), so memory follows the tile and large ROIs keep native resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .net import receptive_radius


REBLUR_MAX = 0.55


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

    def started_at(self, mid: float, fine: float) -> "Schedule":
        """The schedule with each finer scale's start moved down to a fraction of the trained
        one: ``fine`` for the finest scale, ``mid`` for those between it and the coarsest (whose
        start ``novelty`` sets). Trained starts put a scale's noise at ``detail_factor`` times
        its blur error, so sampling from them re-invents the layout at every scale; a lower
        start refines the scale below instead (docs/quality.md). 1 and 1 are the trained starts."""
        last = len(self.t_start) - 1
        starts = [t if s == 0 else max(1, round(t * (fine if s == last else mid)))
                  for s, t in enumerate(self.t_start)]
        return Schedule(self.abar, self.gammas, starts)

    def to(self, device) -> "Schedule":
        return Schedule(self.abar.to(device), self.gammas.to(device), self.t_start)


def _bcast(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return values[t][:, None, None, None]


def _crop(arrays: list[torch.Tensor], crop: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The same random crop (at most ``crop`` x ``crop``) of several (C, H, W) tensors."""
    h, w = arrays[0].shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    r = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    c = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return [a[..., r:r + ch, c:c + cw] for a in arrays]


def scale_probabilities(n_scales: int, power: float = 0.0) -> torch.Tensor:
    """How often each scale is drawn for a training step: proportional to ``(s + 1) ** power``
    (coarsest s = 0). ``power`` 0 is uniform (the reference); larger values give the finer
    scales, whose texture is what people look at, more of a fixed step budget."""
    weights = torch.arange(1, n_scales + 1, dtype=torch.float64) ** power
    return weights / weights.sum()


def training_batch(pyramid_t: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], schedule: Schedule,
                   batch: int, crop: int, generator: torch.Generator, scale_power: float = 0.0):
    """Draw a scale, crops, timesteps and noise. Returns (s, x_noisy, t, noise, weights)."""
    n_scales = len(pyramid_t)
    if scale_power == 0.0:   # the reference's uniform draw (and the same random stream as before)
        s = int(torch.randint(0, n_scales, (1,), generator=generator))
    else:
        s = int(torch.multinomial(scale_probabilities(n_scales, scale_power), 1, generator=generator))
    image, blurry, valid = pyramid_t[s]
    clean, weights = [], []
    t = torch.randint(0, schedule.t_start[s], (batch,), generator=generator)
    for b in range(batch):
        img, blr, ok = _crop([image, blurry, valid], crop, generator)
        if s > 0:
            g = schedule.gammas[s, t[b]]
            img = g * blr + (1 - g) * img
        clean.append(img)
        weights.append(ok)
    clean = torch.stack(clean)
    weights = torch.stack(weights)
    noise = torch.randn(clean.shape, generator=generator)
    abar = _bcast(schedule.abar, t)
    noisy = abar.sqrt() * clean + (1 - abar).sqrt() * noise
    return s, noisy, t, noise, weights


def noise_loss(pred: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L1 between the predicted and the drawn noise over valid pixels (``weights``), per band."""
    err = (pred.float() - noise).abs() * weights
    return err.sum() / (weights.sum() * noise.shape[1]).clamp(min=1.0)


def precision(device: torch.device) -> tuple[bool, torch.dtype]:
    """(autocast enabled, dtype) of the denoiser on ``device``: mixed precision on CUDA
    (bfloat16 where supported, else float16), full precision on the CPU."""
    amp = device.type == "cuda"
    return amp, torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------------------------------- sampling

X0Hook = Callable[[torch.Tensor, int, int], torch.Tensor]   # (x0, scale, t) -> x0


@dataclass
class Constraint:
    """Where the original is kept, per scale (coarsest first): ``keep`` in [0, 1] is 1 where the
    original (re-noised to the current step) replaces the sample at every step, 0 where the chain
    runs free, and in between over a transition band, so that the band is generated in agreement
    with both sides. ``final`` is the keep mask of the very last step (finest scale, t = 0): the
    exact original is restored where it is 1 and the sample is returned elsewhere (the band
    included, for the blend to finish). ``originals`` are the clean images per scale."""

    keep: list[torch.Tensor]
    originals: list[torch.Tensor]
    final: Optional[torch.Tensor] = None


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of ``tile`` px along an axis of ``length`` px, neighbours sharing at
    least ``overlap`` px; the last tile ends flush with the axis."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _edge_ramp(length: int, lead: bool, trail: bool, halo: int, ramp: int) -> torch.Tensor:
    """A tile's weights along one axis: 0 within ``halo`` px of an edge where the tile is cut
    out of a larger image (there the zero padding of the convolutions is not the image's
    content), then a raised-cosine rise over ``ramp`` px; 1 elsewhere and at the image's own
    edges. Neighbours' ramps sum to 1 across an overlap of ``2 * halo + ramp``."""
    d = torch.arange(length, dtype=torch.float32)
    w = torch.ones(length)

    def rise(dist):
        return 0.5 - 0.5 * torch.cos(math.pi * ((dist + 1 - halo) / (ramp + 1)).clamp(0, 1))

    if lead:
        w = w * rise(d)
    if trail:
        w = w * rise(length - 1 - d)
    return w


class TiledDenoiser:
    """The net's noise prediction over a (1, C, H, W) image, computed on overlapping tiles of at
    most ``tile`` x ``tile`` px whose predictions are fused with weights normalised per pixel
    (MultiDiffusion's per-step fusion). A tile's prediction is trusted only beyond the net's
    receptive radius from its cut edges, where it equals the full-frame prediction, so the
    fused result matches the untiled one and shows no seams; the net's activations are bounded
    by the tile whatever the image size. Tiles run in a fixed order (row-major), so the result
    does not vary between runs. ``tile`` 0, or an image within one tile, runs the net once on
    the whole image.

    ``needed`` (H, W) bool marks the pixels whose prediction matters (the sampler's free and
    band pixels); a tile that trusts none of them is not run, so the cost follows the ROI, not
    the window. Pixels no running tile covers take the caller's ``fallback``."""

    def __init__(self, net: torch.nn.Module, size: tuple[int, int], tile: int, overlap: int, halo: int,
                 needed: Optional[torch.Tensor] = None):
        h, w = size
        self.net = net
        self.tiles: list[tuple[int, int, int, int]] = []
        self.weights: list[torch.Tensor] = []
        self.covered: Optional[torch.Tensor] = None
        if tile <= 0 or (h <= tile and w <= tile):
            return
        if overlap < 2 * halo + 1 or overlap >= tile:
            raise ValueError(f"tile overlap {overlap} px must be above twice the net's receptive radius ({halo} px) "
                             f"and below the tile ({tile} px)")
        ramp = overlap - 2 * halo
        rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        th, tw = min(tile, h), min(tile, w)
        total = torch.zeros(h, w)
        for r in rows:
            wr = _edge_ramp(th, r > 0, r + th < h, halo, ramp)
            for c in cols:
                wc = _edge_ramp(tw, c > 0, c + tw < w, halo, ramp)
                weight = wr[:, None] * wc[None, :]
                if needed is not None and not bool((needed[r:r + th, c:c + tw] & (weight > 0)).any()):
                    continue
                total[r:r + th, c:c + tw] += weight
                self.tiles.append((r, c, th, tw))
                self.weights.append(weight)
        self.weights = [wt / total[r:r + th, c:c + tw].clamp(min=1e-12)
                        for wt, (r, c, th, tw) in zip(self.weights, self.tiles)]
        if not bool((total > 0).all()):
            self.covered = (total > 0)[None, None]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                 fallback: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.tiles and self.covered is None:
            return self.net(x, t, s).float()
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for (r, c, th, tw), weight in zip(self.tiles, self.weights):
            pred = self.net(x[..., r:r + th, c:c + tw], t, s).float()
            out[..., r:r + th, c:c + tw] += pred * weight.to(x.device)
        if self.covered is not None:
            covered = self.covered.to(x.device)
            for r in row_bands(x.shape[-2]):
                out[r] = torch.where(covered[r], out[r], fallback[r])
        return out


ROW_BAND = 256   # rows per band of the sampler's pointwise updates


def row_bands(height: int, rows: int = ROW_BAND) -> list[tuple]:
    """Index tuples selecting bands of ``rows`` rows of a (1, C, H, W) tensor, top to bottom."""
    return [(slice(None), slice(None), slice(a, min(height, a + rows))) for a in range(0, height, rows)]


def _timesteps(t_from: int, stride: int) -> list[int]:
    """Descending timesteps t_from-1 .. 0 taking every ``stride``-th, always ending at 0."""
    steps = list(range(t_from - 1, -1, -stride))
    if steps[-1] != 0:
        steps.append(0)
    return steps


@torch.no_grad()
def sample(net: torch.nn.Module, schedule: Schedule, sizes: list[tuple[int, int]], bands: int, *,
           device: torch.device, generator: torch.Generator, stride: int = 1,
           constraint: Optional[Constraint] = None, x0_hook: Optional[X0Hook] = None, novelty: float = 1.0,
           tile: int = 0, overlap: Optional[int] = None, scale_offset: int = 0,
           on_step: Optional[Callable[[int, int, int], None]] = None) -> torch.Tensor:
    """Generate an image of ``sizes[-1]`` through all scales. Returns (1, bands, H, W) in [-1, 1].

    ``novelty`` in (0, 1] is where the coarsest scale's chain starts, as a fraction of the
    timesteps: 1 draws it from pure noise (the reference); below 1, and with a ``constraint``,
    it starts from the original noised to that level (as SDEdit does), so the edited region keeps
    the original's coarse layout and continues its surroundings while every finer detail is new.

    ``tile`` > 0 runs the net on overlapping tiles of at most that many pixels a side wherever a
    scale is larger (:class:`TiledDenoiser`), so its memory follows the tile, not the image;
    ``overlap`` (px, default four times the net's receptive radius) is what neighbours share.
    Noise, masks and hooks stay full-frame, so a seed gives the same result tiled or not. Tiles
    that hold only kept pixels (keep mask 1) are not run: there the prediction is the noise that
    re-noised the original, so the estimate of the clean image is the original itself.

    ``scale_offset`` is added to the scale index the net is conditioned on: a net trained on
    several windows counts scales on a ladder common to them (``trainer.scale_offsets``).

    Noise is drawn on the CPU from ``generator`` so that results do not depend on the device.
    ``on_step(scale, done, total)`` reports progress and may raise to cancel.
    """
    net.eval()
    amp, amp_dtype = precision(device)
    sched = schedule.to(device)
    timesteps = len(sched.abar)
    from_original = constraint is not None and novelty < 1.0
    first = max(1, round(novelty * timesteps)) if from_original else timesteps
    plans = [_timesteps(sched.t_start[s] if s > 0 else first, stride) for s in range(len(sizes))]
    total = sum(len(p) for p in plans)
    done = 0
    result = None
    halo = receptive_radius(net)
    overlap = 4 * halo if overlap is None else overlap

    def randn(shape):
        return torch.randn(shape, generator=generator).to(device)

    for s, size in enumerate(sizes):
        shape = (1, bands) + tuple(size)
        blurry = None if s == 0 else F.interpolate(result, size=size, mode="bilinear", align_corners=False)
        result = None
        gam = sched.gammas[s].clamp(0, REBLUR_MAX) if s > 0 else None
        keep = constraint.keep[s].to(device) if constraint is not None else None
        original = constraint.originals[s].to(device) if constraint is not None else None
        fixed_noise = randn(shape)   # the same noise re-noises the original at every step
        needed = None
        if keep is not None:
            needed = keep[0, 0] < 1
            if s == len(sizes) - 1 and constraint.final is not None:
                needed = needed | (constraint.final[0, 0].to(device) < 1)
        denoise = TiledDenoiser(net, tuple(size), tile, overlap, halo, needed=needed.cpu() if needed is not None
                                else None)
        del needed
        # Every update after the net's prediction is pointwise, so it runs on bands of rows:
        # its temporaries follow the band, and the full-frame tensors of a large scale are only
        # x, the prediction (which then holds x0_mix and eps_hat), x0 and the inputs.
        bands_of_rows = row_bands(size[0])

        def mixed_times(x_clean, t, factor, r):
            """factor * (gam_t * blurry + (1 - gam_t) * x_clean) on rows ``r``, in a new tensor."""
            if gam is None or t < 0:
                return x_clean * factor
            return (blurry[r] * gam[t]).add_(x_clean * (1 - gam[t])).mul_(factor)

        def keep_original(x_free, t, r):
            """keep * renoised original + (1 - keep) * x_free on rows ``r``, reusing x_free's memory."""
            ab = sched.abar[t]
            renoised = mixed_times(original[r], t, ab.sqrt(), r).add_(fixed_noise[r] * (1 - ab).sqrt())
            return renoised.mul_(keep[r]).add_(x_free.mul_(1 - keep[r]))

        steps = plans[s]
        t0 = steps[0]
        ab = sched.abar[t0]
        start = randn(shape)
        x = torch.empty(shape, dtype=start.dtype, device=device)
        for r in bands_of_rows:
            if s == 0 and from_original:
                x[r] = ab.sqrt() * original[r] + (1 - ab).sqrt() * start[r]
            elif s == 0:
                x[r] = start[r]
            else:
                x[r] = ab.sqrt() * blurry[r] + (1 - ab).sqrt() * start[r]
            if keep is not None:
                x[r] = keep_original(x[r], t0, r)
        del start
        for i, t in enumerate(steps):
            t_next = steps[i + 1] if i + 1 < len(steps) else -1
            tt = torch.full((1,), t, device=device, dtype=torch.long)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
                # where the original is kept, its own noise is the exact prediction
                eps = denoise(x, tt, torch.full((1,), s + scale_offset, device=device, dtype=torch.long),
                              fallback=fixed_noise)
            ab = sched.abar[t]
            x0 = torch.empty_like(x)
            for r in bands_of_rows:
                x0_mix = torch.sub(x[r], eps[r].mul_((1 - ab).sqrt())).div_(ab.sqrt()).clamp_(-1, 1)
                if gam is not None:     # undo the blur mixing: the sharp estimate
                    x0[r] = (blurry[r] * gam[t]).neg_().add_(x0_mix).div_(1 - gam[t]).clamp_(-1, 1)
                else:
                    x0[r] = x0_mix
                eps[r] = x0_mix
            x0_mix = eps   # the prediction's memory holds the (clamped) x0_mix from here on
            del eps
            if x0_hook is not None:
                x0 = x0_hook(x0, s, t).clamp(-1, 1)
            if t_next < 0:
                if keep is not None:
                    last = keep if s < len(sizes) - 1 or constraint.final is None else constraint.final.to(device)
                    for r in bands_of_rows:
                        x0[r] = last[r] * original[r] + (1 - last[r]) * x0[r]
                x = x0
            else:
                ab_next = sched.abar[t_next]
                if s == 0:   # stochastic (DDPM-like, eta = 1) at the coarsest scale
                    sigma = ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp(min=0).sqrt()
                    fresh = sigma * randn(shape)
                else:        # deterministic at finer scales, as the reference's reblurring sampler
                    sigma = torch.zeros((), device=device)
                    fresh = None
                for r in bands_of_rows:
                    eps_hat = x0_mix[r].mul_(ab.sqrt()).neg_().add_(x[r]).div_((1 - ab).sqrt())
                    x_next = mixed_times(x0[r], t_next, ab_next.sqrt(), r).add_(
                        eps_hat.mul_((1 - ab_next - sigma ** 2).clamp(min=0).sqrt()))
                    if fresh is not None:
                        x_next = x_next + fresh[r]
                    if keep is not None:
                        x_next = keep_original(x_next, t_next, r)
                    x[r] = x_next
                del fresh, x0
            del x0_mix
            done += 1
            if on_step is not None:
                on_step(s, done, total)
        result = x.clamp_(-1, 1)
        del x, blurry
    return result

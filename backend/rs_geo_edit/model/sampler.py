"""The SinDDM sampler, as a chain per scale and stages that plug into its steps.

Scale 0 runs its chain from noise (or, below ``novelty`` 1, from the original noised to that
level, as SDEdit does); each finer scale upsamples the scale below, noises it to its start and
denoises with reblurring (gamma clamped to [0, ``REBLUR_MAX``]); steps may be strided (DDIM-style
updates, stochastic at the coarsest scale). Two kinds of stage act on every step:

- :class:`KeepOriginal` keeps the original, re-noised with one fixed noise, where its mask is 1
  and mixes it in over a band; pointwise, so it runs on bands of rows (``rows.py``) and lets a
  large scale run on the box of the pixels it changes;
- :class:`Stage` s rewrite the clean-image estimate ``x0`` of the whole image (content copy,
  CLIP guidance, a fine-scale stage), in order, after which ``x0`` is clamped to [-1, 1].

A new sampling idea is a new stage. Scales larger than a tile run the net on overlapping tiles
fused at every step (``tiling.py``). Noise is drawn on the CPU from the caller's generator, so a
seed gives the same result on any device and whether tiled or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import torch

from ..imaging import return_freed_memory
from .net import receptive_radius
from .rows import BandNoise, BoxView, RowUpsampler, row_bands, several_bands
from .schedule import Schedule, timesteps_from
from .tiling import TILE_RAMP, TiledDenoiser, span

REBLUR_MAX = 0.55


class Stage(Protocol):
    """Rewrites the clean-image estimate at every step: ``(x0, scale, t) -> x0`` on the whole
    (1, C, H, W) image of the scale. ``reads_finest`` False says the stage leaves the finest
    scale alone, so the sampler may run that scale on the box of the pixels it changes."""

    reads_finest: bool

    def __call__(self, x0: torch.Tensor, scale: int, t: int) -> torch.Tensor: ...


@dataclass
class KeepOriginal:
    """Where the original is kept, per scale (coarsest first): ``keep`` in [0, 1] is 1 where the
    original (re-noised to the current step) replaces the sample at every step, 0 where the chain
    runs free, and in between over a transition band, so that the band is generated in agreement
    with both sides. ``final`` is the keep mask of the very last step (finest scale, t = 0): the
    exact original is restored where it is 1 (or True: a bool mask costs a quarter of the
    memory) and the sample is returned elsewhere (the band included, for the blend to finish).
    ``originals`` are the clean images per scale. With ``release`` the sampler drops each
    scale's original and keep mask from the lists once that scale is sampled, so a caller that
    hands over the only references frees them early (a large window's coarser scales together
    weigh about as much as the window)."""

    keep: list[Optional[torch.Tensor]]
    originals: list[Optional[torch.Tensor]]
    final: Optional[torch.Tensor] = None
    release: bool = False

    def at(self, s: int, last: bool, device) -> "KeptScale":
        keep = self.keep[s].to(device)
        last_keep = keep if not last or self.final is None else self.final.to(device)
        return KeptScale(keep, last_keep, self.originals[s].to(device))

    def forget(self, s: int, masks_only: bool = False) -> None:
        """With ``release``, drop scale ``s``'s keep mask (and the final mask at the finest
        scale), and unless ``masks_only`` its original."""
        if not self.release:
            return
        self.keep[s] = None
        if masks_only:
            if s == len(self.keep) - 1:
                self.final = None
        else:
            self.originals[s] = None


@dataclass
class KeptScale:
    """One scale's part of :class:`KeepOriginal`: the keep mask of every step, that of the
    scale's last step (``last_keep``, bool or float) and the clean original."""

    keep: torch.Tensor
    last_keep: torch.Tensor
    original: torch.Tensor

    def needed(self) -> torch.Tensor:
        """(H, W) bool: the pixels that are not kept whole at some step."""
        last = self.last_keep[0, 0]
        return (self.keep[0, 0] < 1) | (~last if last.dtype == torch.bool else last < 1)

    def cropped(self, box: tuple[int, int, int, int]) -> "KeptScale":
        top, bottom, left, right = box
        keep = self.keep[..., top:bottom, left:right].clone()
        last_keep = keep if self.last_keep is self.keep else self.last_keep[..., top:bottom, left:right].clone()
        return KeptScale(keep, last_keep, self.original[..., top:bottom, left:right])

    def mix(self, renoised: torch.Tensor, x_free: torch.Tensor, r: tuple) -> torch.Tensor:
        """keep * renoised + (1 - keep) * x_free on rows ``r``, in the memory of both."""
        return renoised.mul_(self.keep[r]).add_(x_free.mul_(1 - self.keep[r]))

    def restore(self, x0: torch.Tensor, r: tuple) -> torch.Tensor:
        """The last step's rows ``r``: the original where it is kept, ``x0`` elsewhere."""
        if self.last_keep.dtype == torch.bool:
            return torch.where(self.last_keep[r], self.original[r], x0)
        return self.last_keep[r] * self.original[r] + (1 - self.last_keep[r]) * x0


@dataclass
class Step:
    """The constants of one update from timestep ``t`` to ``t_next`` (-1 after the last)."""

    t: int
    t_next: int
    ab: torch.Tensor
    ab_next: Optional[torch.Tensor]
    sigma: torch.Tensor
    fresh: Optional[torch.Tensor]   # the stochastic update's new noise (coarsest scale only)


class ScaleChain:
    """The chain of one scale: its reblurring maths, pointwise on bands of rows. ``blurry`` is
    the upsampled scale below (None at the coarsest), ``noise`` the fixed noise that re-noises
    the original, ``kept`` the scale's :class:`KeptScale` (None: nothing is kept), ``denoise``
    the net's prediction over the chain's image. With a ``box`` (top, bottom, left, right) the
    chain runs on that box of the scale."""

    def __init__(self, s: int, shape: tuple, abar: torch.Tensor, gammas: Optional[torch.Tensor], blurry,
                 noise, kept: Optional[KeptScale], denoise: TiledDenoiser, box: Optional[tuple[int, int, int, int]]):
        self.s, self.shape, self.abar, self.gam = s, shape, abar, gammas
        self.blurry, self.noise, self.kept, self.denoise, self.box = blurry, noise, kept, denoise, box
        self.rows = row_bands(shape[2], offset=box[0] if box else 0)

    def mixed_times(self, x_clean: torch.Tensor, t: int, factor, r: tuple) -> torch.Tensor:
        """factor * (gam_t * blurry + (1 - gam_t) * x_clean) on rows ``r``, in a new tensor."""
        if self.gam is None or t < 0:
            return x_clean * factor
        return (self.blurry[r] * self.gam[t]).add_(x_clean * (1 - self.gam[t])).mul_(factor)

    def keep_original(self, x_free: torch.Tensor, t: int, r: tuple) -> torch.Tensor:
        """Rows ``r`` with the original, re-noised to ``t``, kept (reusing ``x_free``'s memory)."""
        if self.kept is None:
            return x_free
        ab = self.abar[t]
        renoised = self.mixed_times(self.kept.original[r], t, ab.sqrt(), r).add_(self.noise[r] * (1 - ab).sqrt())
        return self.kept.mix(renoised, x_free, r)

    def start(self, t0: int, noise, from_original: bool) -> torch.Tensor:
        """x at the chain's first timestep ``t0`` from ``noise``: the coarsest scale from the
        noise alone or from the original noised to ``t0``, a finer one from the scale below."""
        ab = self.abar[t0]
        x = torch.empty(self.shape, dtype=torch.float32, device=self.abar.device)
        for r in self.rows:
            if self.s == 0 and from_original:
                x[r] = ab.sqrt() * self.kept.original[r] + (1 - ab).sqrt() * noise[r]
            elif self.s == 0:
                x[r] = noise[r]
            else:
                x[r] = ab.sqrt() * self.blurry[r] + (1 - ab).sqrt() * noise[r]
            if self.kept is not None:
                x[r] = self.keep_original(x[r], t0, r)
        return x

    def estimate(self, x: torch.Tensor, step: Step, r: tuple, eps_r: torch.Tensor):
        """(x0_mix, x0) on rows ``r``: the clamped clean estimate from the prediction on those
        rows (in its memory) and, at s > 0, its sharp version with the blur undone."""
        ab, t = step.ab, step.t
        x0_mix = eps_r.mul_((1 - ab).sqrt()).neg_().add_(x[r]).div_(ab.sqrt()).clamp_(-1, 1)
        if self.gam is None:
            return x0_mix, x0_mix.clone()
        return x0_mix, (self.blurry[r] * self.gam[t]).neg_().add_(x0_mix).div_(1 - self.gam[t]).clamp_(-1, 1)

    def advance(self, x: torch.Tensor, step: Step, r: tuple, x0_mix: torch.Tensor, x0: torch.Tensor) -> None:
        """Write rows ``r`` of the next step's x (the final image after t = 0)."""
        if step.t_next < 0:
            x[r] = x0 if self.kept is None else self.kept.restore(x0, r)
            return
        ab, ab_next = step.ab, step.ab_next
        eps_hat = x0_mix.mul_(ab.sqrt()).neg_().add_(x[r]).div_((1 - ab).sqrt())
        x_next = self.mixed_times(x0, step.t_next, ab_next.sqrt(), r).add_(
            eps_hat.mul_((1 - ab_next - step.sigma ** 2).clamp(min=0).sqrt()))
        if step.fresh is not None:
            x_next = x_next + step.fresh[r]
        x[r] = self.keep_original(x_next, step.t_next, r)


class Sampler:
    """Generates an image of ``sizes[-1]`` (coarsest scale first) through all scales.

    ``novelty`` in (0, 1] is where the coarsest chain starts, as a fraction of the timesteps: 1
    draws it from pure noise (the reference); below 1, with a :class:`KeepOriginal`, from the
    original noised to that level, so the edited region keeps the original's coarse layout.
    ``tile`` > 0 runs the net on overlapping tiles of at most that many pixels a side wherever a
    scale is larger (:class:`~.tiling.TiledDenoiser`); ``overlap`` (px, default twice the net's
    receptive radius plus ``TILE_RAMP``) is what neighbours share. With ``crop``, a tiled scale
    above the coarsest runs on the box of the pixels it changes widened by the receptive radius
    (beyond it every pixel is kept), unless a stage reads that scale whole; the result equals the
    uncropped one bit for bit. ``scale_offset`` is added to the scale index the net is
    conditioned on (a scene model's common ladder, ``trainer.scale_offsets``)."""

    def __init__(self, net: torch.nn.Module, schedule: Schedule, sizes: Sequence[tuple[int, int]], bands: int, *,
                 device: torch.device, stride: int = 1, novelty: float = 1.0, tile: int = 0,
                 overlap: Optional[int] = None, scale_offset: int = 0, crop: bool = True):
        self.net, self.sched, self.sizes, self.bands = net, schedule.to(device), list(sizes), bands
        self.device, self.stride, self.novelty, self.tile = device, stride, novelty, tile
        self.scale_offset, self.crop = scale_offset, crop
        self.halo = receptive_radius(net)
        self.overlap = 2 * self.halo + TILE_RAMP if overlap is None else overlap

    @torch.no_grad()
    def run(self, generator: torch.Generator, keep: Optional[KeepOriginal] = None, stages: Sequence[Stage] = (),
            *, return_box: bool = False, on_step: Optional[Callable[[int, int, int], None]] = None):
        """The (1, bands, H, W) sample in [-1, 1]; with ``return_box`` (the finest box's pixels,
        box) with box = (top, bottom, left, right), the whole image's box when the finest scale
        was not cropped. ``on_step(scale, done, total)`` reports progress and may raise to cancel."""
        self.net.eval()
        self.generator, self.keep, self.stages = generator, keep, list(stages)
        plans = self._plans()
        total, done, result = sum(len(p) for p in plans), 0, None
        for s, size in enumerate(self.sizes):
            if several_bands(size[0]):
                return_freed_memory()   # the scale below's temporaries, before this one's tensors
            chain, whole = self._scale(s, size, result)
            result = None
            x = chain.start(plans[s][0], self._start_noise(size, chain.box), s == 0 and self._from_original())
            for i, t in enumerate(plans[s]):
                self._step(chain, x, t, plans[s][i + 1] if i + 1 < len(plans[s]) else -1)
                done += 1
                if on_step is not None:
                    on_step(s, done, total)
            result = x.clamp_(-1, 1)
            if s == len(self.sizes) - 1 and return_box:
                return result, chain.box or (0, size[0], 0, size[1])
            if chain.box is not None:   # the original beyond the box, as the last step leaves it
                result = whole.clone()
                result[..., chain.box[0]:chain.box[1], chain.box[2]:chain.box[3]] = x
            del x, chain, whole
            if self.keep is not None:
                self.keep.forget(s)
        return result

    def _from_original(self) -> bool:
        return self.keep is not None and self.novelty < 1.0

    def _plans(self) -> list[list[int]]:
        """Each scale's descending timesteps."""
        timesteps = len(self.sched.abar)
        first = max(1, round(self.novelty * timesteps)) if self._from_original() else timesteps
        return [timesteps_from(self.sched.t_start[s] if s > 0 else first, self.stride) for s in range(len(self.sizes))]

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device)

    def _banded_randn(self, shape):
        """Noise of ``shape``: drawn whole, or for a scale of several bands of rows, per band from
        a seed taken from the generator (:class:`~.rows.BandNoise`), never held whole."""
        if several_bands(shape[2]):
            return BandNoise(shape, int(torch.randint(0, 2 ** 62, (1,), generator=self.generator)), self.device)
        return self._randn(shape)

    def _start_noise(self, size, box):
        start = self._banded_randn((1, self.bands) + tuple(size))   # drawn for the whole scale, read in the box
        return start if box is None else BoxView(start, box)

    def _scale(self, s: int, size, below: Optional[torch.Tensor]) -> tuple[ScaleChain, Optional[torch.Tensor]]:
        """Scale ``s``'s chain and, where it runs on a box, the whole original to paste it into."""
        shape = (1, self.bands) + tuple(size)
        last = s == len(self.sizes) - 1
        blurry = None if s == 0 else RowUpsampler(below, size)   # holds the scale below: half the pixels
        gam = self.sched.gammas[s].clamp(0, REBLUR_MAX) if s > 0 else None
        kept = self.keep.at(s, last, self.device) if self.keep is not None else None
        # the same noise re-noises the original at every step; a scale of several bands of rows
        # draws it band by band from a seed instead of holding a window's worth of it
        noise = self._banded_randn(shape)
        needed = kept.needed() if kept is not None else None
        box = self._box(s, size, needed)
        whole = None
        if box is not None:
            top, bottom, left, right = box
            whole = kept.original
            kept, needed = kept.cropped(box), needed[top:bottom, left:right].clone()
            blurry, noise = BoxView(blurry, box), BoxView(noise, box)
            self.keep.forget(s, masks_only=True)   # the whole masks are no longer read
            shape = (1, self.bands, bottom - top, right - left)
        cut = (box[0] > 0, box[1] < size[0], box[2] > 0, box[3] < size[1]) if box else (False,) * 4
        denoise = TiledDenoiser(self.net, tuple(shape[-2:]), self.tile, self.overlap, self.halo,
                                needed=needed.cpu() if needed is not None else None, cut=cut)
        return ScaleChain(s, shape, self.sched.abar, gam, blurry, noise, kept, denoise, box), whole

    def _box(self, s: int, size, needed: Optional[torch.Tensor]) -> Optional[tuple[int, int, int, int]]:
        """The box scale ``s`` runs on: the changed pixels widened by the receptive radius, where
        the scale is tiled and above the coarsest and no stage reads it whole; else None."""
        last = s == len(self.sizes) - 1
        if not (self.crop and needed is not None and s > 0 and 0 < self.tile < max(size) and bool(needed.any())):
            return None
        if self.stages and not (last and not any(stage.reads_finest for stage in self.stages)):
            return None
        box = span(needed.any(dim=1), self.halo) + span(needed.any(dim=0), self.halo)
        return None if box == (0, size[0], 0, size[1]) else box

    def _step(self, chain: ScaleChain, x: torch.Tensor, t: int, t_next: int) -> None:
        """One update of x from ``t`` to ``t_next``, in place."""
        sched, device = self.sched, self.device
        tt = torch.full((1,), t, device=device, dtype=torch.long)
        ss = torch.full((1,), chain.s + self.scale_offset, device=device, dtype=torch.long)
        ab, ab_next = sched.abar[t], None
        fresh, sigma = None, torch.zeros((), device=device)
        if t_next >= 0:
            ab_next = sched.abar[t_next]
            if chain.s == 0:   # stochastic (DDPM-like, eta = 1) at the coarsest scale
                sigma = ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp(min=0).sqrt()
                fresh = sigma * self._randn(x.shape)
            # finer scales: deterministic, as the reference's reblurring sampler
        step = Step(t, t_next, ab, ab_next, sigma, fresh)
        # where the original is kept, its own noise is the exact prediction (the fallback)
        if not self.stages:
            # every update is pointwise: a band of rows is advanced as soon as its prediction is
            # complete, so neither the prediction nor the clean estimate is held whole
            for r, eps_r in chain.denoise.bands(x, tt, ss, chain.noise, chain.rows):
                chain.advance(x, step, r, *chain.estimate(x, step, r, eps_r))
            return
        eps = chain.denoise(x, tt, ss, fallback=chain.noise, bands_of_rows=chain.rows)
        x0 = torch.empty_like(x)
        for r in chain.rows:
            _, x0[r] = chain.estimate(x, step, r, eps[r])   # x0_mix stays in the prediction's memory
        for stage in self.stages:
            x0 = stage(x0, chain.s, t)
        x0 = x0.clamp(-1, 1)
        for r in chain.rows:
            chain.advance(x, step, r, eps[r], x0[r])

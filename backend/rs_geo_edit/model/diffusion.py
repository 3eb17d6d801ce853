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
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging import return_freed_memory
from .net import receptive_radius
from .pyramid import upsample_crop


REBLUR_MAX = 0.55
# Tiles trust their predictions beyond the net's receptive radius from a cut edge, where they
# equal the untiled prediction; neighbours cross-fade over this many pixels beyond that.
TILE_RAMP = 8


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


def tile_grid(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Offsets and size of the fewest equal tiles of at most ``tile`` px that cover an axis of
    ``length`` px with neighbours sharing at least ``overlap`` px, spread evenly from edge to edge
    (the last ends flush with the axis). Equal spacing keeps the overlap, which is computed
    twice, near its minimum: tiles of ``tile`` px at a fixed stride would overlap by up to a
    tile where the axis is just longer than one."""
    if length <= tile:
        return [0], length
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    return [i * (length - size) // (n - 1) for i in range(n)], size


def _span(flags: torch.Tensor, margin: int) -> tuple[int, int]:
    """[first, last + 1) of the True entries of a 1-D bool tensor, widened by ``margin`` on each
    side within its length."""
    where = flags.nonzero().flatten()
    return max(0, int(where[0]) - margin), min(len(flags), int(where[-1]) + 1 + margin)


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
    band pixels): the tiles cover only their bounding box widened by the receptive radius, and
    a tile that trusts none of them is not run, so the cost follows the ROI, not the window.
    Pixels no running tile covers take the caller's ``fallback``.

    ``cut`` (top, bottom, left, right) marks the image's own sides that are cut out of a larger
    image (the sampler's box of a scale): they are treated as tiles' cut edges, so the fused
    prediction is the one the larger image would get, bit for bit."""

    def __init__(self, net: torch.nn.Module, size: tuple[int, int], tile: int, overlap: int, halo: int,
                 needed: Optional[torch.Tensor] = None, cut: tuple[bool, bool, bool, bool] = (False,) * 4):
        h, w = size
        top_cut, bottom_cut, left_cut, right_cut = cut
        self.net = net.to(memory_format=torch.channels_last)
        self._precision: Optional[tuple[bool, torch.dtype]] = None   # (autocast, dtype), for the first input's device
        self.tiles: list[tuple[int, int, int, int]] = []
        self.ramps: list[tuple[torch.Tensor, torch.Tensor]] = []   # a tile's weights: rows x columns
        self.covered: Optional[torch.Tensor] = None
        if tile <= 0 or (h <= tile and w <= tile and not any(cut)):
            return
        if overlap < 2 * halo + 1 or overlap >= tile:
            raise ValueError(f"tile overlap {overlap} px must be above twice the net's receptive radius ({halo} px) "
                             f"and below the tile ({tile} px)")
        ramp = overlap - 2 * halo
        # the grid covers the needed pixels and the receptive radius around them, not the image
        (r0, r1), (c0, c1) = (0, h), (0, w)
        if needed is not None and bool(needed.any()):
            r0, r1 = _span(needed.any(dim=1), halo)
            c0, c1 = _span(needed.any(dim=0), halo)
        (rows, th), (cols, tw) = tile_grid(r1 - r0, tile, overlap), tile_grid(c1 - c0, tile, overlap)
        rows, cols = [r0 + r for r in rows], [c0 + c for c in cols]
        skipped = (r0, r1, c0, c1) != (0, h, 0, w)
        for r in rows:
            wr = _edge_ramp(th, r > 0 or top_cut, r + th < h or bottom_cut, halo, ramp)
            for c in cols:
                wc = _edge_ramp(tw, c > 0 or left_cut, c + tw < w or right_cut, halo, ramp)
                if needed is not None and not bool(needed[r:r + th, c:c + tw][wr > 0][:, wc > 0].any()):
                    skipped = True
                    continue
                self.tiles.append((r, c, th, tw))
                self.ramps.append((wr, wc))
        if skipped:
            covered = torch.zeros(h, w, dtype=torch.bool)
            for (r, c, th, tw), (wr, wc) in zip(self.tiles, self.ramps):
                covered[r:r + th, c:c + tw] |= (wr > 0)[:, None] & (wc > 0)[None, :]
            if not bool(covered.all()):
                self.covered = covered[None, None]

    def _weight(self, k: int) -> torch.Tensor:
        """Tile ``k``'s fusion weights, normalised by the sum of every running tile's weights
        over its pixels (added in tile order), made when the tile runs: the weights of all
        tiles together would be a window's worth of memory."""
        r, c, th, tw = self.tiles[k]
        total = torch.zeros(th, tw)
        for (r2, c2, th2, tw2), (wr, wc) in zip(self.tiles, self.ramps):
            top, bottom, left, right = max(r, r2), min(r + th, r2 + th2), max(c, c2), min(c + tw, c2 + tw2)
            if top < bottom and left < right:
                total[top - r:bottom - r, left - c:right - c] += (
                    wr[top - r2:bottom - r2, None] * wc[None, left - c2:right - c2])
        wr, wc = self.ramps[k]
        return (wr[:, None] * wc[None, :]) / total.clamp(min=1e-12)

    def _net(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self._precision is None:
            self._precision = precision(x.device)
        amp, amp_dtype = self._precision
        with torch.autocast(device_type=x.device.type, dtype=amp_dtype, enabled=amp):
            # channels-last, as in training: the net's narrow convolutions run ~1.8x faster so on CPU
            return self.net(x.contiguous(memory_format=torch.channels_last), t, s).float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                 fallback: Optional[torch.Tensor] = None, bands_of_rows: Optional[list[tuple]] = None) -> torch.Tensor:
        """The whole prediction in one tensor (assembled from ``bands_of_rows``, by default
        :func:`row_bands`)."""
        if not self.tiles and self.covered is None:
            return self._net(x, t, s).contiguous()
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for r, part in self.bands(x, t, s, fallback, bands_of_rows or row_bands(x.shape[-2])):
            out[r] = part
        return out

    def bands(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, fallback: Optional[torch.Tensor],
              bands_of_rows: list[tuple]):
        """Yield (band, prediction on its rows) for the :func:`row_bands` tuples
        ``bands_of_rows``, top to bottom, each as soon as every tile over its rows has run and
        before any tile below runs: the caller may rewrite those rows of ``x`` at once, since no
        later tile reads them. Only the bands under the tiles in flight are held, never a
        full-frame prediction. The parts are the caller's to change."""
        if not self.tiles and self.covered is None:
            whole = self._net(x, t, s).contiguous()
            for r in bands_of_rows:
                yield r, whole[r]
            return
        starts = [r[2].start for r in bands_of_rows]
        sums: dict[int, torch.Tensor] = {}   # a band's index -> its rows of the fused prediction
        covered = self.covered.to(x.device) if self.covered is not None else None
        ready = 0   # the bands before this one have been handed out

        def fused(j: int) -> torch.Tensor:
            r = bands_of_rows[j]
            part = sums.pop(j, None)
            if part is None:
                part = torch.zeros(x[r].shape, dtype=torch.float32, device=x.device)
            return part if covered is None else torch.where(covered[r], part, fallback[r])

        for k, (r, c, th, tw) in enumerate(self.tiles):
            pred = self._net(x[..., r:r + th, c:c + tw], t, s).mul_(self._weight(k).to(x.device))
            for j in range(bisect_right(starts, r) - 1, bisect_right(starts, r + th - 1)):
                rows = bands_of_rows[j][2]
                top, bottom = max(r, rows.start), min(r + th, rows.stop)
                if j not in sums:
                    sums[j] = torch.zeros(x[bands_of_rows[j]].shape, dtype=torch.float32, device=x.device)
                sums[j][..., top - rows.start:bottom - rows.start, c:c + tw] += pred[..., top - r:bottom - r, :]
            del pred
            below = self.tiles[k + 1][0] if k + 1 < len(self.tiles) else x.shape[-2]   # tiles run row-major
            while ready < len(bands_of_rows) and bands_of_rows[ready][2].stop <= below:
                yield bands_of_rows[ready], fused(ready)
                ready += 1
        while ready < len(bands_of_rows):
            yield bands_of_rows[ready], fused(ready)
            ready += 1


ROW_BAND = 256   # rows per band of the sampler's pointwise updates


def row_bands(height: int, rows: Optional[int] = None, offset: int = 0) -> list[tuple]:
    """Index tuples selecting bands of ``rows`` (default ``ROW_BAND``) rows of a (1, C, H, W)
    tensor, top to bottom. With ``offset`` the tensor is a box whose first row is row ``offset``
    of a larger image, and the bands end where that image's bands end (the first may be
    shorter), so that each lies within one band of the larger image."""
    rows = rows or ROW_BAND
    starts = [0] + list(range(rows - offset % rows, height, rows))
    return [(slice(None), slice(None), slice(a, b)) for a, b in zip(starts, starts[1:] + [height])]


class RowUpsampler:
    """Bilinear upsampling of a (1, C, h, w) image to ``size`` (as ``F.interpolate`` with
    ``align_corners=False``, to float rounding), computed a band of rows at a time when indexed
    with a :func:`row_bands` tuple: a scale's upsampled predecessor is read at every step but
    never held whole, which at native resolution is a window's worth of memory. The last band
    is kept, since the updates of one step read it more than once."""

    def __init__(self, image: torch.Tensor, size: tuple[int, int]):
        self.image, self.width = image, int(size[1])
        h = image.shape[-2]
        pos = ((torch.arange(size[0], dtype=torch.float32) + 0.5) * (h / size[0]) - 0.5).clamp(min=0)
        self.top = pos.floor().long().clamp(max=h - 1)
        self.bottom = (self.top + 1).clamp(max=h - 1)
        self.weight = (pos - self.top)[:, None].to(image.device)
        self._last: tuple[Optional[int], Optional[torch.Tensor]] = (None, None)

    def __getitem__(self, index: tuple) -> torch.Tensor:
        rows = index[2]
        if self._last[0] == rows.start:
            return self._last[1]
        a, b = rows.start, rows.stop
        lo, hi = int(self.top[a]), int(self.bottom[b - 1]) + 1
        part = F.interpolate(self.image[..., lo:hi, :], size=(hi - lo, self.width), mode="bilinear",
                             align_corners=False)   # along the rows only: the source rows as they are
        w = self.weight[a:b]
        out = part[..., self.top[a:b] - lo, :].mul_(1 - w).add_(part[..., self.bottom[a:b] - lo, :].mul_(w))
        self._last = (a, out)
        return out


class BandNoise:
    """Fixed Gaussian noise of ``shape`` (1, C, H, W) that is never held whole: indexed with a
    :func:`row_bands` tuple, it draws that band's rows from a generator seeded with ``seed`` and
    the band's index, so the same rows come back every time (a counter-based stream) and the
    values do not depend on the device. The last band is kept for the reads of one update."""

    def __init__(self, shape: tuple, seed: int, device: torch.device):
        self.shape, self.seed, self.device = tuple(shape), int(seed), device
        self._last: tuple[Optional[int], Optional[torch.Tensor]] = (None, None)

    def __getitem__(self, index: tuple) -> torch.Tensor:
        """Rows ``index[2]``, which lie within one band of ``ROW_BAND`` rows (see :func:`row_bands`)."""
        rows = index[2]
        k = rows.start // ROW_BAND
        if rows.stop > (k + 1) * ROW_BAND:
            raise ValueError(f"rows {rows.start}:{rows.stop} straddle bands of {ROW_BAND} rows")
        if self._last[0] != k:
            generator = torch.Generator().manual_seed(self.seed + k)
            height = min(self.shape[2], (k + 1) * ROW_BAND) - k * ROW_BAND
            band = torch.randn(self.shape[:2] + (height, self.shape[3]), generator=generator)
            self._last = (k, band.to(self.device))
        return self._last[1][..., rows.start - k * ROW_BAND:rows.stop - k * ROW_BAND, :]


class BoxView:
    """The box ``(top, bottom, left, right)`` of a row-indexed source (a tensor, :class:`BandNoise`
    or :class:`RowUpsampler` of a larger image), indexed with :func:`row_bands` tuples of the box:
    each read takes the larger image's rows and cuts its columns."""

    def __init__(self, source, box: tuple[int, int, int, int]):
        self.source, (self.top, _, self.left, self.right) = source, box

    def __getitem__(self, index: tuple) -> torch.Tensor:
        rows = index[2]
        part = self.source[(slice(None), slice(None), slice(self.top + rows.start, self.top + rows.stop))]
        return part[..., self.left:self.right]


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
           tile: int = 0, overlap: Optional[int] = None, scale_offset: int = 0, crop: bool = True,
           return_box: bool = False, on_step: Optional[Callable[[int, int, int], None]] = None):
    """Generate an image of ``sizes[-1]`` through all scales. Returns (1, bands, H, W) in [-1, 1].

    ``novelty`` in (0, 1] is where the coarsest scale's chain starts, as a fraction of the
    timesteps: 1 draws it from pure noise (the reference); below 1, and with a ``constraint``,
    it starts from the original noised to that level (as SDEdit does), so the edited region keeps
    the original's coarse layout and continues its surroundings while every finer detail is new.

    ``tile`` > 0 runs the net on overlapping tiles of at most that many pixels a side wherever a
    scale is larger (:class:`TiledDenoiser`), so its memory follows the tile, not the image;
    ``overlap`` (px, default twice the net's receptive radius plus 8) is what neighbours share.
    Noise, masks and hooks do not depend on the tiling, so a seed gives the same result tiled or
    not (the fixed and the starting noise of a scale taller than a band of rows are drawn per
    band, from seeds taken from ``generator``, and never held whole: :class:`BandNoise`). Tiles
    that hold only kept pixels (keep mask 1) are not run: there the prediction is the noise that
    re-noised the original, so the estimate of the clean image is the original itself.

    With ``crop`` (and a ``constraint``), a tiled scale above the coarsest runs on the box of the
    pixels it changes widened by the net's receptive radius, not on the whole image: beyond it
    every pixel is kept, and is the original after the scale's last step, so only the box's x,
    keep mask and temporaries are held, and the box is pasted into a copy of the original. The
    box's own sides count as tiles' cut edges, its bands of rows end where the image's do and its
    noise is read from the image's, so the result equals the uncropped one bit for bit. With an
    ``x0_hook`` (which reads whole images) no scale is cropped, except the finest when the hook
    has ``reads_finest`` False. With ``return_box`` the sampler returns (the finest box's pixels,
    box) with box = (top, bottom, left, right) instead of that copy (the whole image's box when
    the finest scale was not cropped).

    ``scale_offset`` is added to the scale index the net is conditioned on: a net trained on
    several windows counts scales on a ladder common to them (``trainer.scale_offsets``).

    Noise is drawn on the CPU from ``generator`` so that results do not depend on the device.
    ``on_step(scale, done, total)`` reports progress and may raise to cancel.
    """
    net.eval()
    sched = schedule.to(device)
    timesteps = len(sched.abar)
    from_original = constraint is not None and novelty < 1.0
    first = max(1, round(novelty * timesteps)) if from_original else timesteps
    plans = [_timesteps(sched.t_start[s] if s > 0 else first, stride) for s in range(len(sizes))]
    total = sum(len(p) for p in plans)
    done = 0
    result = None
    halo = receptive_radius(net)
    overlap = 2 * halo + TILE_RAMP if overlap is None else overlap

    def randn(shape):
        return torch.randn(shape, generator=generator).to(device)

    def banded_randn(shape):
        """Noise of ``shape``: drawn whole, or for a scale of several bands of rows, per band from
        a seed taken from ``generator`` (:class:`BandNoise`), never held whole."""
        if shape[2] > ROW_BAND:
            return BandNoise(shape, int(torch.randint(0, 2 ** 62, (1,), generator=generator)), device)
        return randn(shape)

    for s, size in enumerate(sizes):
        shape = (1, bands) + tuple(size)
        if size[0] > ROW_BAND:
            return_freed_memory()   # the scale below's temporaries, before this one's tensors
        blurry = None if s == 0 else RowUpsampler(result, size)   # holds the scale below: half the pixels
        result = None
        gam = sched.gammas[s].clamp(0, REBLUR_MAX) if s > 0 else None
        keep = constraint.keep[s].to(device) if constraint is not None else None
        original = constraint.originals[s].to(device) if constraint is not None else None
        # the same noise re-noises the original at every step; a scale of several bands of rows
        # draws it band by band from a seed instead of holding a window's worth of it
        fixed_noise = banded_randn(shape)
        needed = last_keep = None   # last_keep: the mask of the scale's last step
        if keep is not None:
            last_keep = keep if s < len(sizes) - 1 or constraint.final is None else constraint.final.to(device)
            needed = (keep[0, 0] < 1) | (~last_keep[0, 0] if last_keep.dtype == torch.bool else last_keep[0, 0] < 1)
        box = cut = whole = None   # the box this scale runs on, its cut sides and the whole original
        if (crop and needed is not None and s > 0 and 0 < tile < max(size) and bool(needed.any())
                and (x0_hook is None or (s == len(sizes) - 1 and not getattr(x0_hook, "reads_finest", True)))):
            box = _span(needed.any(dim=1), halo) + _span(needed.any(dim=0), halo)
            if box == (0, size[0], 0, size[1]):
                box = None
        if box is not None:
            top, bottom, left, right = box
            cut = (top > 0, bottom < size[0], left > 0, right < size[1])
            whole = original
            same = last_keep is keep
            keep, needed = (m[..., top:bottom, left:right].clone() for m in (keep, needed))
            last_keep = keep if same else last_keep[..., top:bottom, left:right].clone()
            original = original[..., top:bottom, left:right]
            blurry, fixed_noise = BoxView(blurry, box), BoxView(fixed_noise, box)
            if constraint.release:   # the whole masks are no longer read
                constraint.keep[s] = None
                if s == len(sizes) - 1:
                    constraint.final = None
            shape = (1, bands, bottom - top, right - left)
        denoise = TiledDenoiser(net, tuple(shape[-2:]), tile, overlap, halo,
                                needed=needed.cpu() if needed is not None else None, cut=cut or (False,) * 4)
        del needed
        # Every update after the net's prediction is pointwise, so it runs on bands of rows:
        # its temporaries follow the band, and the full-frame tensors of a large scale are only
        # x and the prediction (which then holds x0_mix and eps_hat), x0 when a hook reads it
        # whole, the scale below (half the pixels) and the original and keep mask.
        bands_of_rows = row_bands(shape[2], offset=box[0] if box else 0)

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
        start = banded_randn((1, bands) + tuple(size))   # drawn for the whole scale, read in the box
        if box is not None:
            start = BoxView(start, box)
        x = torch.empty(shape, dtype=torch.float32, device=device)
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
            ss = torch.full((1,), s + scale_offset, device=device, dtype=torch.long)
            ab = sched.abar[t]
            fresh, sigma = None, torch.zeros((), device=device)
            if t_next >= 0:
                ab_next = sched.abar[t_next]
                if s == 0:   # stochastic (DDPM-like, eta = 1) at the coarsest scale
                    sigma = ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp(min=0).sqrt()
                    fresh = sigma * randn(shape)
                # finer scales: deterministic, as the reference's reblurring sampler

            def estimate(r, eps_r):
                """(x0_mix, x0) on rows ``r``: the clamped clean estimate from the prediction on
                those rows (in its memory) and, at s > 0, its sharp version with the blur undone."""
                x0_mix = eps_r.mul_((1 - ab).sqrt()).neg_().add_(x[r]).div_(ab.sqrt()).clamp_(-1, 1)
                if gam is None:
                    return x0_mix, x0_mix.clone()
                return x0_mix, (blurry[r] * gam[t]).neg_().add_(x0_mix).div_(1 - gam[t]).clamp_(-1, 1)

            def advance(r, x0_mix, x0):
                """Write rows ``r`` of the next step's x (the final image after t = 0)."""
                if t_next < 0:
                    if last_keep is None:
                        x[r] = x0
                    elif last_keep.dtype == torch.bool:
                        x[r] = torch.where(last_keep[r], original[r], x0)
                    else:
                        x[r] = last_keep[r] * original[r] + (1 - last_keep[r]) * x0
                    return
                eps_hat = x0_mix.mul_(ab.sqrt()).neg_().add_(x[r]).div_((1 - ab).sqrt())
                x_next = mixed_times(x0, t_next, ab_next.sqrt(), r).add_(
                    eps_hat.mul_((1 - ab_next - sigma ** 2).clamp(min=0).sqrt()))
                if fresh is not None:
                    x_next = x_next + fresh[r]
                if keep is not None:
                    x_next = keep_original(x_next, t_next, r)
                x[r] = x_next

            # where the original is kept, its own noise is the exact prediction (the fallback)
            if x0_hook is None:
                # every update is pointwise: a band of rows is advanced as soon as its prediction
                # is complete, so neither the prediction nor the clean estimate is held whole
                for r, eps_r in denoise.bands(x, tt, ss, fixed_noise, bands_of_rows):
                    advance(r, *estimate(r, eps_r))
            else:
                eps = denoise(x, tt, ss, fallback=fixed_noise, bands_of_rows=bands_of_rows)
                x0 = torch.empty_like(x)
                for r in bands_of_rows:
                    _, x0[r] = estimate(r, eps[r])   # x0_mix stays in the prediction's memory
                x0 = x0_hook(x0, s, t).clamp(-1, 1)
                for r in bands_of_rows:
                    advance(r, eps[r], x0[r])
                del x0, eps
            del fresh
            done += 1
            if on_step is not None:
                on_step(s, done, total)
        result = x.clamp_(-1, 1)
        if s == len(sizes) - 1 and return_box:
            return result, box or (0, size[0], 0, size[1])
        if box is not None:   # the original beyond the box, as the last step leaves it
            result = whole.clone()
            result[..., box[0]:box[1], box[2]:box[3]] = x
        del x, blurry, whole
        keep = original = last_keep = fixed_noise = denoise = None
        if constraint is not None and constraint.release:
            constraint.keep[s] = constraint.originals[s] = None
    return result

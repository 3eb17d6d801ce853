"""A plain GPNN-style fill (Granot et al., 2022, "Drop the GAN"), the bench's baseline.

It is an editor (``edit(request, progress)``, ``describe()``) handed to ``edit_scene`` as
``editor=``, so it runs through the same windows, blend and writing as the engines, and the
bench can tell what the engines add to the plain method. Per window:

* the same image pyramid as the engines (``rs_geo_edit.model.pyramid.build_pyramid``), coarse
  to fine;
* at the coarsest level the ROI starts from an inpainting of its surroundings (normalised
  Gaussian convolution of the known pixels) with white noise of ``NOISE`` times each band's
  spread; in copy mode the donor, resized to that level, replaces the start where it lies;
* at every level, ``ITERATIONS`` times: queries (the current fill) and keys (the level's
  image) are both blurred to the level, i.e. taken to the level below and upsampled back
  (``blurry`` of the pyramid for the keys); each query patch (``PATCH`` x ``PATCH``) takes the
  sharp value patch of its one nearest key (exact Euclidean distance over all bands, k = 1);
  every pixel of the ROI becomes the plain average of the value patches that cover it;
* keys come only from patches wholly outside the ROI (and off invalid pixels); beyond the
  ROI the original is kept at every level.

The one departure from an exhaustive search: a window with more than ``MAX_KEYS`` candidate
patches keeps a seeded random subset of them, so that a CPU run stays within minutes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from rs_geo_edit.imaging import resize
from rs_geo_edit.model.pyramid import build_pyramid, mask_pyramid, upsample
from rs_geo_edit.patch.ops import as_tensor, gather, grow

PATCH = 7            # patch side, pixels (GPNN's default)
ITERATIONS = 5       # nearest-neighbour passes per level
NOISE = 0.75         # white noise of the coarsest start, times each band's standard deviation
MAX_KEYS = 60_000    # most key patches per level (a seeded subset beyond it): a 256 px window is searched whole
CHUNK = 1024         # queries searched at once


class GPNNBaseline:
    """The plain baseline as an editor (the ``pipeline.contract.Editor`` protocol)."""

    name = "gpnn"

    def __init__(self, config):
        self.config = config
        self.windows: list[dict] = []

    def describe(self) -> dict:
        return {"name": self.name, "mode": self.config.mode, "patch": PATCH, "iterations": ITERATIONS,
                "noise": NOISE, "max_keys": MAX_KEYS, "windows": self.windows}

    def edit(self, request, progress) -> np.ndarray:
        """The window with its ROI filled, (bands, rows, cols) float32 in [-1, 1]."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        started = time.perf_counter()
        pyramid = build_pyramid(request.image, request.valid)
        sizes = list(pyramid.spec.sizes)
        rois = mask_pyramid(request.roi, sizes)
        holes = mask_pyramid(request.roi | ~request.valid, sizes)
        generator = torch.Generator().manual_seed(int(request.seed))
        x = None
        for s, size in enumerate(sizes):
            image, roi = as_tensor(pyramid.images[s]), torch.from_numpy(rois[s])
            if s == 0:
                x = coarse_start(image, roi, generator, self._donor(request, size))
            else:
                x = torch.where(roi[None], as_tensor(upsample(x.numpy(), size)), image)
            keys = image if s == 0 else as_tensor(_blurry(pyramid, s))
            bank = KeyBank(keys, image, torch.from_numpy(holes[s]), seed=int(request.seed) + s)
            for _ in range(ITERATIONS):
                query = x if s == 0 else as_tensor(blur_to_level(x.numpy(), sizes[s - 1], size))
                x = torch.where(roi[None], bank.vote(query, roi), image)
            progress(s + 1, len(sizes), f"gpnn baseline, level {s + 1}/{len(sizes)}")
        out = np.where(request.roi[None], x.clamp(-1, 1).numpy(), request.image).astype(np.float32)
        self.windows.append({"window": request.window.index, "levels": [list(z) for z in sizes],
                             "fill_s": round(time.perf_counter() - started, 2)})
        return out

    def _donor(self, request, size):
        """Copy mode: (donor content, where it lies) at the coarsest level; None otherwise."""
        if self.config.mode != "copy" or request.copy_source is None:
            return None
        where = resize((request.copy_mask & request.roi).astype(np.float32), size, "area") > 0.5
        return as_tensor(resize(request.copy_source, size, "lanczos")), torch.from_numpy(where)


def _blurry(pyramid, s: int) -> np.ndarray:
    """Level ``s`` of the pyramid blurred to the level: the level below, upsampled."""
    held = pyramid.blurry[s]
    return held if held is not None else upsample(pyramid.images[s - 1], pyramid.spec.sizes[s])


def blur_to_level(image: np.ndarray, below: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """``image`` taken to the level below (``below``, Lanczos) and upsampled back to ``size``."""
    return upsample(resize(image, below, "lanczos"), size)


def coarse_start(image: torch.Tensor, roi: torch.Tensor, generator: torch.Generator, donor=None) -> torch.Tensor:
    """The coarsest level's start: outside ``roi`` the image; inside, its surroundings smeared
    in (normalised convolution with a growing Gaussian until every pixel is reached) plus white
    noise of ``NOISE`` times each band's spread; in copy mode the donor where it lies."""
    known = (~roi).float()[None]
    filled = image * known
    sigma = 2.0
    weight = _gauss(known, sigma)
    while bool((weight <= 1e-6).any()) and sigma < max(image.shape[1:]):
        sigma *= 2
        weight = _gauss(known, sigma)
    smeared = _gauss(filled, sigma) / weight.clamp(min=1e-6)
    spread = image[:, ~roi].std(dim=1)[:, None, None] if bool((~roi).any()) else image.std()
    start = smeared + NOISE * spread * torch.randn(image.shape, generator=generator)
    if donor is not None:
        content, where = donor
        start = torch.where(where[None], content, start)
    return torch.where(roi[None], start, image)


def _gauss(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (C, H, W) tensor, zero beyond the edges (for normalised convolution)."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = image.shape[0]
    out = F.conv2d(image[None], k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, radius), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(radius, 0), groups=c)[0]


class KeyBank:
    """The patches of a level centred where a whole patch avoids ``hole``: ``keys`` from the
    blurred image, ``values`` from the sharp one, both flattened over every band."""

    def __init__(self, key_image: torch.Tensor, image: torch.Tensor, hole: torch.Tensor, seed: int):
        centres = (~grow(hole, PATCH // 2)).flatten().nonzero().flatten()
        if len(centres) == 0:
            raise ValueError("no patch of the window lies wholly outside the ROI")
        if len(centres) > MAX_KEYS:
            pick = torch.randperm(len(centres), generator=torch.Generator().manual_seed(seed))[:MAX_KEYS]
            centres = centres[pick.sort().values]
        self.keys = gather(key_image, centres, PATCH)
        self.values = gather(image, centres, PATCH)
        self.key_norms = (self.keys ** 2).sum(dim=1)

    def nearest(self, queries: torch.Tensor) -> torch.Tensor:
        """Index of each query patch's nearest key (exact squared Euclidean distance)."""
        scores = self.key_norms[None] - 2 * queries @ self.keys.T   # |q|^2 is the same for every key
        return scores.argmin(dim=1)

    def vote(self, query_image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """``query_image`` (C, H, W) remade where ``region`` is True: each patch overlapping the
        region replaced by its nearest key's value patch, the patches averaged uniformly."""
        c, h, w = query_image.shape
        centres = grow(region, PATCH // 2).flatten().nonzero().flatten()
        total = torch.zeros(c, h + PATCH - 1, w + PATCH - 1)
        count = torch.zeros(1, h + PATCH - 1, w + PATCH - 1)
        for start in range(0, len(centres), CHUNK):
            part = centres[start:start + CHUNK]
            values = self.values[self.nearest(gather(query_image, part, PATCH))]
            _add_patches(total, count, values.view(len(part), c, PATCH, PATCH), part, w)
        r = PATCH // 2
        out = total[:, r:r + h, r:r + w] / count[:, r:r + h, r:r + w].clamp(min=1)
        return torch.where(region[None], out, query_image)


def _add_patches(total: torch.Tensor, count: torch.Tensor, patches: torch.Tensor, centres: torch.Tensor,
                 width: int) -> None:
    """Add (N, C, P, P) ``patches`` centred at flat ``centres`` of a ``width``-wide image into the
    padded ``total`` (C, H + P - 1, W + P - 1), and one per covered pixel into ``count``."""
    rows, cols = centres // width, centres % width
    c, padded_w = total.shape[0], total.shape[2]
    flat_total, flat_count = total.view(c, -1), count.view(-1)
    for dy in range(PATCH):
        for dx in range(PATCH):
            flat = (rows + dy) * padded_w + cols + dx
            flat_total.index_add_(1, flat, patches[:, :, dy, dx].T.contiguous())
            flat_count.index_add_(0, flat, torch.ones(len(flat)))

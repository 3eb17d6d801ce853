"""A bank of a window's real patches and the estimate of an image made of them.

Keys and values are the patches centred wherever a whole patch avoids an excluded region (the ROI:
its old content is never copied back). A query patch is matched against the keys in a reduced
space (principal components of the keys) and takes its nearest key's value; folded back, a
pixel's brightness is the centre of the patch matched at it, so it keeps the scene's grain (an
even fold, or an average of several neighbours, blends unaligned textures into fog: luminance
detail 0.3-0.5 of the ring on the bundled scene against 0.6-1.2), and its colour comes from the
patches around it (single centres speckle the colour). Keys may be blurred like the queries
while the values stay sharp (GPNN's split of what is matched from what is copied).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7            # patch side, pixels
DIMS = 24            # principal components the search runs in
MAX_KEYS = 12_000    # keys kept (a seeded subsample beyond it): the search's cost follows it
FOLD_SIGMA = 0.3     # the fold's window for brightness, pixels: each pixel is its own patch's centre
CHROMA_SIGMA = 0.6   # the fold's window for colour: the patches around a pixel agree on it
CHUNK = 4096         # queries searched at once


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (C, H, W) tensor with reflected edges (unchanged for ``sigma`` <= 0)."""
    if sigma <= 0:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = image[None]
    pad_h, pad_w = min(radius, image.shape[1] - 1), min(radius, image.shape[2] - 1)
    out = F.pad(out, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if pad_h and pad_w else out
    k = kernel[radius - pad_w:radius + pad_w + 1] if pad_w < radius else kernel
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    k = kernel[radius - pad_h:radius + pad_h + 1] if pad_h < radius else kernel
    out = F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out[0]


def grow(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A (H, W) bool mask grown by a square of ``radius`` pixels."""
    if radius <= 0:
        return mask
    grown = F.max_pool2d(mask[None, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return grown[0, 0] > 0


def _gather(image: torch.Tensor, centres: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C * patch * patch) patches of a (C, H, W) image padded by the patch radius, centred at
    the flat indices ``centres`` of the unpadded image."""
    c, h, w = image.shape
    r = patch // 2
    padded = F.pad(image[None], (r, r, r, r), mode="reflect")[0].reshape(c, -1)
    rows, cols = centres // w, centres % w
    offsets = [(dy, dx) for dy in range(patch) for dx in range(patch)]
    flat = torch.stack([(rows + dy) * (w + 2 * r) + cols + dx for dy, dx in offsets])   # (P*P, N)
    return padded[:, flat].permute(2, 0, 1).reshape(len(centres), -1)


class PatchBank:
    """The real patches of a (C, H, W) image centred where a whole patch avoids ``exclude``:
    ``keys`` from ``key_image`` (the image blurred as queries will be, or the image itself) and
    ``values`` from ``image``. Beyond ``max_keys`` a subsample seeded by ``seed`` is kept."""

    def __init__(self, image: torch.Tensor, exclude: torch.Tensor, *, key_image: Optional[torch.Tensor] = None,
                 patch: int = PATCH, max_keys: int = MAX_KEYS, dims: int = DIMS, seed: int = 0):
        self.patch, self.shape = patch, tuple(image.shape)
        allowed = ~grow(exclude, patch // 2)
        centres = allowed.flatten().nonzero().flatten()
        if len(centres) == 0:
            raise ValueError("no patch of the window lies wholly outside the region to fill")
        if len(centres) > max_keys:
            pick = torch.randperm(len(centres), generator=torch.Generator().manual_seed(int(seed)))[:max_keys]
            centres = centres[pick.sort().values]
        self.centres = centres
        self.values = _gather(image.float(), centres, patch)
        keys = _gather((image if key_image is None else key_image).float(), centres, patch)
        self.mean = keys.mean(dim=0)
        sample = keys[:: max(1, len(keys) // 4000)] - self.mean
        _, _, vt = torch.linalg.svd(sample, full_matrices=False)
        self.basis = vt[:min(dims, vt.shape[0])].T.contiguous()   # (D, dims)
        self.keys = (keys - self.mean) @ self.basis
        self.key_norms = (self.keys ** 2).sum(dim=1)

    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        """(queries, keys) squared distances in the reduced space."""
        q = (queries - self.mean) @ self.basis
        return ((q ** 2).sum(dim=1, keepdim=True) - 2 * q @ self.keys.T + self.key_norms[None]).clamp(min=0)

    def nearest(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distances, key indices) of each query patch's ``k`` nearest keys, nearest first."""
        dist, idx = torch.topk(self.distances(queries), min(k, len(self.keys)), dim=1, largest=False)
        return dist, idx

    def estimate(self, query_image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """``query_image`` (C, H, W, matched against the keys) remade of the bank's values where
        ``region`` (H, W bool) is True; unchanged elsewhere. Each query patch takes its nearest
        key's value; folded back, a pixel's brightness (band mean) is that of the patch centred
        on it, so the grain survives, and its colour (each band less the mean) that of the
        patches around it, which agree on it where single centres would speckle."""
        c, h, w = query_image.shape
        r = self.patch // 2
        centres = grow(region, r).flatten().nonzero().flatten()
        folds = [Fold(self.patch, c, h, w, FOLD_SIGMA), Fold(self.patch, c, h, w, CHROMA_SIGMA)]
        for start in range(0, len(centres), CHUNK):
            part = centres[start:start + CHUNK]
            _, idx = self.nearest(_gather(query_image.float(), part, self.patch), 1)
            for fold in folds:
                fold.add(self.values[idx[:, 0]], part)
        sharp, soft = (fold.result() for fold in folds)
        out = soft + (sharp.mean(dim=0, keepdim=True) - soft.mean(dim=0, keepdim=True))
        return torch.where(region[None], out, query_image)


class Fold:
    """Patches (N, C*P*P) added back at their centres into a (C, H, W) image with a
    centre-peaked Gaussian window of ``sigma`` pixels, normalised by the windows' sum."""

    def __init__(self, patch: int, bands: int, h: int, w: int, sigma: float):
        self.patch, self.bands, self.h, self.w = patch, bands, h, w
        r = patch // 2
        x = torch.arange(patch, dtype=torch.float32) - r
        self.window = torch.exp(-(x[:, None] ** 2 + x[None] ** 2) / (2 * sigma ** 2)).flatten()
        self.total = torch.zeros(bands, (h + 2 * r) * (w + 2 * r))
        self.weight = torch.zeros((h + 2 * r) * (w + 2 * r))

    def add(self, patches: torch.Tensor, centres: torch.Tensor) -> None:
        r = self.patch // 2
        wp = self.w + 2 * r
        rows, cols = centres // self.w, centres % self.w
        cells = patches.view(len(centres), self.bands, -1) * self.window
        for j in range(self.patch * self.patch):
            dy, dx = divmod(j, self.patch)
            flat = (rows + dy) * wp + cols + dx
            self.weight.index_add_(0, flat, self.window[j].expand(len(centres)))
            self.total.index_add_(1, flat, cells[:, :, j].T.contiguous())

    def result(self) -> torch.Tensor:
        r = self.patch // 2
        out = (self.total / self.weight.clamp(min=1e-12)).view(self.bands, self.h + 2 * r, self.w + 2 * r)
        return out[:, r:r + self.h, r:r + self.w]


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

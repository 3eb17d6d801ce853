"""Small operations on (C, H, W) images that the patch fill, its matcher and the SinDDM patch stage
share: the patch side, a Gaussian blur, a grown mask, patches gathered at given centres, the
share of a window's detail that lies at the pixel level."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7            # patch side, pixels


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


def gather(image: torch.Tensor, centres: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C * patch * patch) patches of a (C, H, W) image padded by the patch radius, centred at
    the flat indices ``centres`` of the unpadded image."""
    c, h, w = image.shape
    r = patch // 2
    padded = F.pad(image[None], (r, r, r, r), mode="reflect")[0].reshape(c, -1)
    rows, cols = centres // w, centres % w
    offsets = [(dy, dx) for dy in range(patch) for dx in range(patch)]
    flat = torch.stack([(rows + dy) * (w + 2 * r) + cols + dx for dy, dx in offsets])   # (P*P, N)
    return padded[:, flat].permute(2, 0, 1).reshape(len(centres), -1)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def fine_share(image: np.ndarray, where: np.ndarray) -> float:
    """Of the detail of ``image`` (C, H, W) finer than about 4 px, the share at the pixel level:
    the variance of its luminance minus a 0.7 px blur over the variance of it minus a 4 px blur,
    on the pixels ``where`` (H, W bool) is True, each band standardised there first. Fine
    stochastic texture (needles, grass, snow grain) scores high; edges, lines and smooth fields
    score low. 0 where fewer than 16 pixels count."""
    mask = torch.from_numpy(np.ascontiguousarray(where, dtype=bool))
    if int(mask.sum()) < 16:
        return 0.0
    bands = as_tensor(image)
    picked = bands[:, mask]
    scaled = (bands - picked.mean(dim=1)[:, None, None]) / picked.std(dim=1).clamp(min=1e-6)[:, None, None]
    luminance = scaled.mean(dim=0, keepdim=True)
    fine, coarse = (float((luminance - blur(luminance, sigma))[0][mask].var()) for sigma in (0.7, 4.0))
    return fine / coarse if coarse > 0 else 0.0

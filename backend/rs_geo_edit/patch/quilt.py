"""A large region's layout laid out of whole real blocks of the window (image quilting).

Where an ROI spans hundreds of pixels, the fill's coarsest scale is too coarse for its 7 px
patches: one spans several fields, its nearest real patch is one that averages them, and the
layout merges into pale blobs (docs/quality.md, "The layout of large ROIs"). A quilt lays the
region out at a finer scale of blocks of ``BLOCK`` pixels, each wholly outside the ROI, in rows:
each block is drawn from the ``CHOICES`` that best continue what is already there (the ring
around the region and the blocks placed before it) and follow a guide where nothing is yet (the
more so near the ring, so the outline continues what lies beyond it), and it meets the blocks
above and to its left along the cheapest path through their overlap, so a field's edges, a
forest belt or a farmstead come whole and the seams run where the two agree.
No source is used twice (nor one within half a block of it).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..imaging import distance_to

BLOCK = 20        # block side, pixels of the quilt's scale: at a 10 m scene's quilt scale, about 800 m of
                  # farmland, several whole fields with their edges
OVERLAP = 6       # pixels a block shares with the blocks above and to its left, where the cut runs
GUIDE = 0.3       # weight of the guide against what is already there in a block's cost, inside the region
RIM = 8           # pixels over which the guide's weight rises from GUIDE to 1 towards the ring: near the outline
                  # a block follows the original as much as its neighbours (seams 0.79-1.12 over 18 runs where 0.3
                  # everywhere gave 0.89-1.28; preferred in a paired look on 11 of 18)
CHOICES = 4       # a block is drawn from this many best
MIN_SOURCES = 50  # fewer blocks wholly outside the ROI: no quilt (a ring too thin to hold a block)


def quilt(image: torch.Tensor, region: np.ndarray, exclude: np.ndarray, guide: torch.Tensor,
          generator: torch.Generator) -> Optional[torch.Tensor]:
    """``image`` (C, H, W) with ``region`` (H, W bool) laid out of its blocks wholly outside
    ``exclude`` (H, W bool), following ``guide`` (C, H, W) where nothing is placed yet; None where
    fewer than ``MIN_SOURCES`` blocks lie outside ``exclude``."""
    c, h, w = image.shape
    whole = F.avg_pool2d((~torch.from_numpy(exclude)).float()[None, None], BLOCK, stride=1)[0, 0] > 0.999
    sources = whole.flatten().nonzero().flatten()
    if len(sources) < MIN_SOURCES:
        return None
    blocks = F.unfold(image[None], BLOCK)[0][:, sources].T.contiguous()   # (N, C * BLOCK * BLOCK)
    squares = blocks ** 2
    source_rows, source_cols = sources // (w - BLOCK + 1), sources % (w - BLOCK + 1)
    used = torch.zeros(len(sources), dtype=torch.bool)
    canvas = image.clone()
    known = ~region
    near_ring = np.clip(1 - (distance_to(~region) - 1) / RIM, 0, 1)
    guide_weight = torch.from_numpy((GUIDE + (1 - GUIDE) * near_ring).astype(np.float32))
    rows, cols = np.nonzero(region)
    step = BLOCK - OVERLAP
    for top in range(max(0, rows.min() - OVERLAP), rows.max() + 1, step):
        i = min(top, h - BLOCK)
        for left in range(max(0, cols.min() - OVERLAP), cols.max() + 1, step):
            j = min(left, w - BLOCK)
            inside = region[i:i + BLOCK, j:j + BLOCK]
            if not inside.any():
                continue
            there = known[i:i + BLOCK, j:j + BLOCK]
            current = canvas[:, i:i + BLOCK, j:j + BLOCK]
            held = torch.from_numpy(there)
            weight = torch.where(held, 1.0, guide_weight[i:i + BLOCK, j:j + BLOCK]).flatten().repeat(c)
            target = torch.where(held[None], current, guide[:, i:i + BLOCK, j:j + BLOCK]).flatten()
            # the weighted squared distance of every block to the target, as two products over the blocks
            cost = squares @ weight - 2 * (blocks @ (weight * target)) + float((weight * target ** 2).sum())
            cost = torch.where(used, torch.inf, cost)
            best = torch.argsort(cost)[:CHOICES]
            pick = best[torch.randint(len(best), (1,), generator=generator)].item()
            used |= (((source_rows - source_rows[pick]).abs() < BLOCK // 2)
                     & ((source_cols - source_cols[pick]).abs() < BLOCK // 2))
            block = blocks[pick].view(c, BLOCK, BLOCK)
            take = _cut_mask(((block - current) ** 2).sum(0).numpy(), there) | ~there
            canvas[:, i:i + BLOCK, j:j + BLOCK] = torch.where(torch.from_numpy(take & inside)[None], block, current)
            known[i:i + BLOCK, j:j + BLOCK] |= inside
    return canvas


def _cut_mask(error: np.ndarray, there: np.ndarray) -> np.ndarray:
    """Where a new block replaces what is ``there`` (H, W bool) in its overlaps: beyond the
    cheapest top-to-bottom path through ``error`` in the left ``OVERLAP`` columns and the cheapest
    left-to-right path in the top ``OVERLAP`` rows (only where something is there)."""
    take = np.ones(error.shape, bool)
    if there[:, :OVERLAP].any():
        path = _cheapest_path(np.where(there[:, :OVERLAP], error[:, :OVERLAP], 0.0))
        take &= np.arange(error.shape[1])[None, :] >= path[:, None]
    if there[:OVERLAP, :].any():
        path = _cheapest_path(np.where(there[:OVERLAP, :], error[:OVERLAP, :], 0.0).T)
        take &= np.arange(error.shape[0])[:, None] >= path[None, :]
    return take


def _cheapest_path(error: np.ndarray) -> np.ndarray:
    """Per row of ``error`` (R, K), the column of the cheapest top-to-bottom path that moves at
    most one column a row."""
    total = error.copy()
    for r in range(1, len(total)):
        above = total[r - 1]
        total[r] += np.minimum(np.minimum(np.r_[np.inf, above[:-1]], above), np.r_[above[1:], np.inf])
    path = np.zeros(len(total), int)
    path[-1] = int(np.argmin(total[-1]))
    for r in range(len(total) - 2, -1, -1):
        lo = max(0, path[r + 1] - 1)
        path[r] = lo + int(np.argmin(total[r, lo:path[r + 1] + 2]))
    return path

"""A classifier two-sample test: can a small CNN tell patches of the ROI from patches of the
window around it?

The figure is the ROC AUC of a small convolutional net trained to tell PATCH x PATCH patches
wholly inside a region from patches wholly outside it (beyond MARGIN_PX, where the blend acts),
scored on spatially disjoint folds: the window is cut into four quadrants by a horizontal and a
vertical line through the region's centre, patches crossing a line are dropped, and each
quadrant in turn is scored by a net trained on the other three. 0.5: the net cannot tell the
region from its surroundings; 1.0: it always can.

A raw AUC is not a verdict. Real land cover differs from place to place (a coast from the sea
beside it, a road from the forest it crosses), so even an untouched region is told apart from
its window, at an AUC that depends on the scene. :func:`separability` therefore scores, beside
the edit, the same region of the original (what really lies there) and real regions of the same
shape moved elsewhere in the original window; an edit reads as real to this proxy where its AUC
is no higher than theirs.

All figures are deterministic for a seed (one torch thread count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .metrics import percentile_scale

PATCH = 16          # px: a patch sees texture and a little layout (tree crowns, field edges, lane marks)
STRIDE = 4          # px between patch corners
MARGIN_PX = 8       # patches reaching this close to the region belong to neither class (the blend band)
PER_CLASS = 1500    # patches per class and quadrant at most (a random subset beyond)
STEPS = 100         # training steps of a fold's net
BATCH = 32          # patches per class and step
MOVED = 4           # real regions of the ROI's shape, moved elsewhere, for calibration


@dataclass(frozen=True)
class Separability:
    """ROC AUCs (0.5 to 1) of the discriminator: ``edit`` the edited ROI against its window;
    ``place`` the original's ROI (what really lies there) against the original window;
    ``moved`` real regions of the ROI's shape elsewhere: moved within the original window where
    it has room, and the ROI on windows of the same size at other places of the scene when the
    caller hands them. NaN where a figure cannot be computed (too few patches)."""

    edit: float
    place: float
    moved: tuple[float, ...]

    @property
    def real_high(self) -> float:
        """The highest AUC of a real region: an edit at or below it is as separable as real
        content of this scene."""
        values = [v for v in (self.place, *self.moved) if np.isfinite(v)]
        return max(values) if values else float("nan")


def separability(before: np.ndarray, after: np.ndarray, roi: np.ndarray,
                 valid: Optional[np.ndarray] = None, seed: int = 0,
                 elsewhere: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> Separability:
    """The edit's AUC and its calibration on one window. ``before`` and ``after`` are
    (bands, rows, cols) in the source's units, ``roi`` and ``valid`` (rows, cols) booleans;
    ``elsewhere`` are (image, valid) windows of the same shape from other places of the original
    scene, each scored with the ROI where it lies in this window. Every image is scaled by the
    original window's 1st-99th percentiles per band (every band counts, NIR included)."""
    roi = roi.astype(bool)
    valid = np.ones(roi.shape, bool) if valid is None else valid.astype(bool)
    offset, span = percentile_scale(before, valid)

    def scaled(image):
        return ((image - offset) / span).astype(np.float32)

    original = scaled(before)   # scored with the ROI and with every moved region
    rng = np.random.default_rng(seed)
    moved = [region_auc(original, region, valid, seed=seed + 1 + n)
             for n, region in enumerate(moved_regions(roi, valid, MOVED, rng))]
    moved += [region_auc(scaled(image), roi, other_valid.astype(bool), seed=seed + 1 + MOVED + n)
              for n, (image, other_valid) in enumerate(elsewhere)]
    return Separability(edit=region_auc(scaled(after), roi, valid, seed=seed),
                        place=region_auc(original, roi, valid, seed=seed),
                        moved=tuple(moved))


def moved_regions(roi: np.ndarray, valid: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``count`` copies of ``roi`` shifted to other places of the window where they lie on
    valid pixels, clear of the ROI by MARGIN_PX + PATCH, and of each other."""
    rows, cols = np.nonzero(roi)
    if rows.size == 0:
        return []
    top, left = rows.min(), cols.min()
    height, width = rows.max() + 1 - top, cols.max() + 1 - left
    shape = roi[top:top + height, left:left + width]
    taken = _grow(roi, MARGIN_PX + PATCH)
    found = []
    for _ in range(200):
        if len(found) == count:
            break
        r = int(rng.integers(0, roi.shape[0] - height + 1))
        c = int(rng.integers(0, roi.shape[1] - width + 1))
        region = np.zeros_like(roi)
        region[r:r + height, c:c + width] = shape
        if (region & taken).any() or not valid[region].all():
            continue
        found.append(region)
        taken |= _grow(region, PATCH)
    return found


def region_auc(image: np.ndarray, region: np.ndarray, valid: np.ndarray, seed: int = 0) -> float:
    """Mean ROC AUC over the quadrant folds of a net telling patches inside ``region`` from
    patches outside it (``image`` (bands, rows, cols) float32, scaled). NaN with fewer than two
    usable folds."""
    inside, outside, fold_in, fold_out = _patches(region, valid, np.random.default_rng(seed))
    data = _with_detail(torch.from_numpy(np.ascontiguousarray(image)))
    aucs = []
    for fold in range(4):
        test_in, test_out = inside[fold_in == fold], outside[fold_out == fold]
        train_in, train_out = inside[fold_in != fold], outside[fold_out != fold]
        if min(len(test_in), len(test_out), len(train_in), len(train_out)) < 4:
            continue
        net = _train(data, train_in, train_out, seed * 4 + fold)
        with torch.no_grad():
            scores_in = net(_cut(data, test_in)).squeeze(1).numpy()
            scores_out = net(_cut(data, test_out)).squeeze(1).numpy()
        aucs.append(roc_auc(scores_in, scores_out))
    return float(np.mean(aucs)) if len(aucs) >= 2 else float("nan")


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The probability that a positive scores above a negative (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))   # ties take their mean rank
    n = len(positive)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negative)))


def _patches(region: np.ndarray, valid: np.ndarray, rng: np.random.Generator):
    """Top-left corners (N, 2) of patches wholly inside ``region`` and wholly outside it (beyond
    MARGIN_PX), all on valid pixels, each with its quadrant (0-3) around the region's centre;
    patches that cross a quadrant line are left out."""
    rows, cols = np.nonzero(region)
    centre = ((rows.min() + rows.max() + 1) // 2, (cols.min() + cols.max() + 1) // 2)
    r, c = np.meshgrid(np.arange(0, region.shape[0] - PATCH + 1, STRIDE),
                       np.arange(0, region.shape[1] - PATCH + 1, STRIDE), indexing="ij")
    r, c = r.ravel(), c.ravel()
    inside_share = _box_share(region, r, c)
    near_share = _box_share(_grow(region, MARGIN_PX), r, c)
    whole_valid = _box_share(valid, r, c) == 1
    upper = r + PATCH <= centre[0]
    lower = r >= centre[0]
    left = c + PATCH <= centre[1]
    right = c >= centre[1]
    clear = (upper | lower) & (left | right)
    quadrant = np.where(upper, 0, 2) + np.where(left, 0, 1)
    corners = np.stack([r, c], axis=1)

    def pick(mask):
        chosen, folds = [], []
        for q in range(4):
            idx = np.nonzero(mask & clear & (quadrant == q))[0]
            if len(idx) > PER_CLASS:
                idx = np.sort(rng.choice(idx, PER_CLASS, replace=False))
            chosen.append(corners[idx])
            folds.append(np.full(len(idx), q))
        return np.concatenate(chosen), np.concatenate(folds)

    inside, fold_in = pick((inside_share == 1) & whole_valid)
    outside, fold_out = pick((near_share == 0) & whole_valid)
    return inside, outside, fold_in, fold_out


def _box_share(mask: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Share of each PATCH x PATCH box at corners (r, c) that ``mask`` covers."""
    total = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    count = total[r + PATCH, c + PATCH] - total[r, c + PATCH] - total[r + PATCH, c] + total[r, c]
    return count / (PATCH * PATCH)


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, np.ones((2 * radius + 1, 2 * radius + 1), bool)) if mask.any() else mask.copy()


def _with_detail(image: torch.Tensor) -> torch.Tensor:
    """The bands and their 4-neighbour Laplacians: fog, speckle and smudge change the finest
    detail first, which a small net trained briefly finds sooner when it is handed to it."""
    padded = torch.nn.functional.pad(image[None], (1, 1, 1, 1), mode="replicate")[0]
    detail = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
              - 4 * image)
    return torch.cat([image, detail])


def _cut(data: torch.Tensor, corners: np.ndarray) -> torch.Tensor:
    """(N, bands, PATCH, PATCH) patches at ``corners``."""
    offsets = torch.arange(PATCH)
    rows = torch.from_numpy(corners[:, 0])[:, None] + offsets          # N x P
    cols = torch.from_numpy(corners[:, 1])[:, None] + offsets
    return data[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)


def _net(bands: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(bands, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))


def _train(data: torch.Tensor, inside: np.ndarray, outside: np.ndarray, seed: int) -> nn.Module:
    """A fold's net, trained on balanced batches with random flips and quarter turns (the
    texture's orientation tells nothing about an edit)."""
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))      # the net's initial weights
    net = _net(data.shape[0])
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    labels = torch.cat([torch.ones(BATCH), torch.zeros(BATCH)])[:, None]
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(STEPS):
        pick_in = torch.randint(len(inside), (BATCH,), generator=generator).numpy()
        pick_out = torch.randint(len(outside), (BATCH,), generator=generator).numpy()
        batch = _cut(data, np.concatenate([inside[pick_in], outside[pick_out]]))
        turns = int(torch.randint(4, (1,), generator=generator))
        batch = torch.rot90(batch, turns, (2, 3))
        if int(torch.randint(2, (1,), generator=generator)):
            batch = batch.flip(3)
        optimiser.zero_grad()
        loss = loss_fn(net(batch), labels)
        loss.backward()
        optimiser.step()
    return net.eval()

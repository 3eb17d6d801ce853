"""Tiled prediction: the net run on overlapping tiles fused at every step (MultiDiffusion's
per-step fusion), so memory follows the tile and large ROIs keep native resolution; a tile
trusts its prediction only beyond the net's receptive radius from its cut edges."""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Optional

import torch

from .net import precision
from .rows import row_bands

# Tiles trust their predictions beyond the net's receptive radius from a cut edge, where they
# equal the untiled prediction; neighbours cross-fade over this many pixels beyond that.
TILE_RAMP = 8


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


def span(flags: torch.Tensor, margin: int) -> tuple[int, int]:
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
            r0, r1 = span(needed.any(dim=1), halo)
            c0, c1 = span(needed.any(dim=0), halo)
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


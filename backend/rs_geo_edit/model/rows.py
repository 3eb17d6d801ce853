"""Row-band memory tools of the sampler: every update after the net's prediction is pointwise,
so it runs on bands of rows, and the large per-scale inputs (the upsampled scale below, the fixed
noise) are computed a band at a time and never held whole."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


ROW_BAND = 256   # rows per band of the sampler's pointwise updates


def several_bands(height: int) -> bool:
    """Whether an image of ``height`` rows spans more than one band of rows."""
    return height > ROW_BAND


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


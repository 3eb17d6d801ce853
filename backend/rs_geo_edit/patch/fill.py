"""A content-aware fill made of the window's own patches, coarse to fine, with no training.

Each scale holds a nearest-neighbour field (``match.py``): every pixel near the region to fill
points at a real patch wholly outside the ROI, found by propagation and random search, so that
neighbouring pixels point at neighbouring source pixels and whole pieces of the scene, lines and
edges intact, are copied together. A pixel takes the centre of the patch matched at it (a vote
that averages overlapping patches blurs wherever they are not aligned: luminance detail 0.4-0.5
of the ring on a 10 m field against 0.8 with centres). At the coarsest scale the region starts
from the original noised by ``novelty`` (or from pasted content in copy mode) and the field
settles in a few match-and-vote passes whose queries hold half of that start, so a coast or a
road keeps running where the window has patches that continue it; each finer scale carries the
field up (offsets scaled), votes the sharp patches of its own scale and refines the field once
(a second match-and-vote pass lets smooth patches creep in where two copied pieces meet). Beyond
the ROI the original is kept as the keep masks say.

Where the window's detail is fine stochastic texture (crowns, grass, snow: ``ops.fine_share`` at
least ``FINE_TEXTURE``), the field favours large pieces (``LARGE_PIECES``): a mosaic of small
pieces of such texture reads as mush at 2x, and a crown copied whole does not. Where the detail
is structure (fields, roads, water, a 10 m scene), pieces stay as the distances make them: a
large piece there is a farmstead or a field corner, and it shows as a stamp.

Where the ROI spans ``LARGE_ROI`` pixels or more (regenerate) and the window is structure, not fine
texture, the coarsest scale is too coarse for its layout (a patch spans several fields and its
nearest real patch averages them: pale blobs). There the region is laid out at the first scale
where it spans ``QUILT_SPAN`` pixels as a quilt of whole real blocks of that scale (``quilt.py``),
guided by the noised original or by another engine's coarse layout, and the fill starts there
with its queries held wholly to the quilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..model.pyramid import Pyramid, upsample
from .ops import PATCH, as_tensor, blur, fine_share, grow
from .match import Matcher, Pieces, carry, near, outside, similarity, vote
from .quilt import quilt

COARSE_ITERATIONS = 6   # match-and-vote passes at the coarsest scale, where the layout settles
ITERATIONS = 1          # passes at every finer scale: each further pass let smooth patches creep in where two
                        # copied pieces meet (a flat dark blob in a forest: luminance detail 0.56 with 3, 0.72 with 1)
ROUNDS = 4              # propagation and random-search rounds of a pass: what makes the field coherent
FINEST_ROUNDS = 1       # rounds at the finest scale, over the field carried from the scale below: there each try of
                        # a further round moved 0.01-0.4 % of the targets (to patches 0.002 apart on average) for
                        # 25-40 % of the fill's time on 300-450 px ROIs
ANCHOR = 0.5            # the coarsest scale's queries hold this much of the start: the layout the novelty allows
VOTE_SIGMA = 0.3        # a pixel's value comes from the patch centred on it: its own match, copied whole
START_SMOOTH = 1.5      # the coarsest start's noise is smooth over this many pixels: it moves layout, not grain
START_NOISE = 0.75      # the start's noise is this much of ``novelty`` times the spread: 0.3 at the fast preset's
                        # 0.4; a creek still runs through a 128 px ROI of a 10 m scene; at 0.6 it broke
FINE_TEXTURE = 0.092    # fine_share from which a window's field favours large pieces: 0.10-0.12 on 0.1-0.5 m
                        # forest, meadow and snow, 0.05-0.09 on roads and on a 10 m scene (docs/quality.md)
LARGE_PIECES = Pieces(coherence=0.5, reuse=0.5)   # preferred in a paired look on 12 of the 15 cases it changes
LARGE_ROI = 256         # ROIs spanning this many pixels or more are laid out as a quilt (regenerate mode, structure)
QUILT_SPAN = 72         # ... at the first scale where the region to fill spans this many pixels
QUILT_BLUR = 2.0        # the quilt's guide: the original blurred over this many pixels, noised as the start
QUILT_STREAM = 7        # the quilt draws from its own stream of the seed (seed + this)


@dataclass
class FillInputs:
    """One window's pyramid (``images`` and ``blurry`` per scale, coarsest first), the ROI
    (``exclude``, bool) and keep masks (float, 1 = the original) per scale, for copy mode the
    donor content and its weight per scale (None elsewhere), and the pieces its fields favour."""

    pyramid: Pyramid
    exclude: list[np.ndarray]
    keep: list[np.ndarray]
    donors: Optional[list[Optional[np.ndarray]]] = None
    donor_weights: Optional[list[Optional[np.ndarray]]] = None
    pieces: Pieces = Pieces()   # how every scale's field weighs its candidates (see ``pieces_for``)
    fine_share: Optional[float] = None   # what ``pieces_for`` chose by, where it chose
    quilt_scale: Optional[int] = None    # set by ``fill``: the scale its quilt was laid out at, if any


def pieces_for(image: np.ndarray, exclude: np.ndarray) -> tuple[Pieces, float]:
    """The pieces a window's fill favours, from the fine share of its finest scale ``image``
    outside ``exclude`` (what the fill copies from), and that share."""
    share = fine_share(image, ~exclude)
    return (LARGE_PIECES if share >= FINE_TEXTURE else Pieces()), share


def fill(inputs: FillInputs, *, novelty: float, seed: int,
         on_scale: Optional[Callable[[int, int], None]] = None,
         layout: Optional[tuple[int, np.ndarray]] = None) -> np.ndarray:
    """The filled window at the finest scale, (bands, rows, cols) float32 in [-1, 1].

    ``layout`` (scale, image) starts the fill at that scale from an image another engine made
    there (the SinDDM net's coarse scales, ``editors/sinddm.py``) instead of from the noised
    original at the coarsest: the layout settles on it as it would on that start, and every pixel
    is still a real patch's. In copy mode the donor is pasted onto it by its weight, as onto the
    noised original. Where the ROI is large and the window structure (``quilt_layout``), the fill
    starts instead from a quilt of real blocks at a finer scale, which ``layout`` (or the noised
    original) guides, and records that scale in ``inputs.quilt_scale``."""
    images, sizes = inputs.pyramid.images, inputs.pyramid.spec.sizes
    anchor = ANCHOR
    if inputs.donors is None:
        quilted = quilt_layout(inputs, novelty, seed, layout)
        if quilted is not None:
            layout, anchor = quilted, 1.0
            inputs.quilt_scale = quilted[0]
    generator = torch.Generator().manual_seed(int(seed))
    first = 0 if layout is None else layout[0]
    x = field = None
    for s, size in enumerate(sizes):
        if s < first:
            continue
        original = as_tensor(images[s])
        keep = as_tensor(inputs.keep[s])[None]
        source, allowed = _source(inputs, s)
        matcher = Matcher(source, allowed, PATCH, generator, inputs.pieces)
        targets = near(torch.from_numpy(inputs.keep[s] < 1), PATCH)
        if s == first:
            x = start = (_start(original, inputs, generator, novelty) if layout is None
                         else _compose(original, keep, _pasted(as_tensor(layout[1]), inputs, s)))
            field = matcher.random(targets)
        else:
            field = carry(field, sizes[s - 1], size, targets, matcher)
            x = _compose(original, keep, vote(source, field, size, PATCH, torch.ones(len(targets)), VOTE_SIGMA))
        rounds = FINEST_ROUNDS if first < s == len(sizes) - 1 else ROUNDS
        for _ in range(COARSE_ITERATIONS if s == first else ITERATIONS):
            query = anchor * start + (1 - anchor) * x if s == first else x
            field = matcher.improve(field, query, rounds)
            x = _compose(original, keep, vote(source, field, size, PATCH, similarity(field.costs), VOTE_SIGMA))
        if on_scale is not None:
            on_scale(s, len(sizes))
    return x.clamp(-1, 1).numpy()


def quilt_layout(inputs: FillInputs, novelty: float, seed: int,
                 layout: Optional[tuple[int, np.ndarray]] = None) -> Optional[tuple[int, np.ndarray]]:
    """A large ROI's layout (scale, image) as a quilt of real blocks, or None: the window is fine
    texture (its field favours large pieces, which copy it whole already: there the quilt's
    block seams lost a paired look, 8 of 20), no part of the ROI (not nodata, not the band)
    spans ``LARGE_ROI`` pixels, no scale finer than the coarsest (or than ``layout``'s) holds
    ``QUILT_SPAN`` of the region to fill, or too few blocks lie outside the ROI there. The guide
    is ``layout`` (another engine's coarse result) taken up to that scale where one is given,
    else the original there, blurred and noised as the fill's start is (smooth noise of
    ``START_NOISE * novelty`` times its spread)."""
    if inputs.pieces != Pieces() or _largest_span(inputs.keep[-1] == 0) < LARGE_ROI:
        return None
    below = 0 if layout is None else layout[0]
    scale = next((s for s, keep in enumerate(inputs.keep) if _largest_span(keep < 1) >= QUILT_SPAN), 0)
    if scale <= below:
        return None
    generator = torch.Generator().manual_seed(int(seed) + QUILT_STREAM)
    original = as_tensor(inputs.pyramid.images[scale])
    if layout is None:
        spread = original.std(dim=(1, 2), keepdim=True)
        noise = blur(torch.randn(original.shape, generator=generator), 3 * START_SMOOTH)
        noise = noise / noise.std(dim=(1, 2), keepdim=True).clamp(min=1e-6)
        guide = blur(original, QUILT_BLUR) + START_NOISE * novelty * spread * noise
    else:
        guide = blur(as_tensor(upsample(layout[1], inputs.pyramid.spec.sizes[scale])), QUILT_BLUR)
    quilted = quilt(original, inputs.keep[scale] < 1, inputs.exclude[scale], guide, generator)
    return None if quilted is None else (scale, quilted.numpy())


def _largest_span(mask: np.ndarray) -> int:
    """The longest bounding-box side of the connected parts of a (H, W) bool mask (0 where it is
    empty): two small ROIs in one window are not one large one."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    boxes = ndimage.find_objects(labels)
    return max((max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes), default=0)


def _compose(original: torch.Tensor, keep: torch.Tensor, made: torch.Tensor) -> torch.Tensor:
    made = torch.where(torch.isnan(made), original, made)
    return keep * original + (1 - keep) * made


def _start(original: torch.Tensor, inputs: FillInputs, generator: torch.Generator, novelty: float) -> torch.Tensor:
    """The coarsest scale's start: the original with noise of ``START_NOISE * novelty`` times
    its spread in the region to fill, and in copy mode the donor pasted by its weight."""
    keep = as_tensor(inputs.keep[0])[None]
    spread = original.std(dim=(1, 2), keepdim=True)
    noise = blur(torch.randn(original.shape, generator=generator), START_SMOOTH)
    noise = noise / noise.std(dim=(1, 2), keepdim=True).clamp(min=1e-6)
    x = _pasted(original + START_NOISE * novelty * spread * noise, inputs, 0)
    return keep * original + (1 - keep) * x


def _pasted(x: torch.Tensor, inputs: FillInputs, s: int) -> torch.Tensor:
    """``x`` with copy mode's donor pasted by its weight at scale ``s`` (as is elsewhere)."""
    if inputs.donors is None or inputs.donors[s] is None:
        return x
    weight = as_tensor(inputs.donor_weights[s])[None]
    return weight * as_tensor(inputs.donors[s]) + (1 - weight) * x


def _source(inputs: FillInputs, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``s``'s image to copy from and where a patch may be centred (wholly outside the
    ROI). In copy mode the donor, where it is pasted whole, joins the scene (no patch across its
    outline)."""
    image = as_tensor(inputs.pyramid.images[s])
    exclude = torch.from_numpy(inputs.exclude[s])
    if inputs.donors is not None and inputs.donors[s] is not None:
        whole = as_tensor(inputs.donor_weights[s]) >= 0.99
        image = torch.where(whole[None], as_tensor(inputs.donors[s]), image)
        exclude = (exclude & ~whole) | (grow(whole, PATCH // 2) & grow(~whole, PATCH // 2))
    return image, outside(exclude, PATCH)

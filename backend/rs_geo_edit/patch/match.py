"""Coherent patch matching: a nearest-neighbour field found by propagation and random search.

Every target pixel (a patch centre near the region to fill) points at a source centre whose patch
lies wholly outside the excluded region. A match good for one pixel is tried, shifted, by its
neighbours (propagation), so neighbouring pixels come to point at neighbouring source pixels:
whole pieces of real texture are copied together, their edges and lines intact, and the vote that
folds the patches back averages aligned patches, which stays sharp. Random samples at shrinking
radii around the current match find better ones. All of it runs on whole arrays: a step tries one
candidate for every target at once.

Patches are compared in a reduced space: the principal components of the source's patches, taken
by one convolution per image, so a candidate costs a few dozen numbers however large the patch.

A matcher may favour large pieces (``Pieces``): a candidate that continues the sources of its
four neighbours costs less (coherence), and one whose source already serves other targets costs
more (reuse), so pieces grow without the same piece being stamped twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ops import gather, grow

DIMS = 48            # principal components a patch is compared in: with 16, what tells a crown from grass
                     # or a field edge from a smear was left out; a blind paired look preferred 48 on 15 of 20
                     # cases (realism 3.85 against 3.1; docs/quality.md)
SAMPLES = 4000       # source patches the components are fitted on
CHUNK = 65536        # targets costed at once
JUMPS = (8, 4, 2, 1)  # propagation distances, pixels, of one round
VOTE_FLOOR = 1e-6    # a patch's pixels this far down its vote's fall-off are not cast: at the fill's 0.3 px only a 3 x 3
                     # core of the 7 x 7 patch is: the fill's votes on the 450 px creek took 0.25 s instead of 1.6 s, and
                     # under 0.04 % of the pixels of the bench's 29 regenerate cases changed (single pixels, none visible)


@dataclass(frozen=True)
class Pieces:
    """How a matcher weighs a candidate beyond its patch distance: its cost is scaled by
    ``1 - coherence * (share of its four neighbours it continues)`` and by
    ``1 + reuse * (other targets pointing at its source)``. Zero for both: distance alone."""

    coherence: float = 0.0
    reuse: float = 0.0


@dataclass
class Field:
    """Targets (flat indices of an H x W grid) and the source centre (flat index) each points at,
    with its cost."""

    targets: torch.Tensor
    sources: torch.Tensor
    costs: torch.Tensor

    def slots(self, cells: int) -> torch.Tensor:
        """For each of a grid's ``cells`` (flat index), its position in ``targets`` (-1: none)."""
        slot = torch.full((cells,), -1, dtype=torch.long)
        slot[self.targets] = torch.arange(len(self.targets))
        return slot

    def pointing(self, cells: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Where each of ``cells`` (flat indices) points: its source where it is a target
        (``index``, its position in ``targets`` as ``slots`` gives it), else itself."""
        return torch.where(index >= 0, self.sources[index.clamp(min=0)], cells)


class Matcher:
    """Matches patches of a (C, H, W) query image against those of ``source`` (same shape) centred
    where ``allowed`` (H, W bool) is True."""

    def __init__(self, source: torch.Tensor, allowed: torch.Tensor, patch: int, generator: torch.Generator,
                 pieces: Pieces = Pieces()):
        self.patch, self.shape, self.generator, self.pieces = patch, tuple(allowed.shape), generator, pieces
        self.allowed = allowed.flatten()
        self.pool = self.allowed.nonzero().flatten()
        if len(self.pool) == 0:
            raise ValueError("no patch of the window lies wholly outside the region to fill")
        self.kernels = _components(source, self.pool, patch, generator)
        self.features = self.describe(source)

    def describe(self, image: torch.Tensor) -> torch.Tensor:
        """(H * W, DIMS) features of every patch of ``image`` (reflected at the edges)."""
        r = self.patch // 2
        padded = F.pad(image[None].float(), (r, r, r, r), mode="reflect")
        return F.conv2d(padded, self.kernels)[0].flatten(1).T.contiguous()

    def random(self, targets: torch.Tensor) -> Field:
        pick = torch.randint(len(self.pool), (len(targets),), generator=self.generator)
        return Field(targets, self.pool[pick], torch.full((len(targets),), float("inf")))

    def cost(self, query: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Squared distances between the query's patch features ``query`` (as ``at`` gathers
        them, one row per entry of ``sources``) and the source's patches at ``sources`` (infinite
        where a source is not allowed)."""
        out = torch.empty(len(sources))
        for start in range(0, len(sources), CHUNK):
            part = slice(start, start + CHUNK)
            out[part] = ((query[part] - self.features[sources[part]]) ** 2).sum(dim=1)
        return torch.where(self.allowed[sources], out, torch.full_like(out, float("inf")))

    def at(self, query_image: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The features of ``query_image``'s patches at ``targets``: what ``cost`` compares."""
        return self.describe(query_image)[targets]

    def improve(self, field: Field, query_image: torch.Tensor, rounds: int) -> Field:
        """``field`` after ``rounds`` of propagation and random search against ``query_image``."""
        query = self.at(query_image, field.targets)   # the targets stay: their features are gathered once
        distances = field.costs = self.cost(query, field.sources)   # each target's to its source, unweighed
        slot = field.slots(self.shape[0] * self.shape[1])
        around = self._neighbours(field, slot) if self.pieces.coherence else None
        for _ in range(rounds):
            # a weighed cost depends on the field: each round weighs by the field at its start
            usage = ((torch.bincount(field.sources, minlength=len(self.allowed)).float(), field.sources)
                     if self.pieces.reuse else None)
            if around is not None or usage is not None:
                field.costs = self._weighed(field, distances, field.sources, around, usage)
            for jump in JUMPS:
                for dy, dx in ((0, jump), (jump, 0), (0, -jump), (-jump, 0)):
                    distances = self._try(field, query, distances, self._propagated(field, slot, dy, dx),
                                           around, usage)
            radius = max(self.shape)
            while radius >= 1:
                distances = self._try(field, query, distances, self._around(field.sources, radius), around, usage)
                radius //= 2
        return field

    def _neighbours(self, field: Field, slot: torch.Tensor) -> list:
        """For each of the four directions: the step to the neighbour there (flat), its column
        step, each target's neighbour (flat index), the neighbour's position in the field (-1
        where it is no target), and whether it lies in the image."""
        h, w = self.shape
        rows, cols = field.targets // w, field.targets % w
        out = []
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            n_rows, n_cols = rows + dy, cols + dx
            inside = (n_rows >= 0) & (n_rows < h) & (n_cols >= 0) & (n_cols < w)
            neighbour = n_rows.clamp(0, h - 1) * w + n_cols.clamp(0, w - 1)
            out.append((dy * w + dx, dx, neighbour, slot[neighbour], inside))
        return out

    def _weighed(self, field: Field, distances: torch.Tensor, candidates: torch.Tensor, around,
                 usage) -> torch.Tensor:
        """The candidates' costs for the field's targets: their ``distances``, weighed as
        ``self.pieces`` says."""
        costs = distances
        if around is not None:
            costs = costs * (1 - self.pieces.coherence / 4 * self._continued(field, around, candidates))
        if usage is not None:   # (targets per source, each target's source) at the round's start
            counts, held = usage
            others = counts[candidates] - (candidates == held).float()
            costs = costs * (1 + self.pieces.reuse * others)
        return costs

    def _continued(self, field: Field, around: list, candidates: torch.Tensor) -> torch.Tensor:
        """How many of each target's four neighbours (0-4) point where the candidate continues:
        the candidate shifted by the neighbour's offset (a neighbour that is no target points at
        itself). A shift off the top or bottom matches no source; one off a side is ruled out by
        the candidate's column."""
        w = self.shape[1]
        cols = candidates % w
        count = torch.zeros(len(candidates))
        for step, dx, neighbour, index, inside in around:
            fits = inside & (field.pointing(neighbour, index) == candidates + step)
            if dx:
                fits &= (cols < w - 1) if dx > 0 else (cols > 0)
            count += fits.float()
        return count

    def _try(self, field: Field, query: torch.Tensor, distances: torch.Tensor, candidates: torch.Tensor,
             around, usage) -> torch.Tensor:
        """Moves each target to its candidate where that costs less. ``distances`` are the
        targets' unweighed distances to their sources as they stand; returns them after the move.
        A candidate that is the target's source already (much of what propagation proposes inside
        a copied piece) keeps its distance instead of being measured again."""
        moved = (candidates != field.sources).nonzero().flatten()
        tried = distances.clone()
        tried[moved] = self.cost(query[moved], candidates[moved])
        costs = tried
        if around is not None or usage is not None:
            costs = self._weighed(field, tried, candidates, around, usage)
        better = costs < field.costs
        field.sources = torch.where(better, candidates, field.sources)
        field.costs = torch.where(better, costs, field.costs)
        return torch.where(better, tried, distances)

    def _propagated(self, field: Field, slot: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """Each target's candidate from its neighbour at (dy, dx): that neighbour's source moved
        back by (dy, dx). A neighbour that is no target stands for itself (its own pixel), so the
        scene around the region proposes continuing itself."""
        h, w = self.shape
        rows, cols = field.targets // w, field.targets % w
        n_rows, n_cols = (rows + dy).clamp(0, h - 1), (cols + dx).clamp(0, w - 1)
        neighbour = n_rows * w + n_cols
        source = field.pointing(neighbour, slot[neighbour])
        s_rows = (source // w - (n_rows - rows)).clamp(0, h - 1)
        s_cols = (source % w - (n_cols - cols)).clamp(0, w - 1)
        return s_rows * w + s_cols

    def _around(self, sources: torch.Tensor, radius: int) -> torch.Tensor:
        h, w = self.shape
        step = torch.randint(-radius, radius + 1, (2, len(sources)), generator=self.generator)
        rows = (sources // w + step[0]).clamp(0, h - 1)
        cols = (sources % w + step[1]).clamp(0, w - 1)
        return rows * w + cols


def near(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """Flat indices of the centres whose patch overlaps ``mask`` (H, W bool): the targets of a
    field that remakes ``mask``."""
    return grow(mask, patch // 2).flatten().nonzero().flatten()


def outside(exclude: torch.Tensor, patch: int) -> torch.Tensor:
    """(H, W) bool: where a patch may be centred without touching ``exclude``."""
    return ~grow(exclude, patch // 2)


def carry(field: Field, below: tuple[int, int], size: tuple[int, int], targets: torch.Tensor,
           matcher: Matcher) -> Field:
    """The field of the scale below carried to ``size``: each target points where the pixel under
    it pointed, its offset scaled; a target over no match of the scale below keeps its own place,
    and one whose source is not allowed gets a random one."""
    (h0, w0), (h, w) = below, size
    rows, cols = targets // w, targets % w
    c_rows = ((rows + 0.5) * h0 / h - 0.5).round().long().clamp(0, h0 - 1)
    c_cols = ((cols + 0.5) * w0 / w - 0.5).round().long().clamp(0, w0 - 1)
    coarse = c_rows * w0 + c_cols
    source = field.pointing(coarse, field.slots(h0 * w0)[coarse])
    s_rows = (rows + ((source // w0 - c_rows) * h / h0).round().long()).clamp(0, h - 1)
    s_cols = (cols + ((source % w0 - c_cols) * w / w0).round().long()).clamp(0, w - 1)
    sources = s_rows * w + s_cols
    spare = matcher.random(targets).sources
    sources = torch.where(matcher.allowed[sources], sources, spare)
    return Field(targets, sources, torch.zeros(len(targets)))


def _components(source: torch.Tensor, pool: torch.Tensor, patch: int, generator: torch.Generator) -> torch.Tensor:
    """(DIMS, C, patch, patch) convolution kernels projecting a patch on the principal components
    of the source's allowed patches (centred: a patch's mean is part of what is compared)."""
    sample = pool[torch.randperm(len(pool), generator=generator)[:SAMPLES]]
    flat = gather(source.float(), sample, patch).contiguous()   # row-major, as the reductions below expect
    _, _, vt = torch.linalg.svd(flat - flat.mean(dim=0), full_matrices=False)
    basis = vt[:min(DIMS, vt.shape[0])]
    return basis.reshape(-1, source.shape[0], patch, patch).contiguous()


def vote(source: torch.Tensor, field: Field, shape: tuple[int, int], patch: int,
         weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """The (C, H, W) image every target's source patch votes for: a pixel is the weighted mean
    of the source pixels that the patches covering it put there, each patch's vote falling off
    from its centre with a Gaussian of ``sigma`` pixels and not cast where the fall-off is under
    ``VOTE_FLOOR`` (NaN where no patch covers it)."""
    c = source.shape[0]
    h, w = shape
    r = patch // 2
    padded = F.pad(source[None].float(), (r, r, r, r), mode="reflect")[0].reshape(c, -1)
    wp = w + 2 * r
    total = torch.zeros(c, (h + 2 * r) * wp)
    weight = torch.zeros((h + 2 * r) * wp)
    t_rows, t_cols = field.targets // w, field.targets % w
    s_rows, s_cols = field.sources // w, field.sources % w
    for dy in range(patch):
        for dx in range(patch):
            falloff = math.exp(-((dy - r) ** 2 + (dx - r) ** 2) / (2 * sigma ** 2))
            if falloff < VOTE_FLOOR:
                continue
            cell = (t_rows + dy) * wp + t_cols + dx
            values = padded[:, (s_rows + dy) * wp + s_cols + dx]
            share = weights * falloff
            total.index_add_(1, cell, values * share)
            weight.index_add_(0, cell, share)
    out = total / weight
    return out.view(c, h + 2 * r, wp)[:, r:r + h, r:r + w]


def similarity(costs: torch.Tensor) -> torch.Tensor:
    """Vote weights from match costs: a close match outweighs a poor one, on the scale of the
    typical cost (its 75th percentile), so a few misfits do not smear what the rest agree on."""
    finite = costs[torch.isfinite(costs)]
    if len(finite) == 0:
        return torch.ones_like(costs)
    scale = torch.quantile(finite[:100_000], 0.75).clamp(min=1e-6)
    return torch.exp(-costs.clamp(max=float(scale) * 50) / (2 * scale))

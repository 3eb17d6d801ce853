"""The SinDDM engine: train (or load from the cache) a model on the window, then sample inside
the ROIs with the original kept outside them. This module maps each mode to the sampler's hooks;
``model/`` trains and samples and knows nothing of modes, options or CLIP.

Modes:
- ``regenerate``: new content inside the ROIs in the window's own style. At every step and
  scale the original, re-noised with one fixed noise, replaces the sample beyond the blend band
  and is mixed in across the band with a rising weight; inside the ROI the chain runs free from
  the coarsest scale, which starts from the original noised to ``novelty``.
- ``copy``: the content of a source region is pasted onto the predicted clean image inside the
  target ROIs at every scale but the finest (weight ``copy_weight``); the finest scale then
  harmonises it with its surroundings.
- ``text``: ``regenerate`` steered by CLIP towards each ROI's prompt (guidance/roi.py); with a
  copy source as well, the pasted content guides the coarse scales and CLIP the rest.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..blend import outside_distance, restore_grain
from ..config import EditConfig
from ..errors import IncompatibleOptions
from ..imaging import crop_around, one_malloc_arena, resize, return_freed_memory, smooth_chroma
from ..model.cache import ModelCache, scene_key
from ..model.pyramid import Pyramid, build_pyramid, mask_pyramid
from ..progress import StageReporter
from ..pipeline.contract import EditedBox
from . import resolve_device


class CopyHook:
    """Content copy: pasted content replaces up to ``weight`` of the predicted clean image inside
    the target ROIs at every scale but the finest, which then harmonises it. The paste starts a
    little inside the ROI and fades in (see :func:`copy_ramp`), so the ROI's edge is generated in
    agreement with the surroundings rather than cut along the ROI's outline. With ``hold`` the
    original (the window's own image at that scale) replaces up to that much of the prediction
    where the paste is not whole, in proportion to what it lacks (all of it on the inset the
    paste leaves free, less and less over its ramp), on the coarser half of the scales, where the
    layout is decided: the model neither carries the pasted material out to the outline nor ends
    it along a hard line where the hold would stop (docs/quality.md: seam ratios 1.58 -> 0.92 and
    1.11 -> 0.98 where the donor's material lay along a whole side). Held at every scale, the
    donor faded in small ROIs; held on the inset alone, its material ended along a straight line
    a band inside the outline."""

    reads_finest = False   # the sampler may run the finest scale on the box of changed pixels
    HOLD_SCALES = 0.5      # the hold acts on the coarsest half of the scales (docs/quality.md)

    def __init__(self, contents: list, masks: list, weight: float, originals: list | None = None,
                 holds: list | None = None, hold: float = 0.0, ramp: np.ndarray | None = None):
        self.contents, self.masks, self.weight = contents, masks, weight
        n = len(contents)
        self.originals, self.holds, self.hold = originals or [None] * n, holds or [None] * n, hold
        self.finest = n - 1
        self.ramp = ramp   # the paste's weight at the window's size, for restore_grain

    @classmethod
    def build(cls, request, sizes, weight: float, band_px: float, device, hold: float = 0.0,
              wiggle: float = 0.0) -> "CopyHook":
        """From the request's copy content (present whenever the pipeline asks for copy);
        ``band_px`` is the transition band, which sets the paste's inset and ramp, ``hold`` and
        ``wiggle`` as above and in :func:`copy_ramp`."""
        target = request.copy_mask & request.roi
        ramp = copy_ramp(target, band_px, 2 * band_px, wiggle, int(request.seed))
        n = len(sizes)
        contents, masks = [None] * n, [None] * n
        for s, size in enumerate(sizes[:-1]):   # the finest scale is left to the model
            contents[s] = _tensor(resize(request.copy_source, size, "lanczos"), device)
            masks[s] = _tensor(np.clip(resize(ramp, size, "area"), 0.0, 1.0)[None], device)
        originals, holds = _held(request.image, np.where(target, 1.0 - ramp, 0.0), sizes,
                                 cls.HOLD_SCALES * (n - 1) if hold > 0 else 0, device)
        return cls(contents, masks, weight, originals, holds, hold, ramp)

    def __call__(self, x0, scale: int, t: int):
        if scale == self.finest:
            return x0
        out = x0
        if self.contents[scale] is not None:
            m = self.masks[scale] * self.weight
            out = m * self.contents[scale] + (1 - m) * x0
        if self.holds[scale] is not None:
            h = self.holds[scale] * self.hold
            out = h * self.originals[scale] + (1 - h) * out
        return out


def _tensor(array: np.ndarray, device):
    """(C, H, W) float32 array -> (1, C, H, W) tensor on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, np.float32))[None].to(device)


def _held(image: np.ndarray, lacking: np.ndarray, sizes, below: float, device) -> tuple[list, list]:
    """The original and the hold's weight map (``lacking``, window-sized) at every scale below
    ``below``; None at the others."""
    originals, holds = [None] * len(sizes), [None] * len(sizes)
    for s, size in enumerate(sizes):
        if s < below:
            originals[s] = _tensor(np.clip(resize(image, size, "lanczos"), -1, 1), device)
            holds[s] = _tensor(np.clip(resize(lacking.astype(np.float32), size, "area"), 0.0, 1.0)[None], device)
    return originals, holds


def copy_ramp(target: np.ndarray, inset_px: float, ramp_px: float, wiggle: float = 0.0, seed: int = 0) -> np.ndarray:
    """The paste's weight in [0, 1]: 0 outside ``target`` and within ``inset_px`` of its edge,
    then rising linearly with the distance inside over ``ramp_px`` pixels, 1 beyond. The inset
    is at most a quarter of the target's depth and the ramp at most half, so a small ROI keeps a
    core of pasted content.

    Measured with the realism bench (docs/quality.md): a paste reaching the ROI's edge, even at
    a low weight, leaves the outline as a straight material edge (seam ratios of 2-5; a ramp
    from the edge alone, 1.2-5). With a band-wide inset the model generates the ROI's rim as a
    continuation of the surroundings, as in ``regenerate``, and the pasted material begins
    further in, along an outline the model draws (seam 0.94-1.09 in seven of the bench's nine
    cases).

    With ``wiggle`` the paste starts further in by up to that fraction of the depth its whole
    core reaches beyond the inset and ramp (2 px in a 64 px square, 5 px in 128, 31 px in
    300), varying smoothly along the outline (:func:`wander`, drawn from ``seed``): a square donor
    pasted into a square ROI otherwise ends along a straight line parallel to each side, which
    shows at 1x on ROIs of 300 px and more where the donor's material differs from the
    surroundings (forest pasted against snow)."""
    from scipy.ndimage import distance_transform_edt

    if not target.any():
        return np.zeros(target.shape, np.float32)
    inside = distance_transform_edt(target)
    depth = float(inside.max())
    inset = min(float(inset_px), depth / 4)
    ramp = max(1.0, min(float(ramp_px), depth / 2))
    core = depth - inset - ramp   # how deep the whole paste reaches: the wiggle takes from it
    if wiggle > 0 and core >= 1:
        inside = inside - wiggle * core * wander(target.shape, depth / 4, seed)
    return np.clip((inside - inset) / ramp, 0.0, 1.0).astype(np.float32)


def wander(shape: tuple[int, int], scale: float, seed: int) -> np.ndarray:
    """A smooth random field in [0, 1] (about 0.5 on average) whose features are ``scale`` px
    across, drawn on a grid of that spacing and upsampled, so a large window costs no more than
    its own float32 copy."""
    from scipy.ndimage import gaussian_filter

    step = max(1.0, float(scale) / 2)
    grid = (int(math.ceil(shape[0] / step)) + 3, int(math.ceil(shape[1] / step)) + 3)
    coarse = gaussian_filter(np.random.default_rng(seed).standard_normal(grid), 1.0, mode="wrap")
    coarse = np.clip(0.5 + coarse / (4 * max(float(coarse.std()), 1e-12)), 0.0, 1.0).astype(np.float32)
    fine = resize(coarse, (int(round(grid[0] * step)), int(round(grid[1] * step))), "bicubic")
    return np.clip(fine[:shape[0], :shape[1]], 0.0, 1.0)


def chain(*hooks):
    """One hook applying several in order (content copy, then CLIP guidance)."""
    active = [h for h in hooks if h is not None]
    if not active:
        return None

    def hook(x0, scale, t):
        for h in active:
            x0 = h(x0, scale, t)
        return x0

    hook.reads_finest = any(getattr(h, "reads_finest", True) for h in active)
    return hook


def _keep_pyramid(roi: np.ndarray, band_px: float, sizes, rim_hold: float = 0.0) -> tuple[list[np.ndarray], np.ndarray]:
    """The sampler's keep masks (see ``diffusion.Constraint``): per scale, 0 inside the ROI,
    rising linearly to 1 across ``band_px`` pixels (of the window) outside it, area-resized to
    the scale; and the last step's mask, True only beyond the band. With ``rim_hold``, every
    scale but the finest also keeps that much of the original on the ROI's rim: all of it within
    ``band_px`` of the outline, fading to nothing over two more bands (docs/quality.md, "Large
    ROIs")."""
    dist = outside_distance(roi, max(band_px, 1.0))   # read only up to the band
    final = dist > band_px
    if band_px > 0:   # in place: at native resolution each float64 temporary is a window's worth
        keep = np.clip(np.divide(dist, band_px, out=dist), 0.0, 1.0, out=dist).astype(np.float32)
    else:
        keep = (~roi).astype(np.float32)
    del dist
    coarse = keep
    if rim_hold > 0 and band_px > 0 and roi.any():
        rows, cols = crop_around(roi, 1)   # on the ROI's box: its depth, up to three bands
        box = roi[rows, cols]
        rim = outside_distance(~box, 3 * band_px)
        np.clip(np.subtract(3 * band_px, rim, out=rim) / (2 * band_px), 0.0, 1.0, out=rim)
        rim[~box] = 0.0
        coarse = keep.copy()
        np.maximum(coarse[rows, cols], (rim_hold * rim).astype(np.float32), out=coarse[rows, cols])
        del rim, box
    last = len(sizes) - 1
    per_scale = []
    for s, size in enumerate(sizes):
        mask = keep if s == last else coarse
        per_scale.append(mask if tuple(size) == mask.shape else np.clip(resize(mask, size, "area"), 0.0, 1.0))
    return per_scale, final


# A scene model trains this many times a window model's steps, whatever its window count.
SCENE_STEP_FACTOR = 2


@dataclasses.dataclass
class SharedModel:
    """A scene model: one net for several windows; ``offsets`` maps a window index to what its
    scale indices add on the net's common ladder (``trainer.scale_offsets``)."""

    net: object
    key: str
    offsets: dict[int, int]


class SinDDMEditor:
    """The ``sinddm`` engine (the ``pipeline.Editor`` protocol).

    With ``model.scope`` ``scene`` the pipeline calls :meth:`prepare` with every window of the
    scene before editing any: one model is trained (or loaded) on all of them and serves each.
    Otherwise, and for a scene of one window, each window trains (or loads) its own model.
    ``models`` records which model served which windows (the provenance's ``editor.models``).
    """

    name = "sinddm"

    def __init__(self, config: EditConfig):
        one_malloc_arena()   # before the compute threads start: a large window's freed memory is reused
        self.config = config
        self.device = resolve_device(config.device)
        self.clip = None
        self.last_guidance = None
        if config.mode == "text":
            from ..guidance.clip import load_clip

            g = config.guidance
            self.clip = load_clip(g.clip, self.device, Path(g.weights_dir) if g.weights_dir else None)
        self.cache = ModelCache(config.cache_dir, int(config.cache_max_gb * 1e9))
        self.windows: list[dict] = []
        self.models: list[dict] = []
        self.shared: Optional[SharedModel] = None

    @property
    def shares_model(self) -> bool:
        """Whether the pipeline should call :meth:`prepare` with all the scene's windows first."""
        return self.config.model.scope == "scene"

    def describe(self) -> dict:
        out = {"name": self.name, "mode": self.config.mode, "preset": self.config.preset,
               "device": str(self.device), "model": dataclasses.asdict(self.config.model), "models": self.models,
               "windows": self.windows}
        if self.clip is not None:
            out["clip"] = self.clip.describe()
            out["guidance"] = dataclasses.asdict(self.config.guidance)
        return out

    # ------------------------------------------------------------------------------- training

    def _pyramid(self, image: np.ndarray, valid: np.ndarray):
        from ..model.diffusion import Schedule

        cfg = self.config.model
        pyramid = build_pyramid(image, valid, cfg.scale_factor)
        return pyramid, Schedule.build(cfg.timesteps, pyramid.recon_error, cfg.detail_factor)

    def _threads(self) -> None:
        import torch

        if self.config.threads:
            torch.set_num_threads(self.config.threads)

    def prepare(self, windows: list[tuple[int, np.ndarray, np.ndarray]], progress: StageReporter) -> None:
        """Scene scope: train (or load) one model on all ``windows`` ((index, image, valid) at the
        working resolution, as their requests will carry them) before any is edited. A no-op
        in window scope or for fewer than two windows."""
        from ..model.trainer import load_or_train, scale_offsets

        self.shared = None
        if not self.shares_model or len(windows) < 2:
            return
        self._threads()
        params = dataclasses.asdict(self.config.model)
        # Measured on four 128 px ROIs: a scene model given one window's steps trailed the
        # per-window models (luminance 1.18-1.41, seam 1.16-1.50 against 1.08-1.12 and 1.08-1.25);
        # with twice the steps it came close on two windows of three (docs/quality.md).
        params["steps"] = params["steps"] * SCENE_STEP_FACTOR
        key = scene_key([image for _, image, _ in windows], [valid for _, _, valid in windows], params)
        pyramids, schedules = zip(*(self._pyramid(image, valid) for _, image, valid in windows))
        net, trained = load_or_train(self.cache, key, list(pyramids), list(schedules), params, device=self.device,
                                     progress=progress)
        indices = [index for index, _, _ in windows]
        self.shared = SharedModel(net, key, dict(zip(indices, scale_offsets(pyramids))))
        self.models.append({"cache_key": key, "scope": "scene", "windows": indices, "steps": params["steps"],
                            **trained})

    def use_scene_model(self, key: str, offsets: dict[int, int]) -> None:
        """Serve the windows of ``offsets`` (window index -> scale offset) with the scene model that
        :meth:`prepare` left in the cache under ``key``, as a task editing one window of a scene
        does: it never reads the other windows. Loading only: a missing model is an error, since
        training it here would need every window."""
        from ..model.trainer import cached_net

        net = cached_net(self.cache, key, self.config.model.width, self.device)
        if net is None:
            raise IncompatibleOptions(f"the scene model {key} is not in the model cache {str(self.cache.folder)!r}: "
                                      "windows edited as separate tasks load it from there, so give `cache_dir` a "
                                      "folder every worker sees")
        self.shared = SharedModel(net, key, dict(offsets))

    def trained_model(self, image: np.ndarray, valid: np.ndarray, progress: StageReporter, index: int = 0):
        """(EMA net, pyramid, schedule, stats, scale offset): the scene model when it serves
        window ``index``; else the window's own, from the cache or trained (resuming a checkpoint)."""
        from ..model.trainer import load_or_train

        pyramid, schedule = self._pyramid(image, valid)
        stats = {"scales": [list(s) for s in pyramid.spec.sizes],
                 "recon_error": [round(e, 5) for e in pyramid.recon_error], "t_start": schedule.t_start}
        # The blurry inputs and the validity masks serve training only; at native resolution the
        # blurry inputs are two window copies, the masks half a window's worth of bytes.
        sampling = dataclasses.replace(pyramid, blurry=[], valid=[])
        if self.shared is not None and index in self.shared.offsets:
            progress(1, 1, "scene model")
            offset = self.shared.offsets[index]
            return self.shared.net, sampling, schedule, {"cache_key": self.shared.key, "model_scope": "scene",
                                                         "scale_offset": offset, **stats}, offset
        params = dataclasses.asdict(self.config.model)
        key = scene_key([image], [valid], params)
        net, trained = load_or_train(self.cache, key, pyramid, schedule, params, device=self.device,
                                     progress=progress)
        self.models.append({"cache_key": key, "scope": "window", "windows": [index], "steps": params["steps"],
                            **trained})
        return net, sampling, schedule, {"cache_key": key, "model_scope": "window", **stats, **trained}, 0

    # ------------------------------------------------------------------------------- editing

    def edit(self, request, progress: StageReporter) -> "np.ndarray | EditedBox":
        self._threads()
        net, pyramid, schedule, stats, offset = self.trained_model(request.image, request.valid,
                                                                   progress.sub("train", 0.0, 0.85),
                                                                   request.window.index)
        started = time.perf_counter()
        return_freed_memory()   # training's pyramid and temporaries
        cfg = self.config.model
        large = self._large_scales(request, pyramid.spec.sizes)
        schedule = schedule.started_at(cfg.start_mid, cfg.start_fine, large, cfg.start_large)
        stats["t_start_sampled"] = schedule.t_start
        result = self.sample(net, pyramid, schedule, request, progress.sub("sample", 0.85, 1.0), stats, offset)
        stats["sample_s"] = round(time.perf_counter() - started, 2)
        stats["window"] = request.window.index
        self.windows.append(stats)
        return result

    def sample(self, net, pyramid: Pyramid, schedule, request, progress: StageReporter, stats: dict,
               scale_offset: int = 0) -> "np.ndarray | EditedBox":
        import torch

        from ..model.diffusion import Constraint, sample

        cfg = self.config.model
        sizes = list(pyramid.spec.sizes)
        rim_hold = cfg.rim_hold if any(self._large_scales(request, sizes)) else 0.0
        keep, final = _keep_pyramid(request.roi, self._band_px(request), sizes, rim_hold)
        if rim_hold > 0:
            stats["rim_hold"] = rim_hold
        # the sampler frees each scale's original and mask once it is done with it: the pyramid
        # and the lists made here hand over their references (the finest is the request's image)
        constraint = Constraint(keep=[torch.from_numpy(k)[None, None] for k in keep],
                                originals=[torch.from_numpy(img)[None] for img in pyramid.images],
                                final=torch.from_numpy(final)[None, None], release=True)
        del keep
        pyramid.images = []
        copy_hook = guide = None
        if self._pastes(request):
            copy_hook = CopyHook.build(request, sizes, cfg.copy_weight, self._band_px(request), self.device,
                                       cfg.copy_hold, cfg.copy_wiggle)
        if self.config.mode == "text":
            guide = self._guidance(request, sizes, schedule)
        generator = torch.Generator().manual_seed(int(request.seed))

        def on_step(scale: int, done: int, total: int) -> None:
            progress(done, total, f"sampling scale {scale + 1}/{len(sizes)}")

        # a large window's finest scale is sampled on the box of the pixels it changes, and only
        # that box comes back (the rest is the request's image)
        out, (top, bottom, left, right) = sample(
            net, schedule, sizes, request.image.shape[0], device=self.device, generator=generator,
            stride=cfg.sample_stride, constraint=constraint, novelty=cfg.novelty, x0_hook=chain(copy_hook, guide),
            tile=cfg.tile, scale_offset=scale_offset, return_box=True, on_step=on_step)
        if guide is not None:
            stats["guidance"] = {"steps": guide.stats.steps, "first_score": guide.stats.scores[0] if guide.stats.scores
                                 else None, "last_score": guide.stats.scores[-1] if guide.stats.scores else None}
        self.last_guidance = guide
        result = out[0].float().cpu().numpy()
        del out
        if copy_hook is not None and copy_hook.ramp is not None and cfg.copy_grain > 1:
            box = (slice(None), slice(top, bottom), slice(left, right))
            donor = np.where(request.copy_mask[box[1:]], request.copy_source[box], result)
            result, stats["copy_grain"] = restore_grain(result, donor, copy_hook.ramp[box[1:]], cfg.copy_grain)
        if cfg.chroma_radius > 0:
            # on the box of generated pixels grown by the filter's reach (two box filters), not
            # the whole window: its float64 copies were a large ROI's peak memory
            rows, cols = crop_around(~final, 2 * cfg.chroma_radius + 1)
            if not (top <= rows.start and rows.stop <= bottom and left <= cols.start and cols.stop <= right):
                result = EditedBox(result, slice(top, bottom), slice(left, right)).whole(request.image)
                top, bottom, left, right = 0, final.shape[0], 0, final.shape[1]
            crop = result[:, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
            np.copyto(crop, smooth_chroma(crop, cfg.chroma_radius), where=~final[None, rows, cols])
        if (top, bottom, left, right) == (0, final.shape[0], 0, final.shape[1]):
            return result
        return EditedBox(result, slice(top, bottom), slice(left, right))

    def _pastes(self, request) -> bool:
        """Whether the request pastes content (copy mode, or text mode given a copy source)."""
        return self.config.mode == "copy" or (self.config.mode == "text" and request.copy_source is not None)

    def _large_scales(self, request, sizes) -> list[bool]:
        """The window's large middle scales (:func:`~..model.diffusion.large_scales`), which
        start later and, with ``rim_hold``, come with the original held on the ROI's rim; none
        when content is pasted: the donor brings the layout there, and its own hold covers the
        coarser half of the scales only (a later start there raised mixed-450's seam to 1.14)."""
        from ..model.diffusion import large_scales

        return [False] * len(sizes) if self._pastes(request) else large_scales(sizes, self.config.model.large_px)

    def _band_px(self, request) -> float:
        """The transition band in window pixels at the working resolution (the blend band,
        shrunk with a window that is edited at reduced resolution)."""
        shrink = request.window.shape[0] / request.image.shape[1]
        return self.config.blend.band_px / shrink

    def _guidance(self, request, sizes, schedule):
        from ..guidance.prompts import ensemble_embedding, llm_phrasings, load_synonyms, template_phrasings
        from ..guidance.roi import ClipGuidance

        g = self.config.guidance
        synonyms = load_synonyms(g.synonyms)
        masks, embeddings = [], []
        for k, prompt in enumerate(request.prompts, start=1):
            if not prompt:
                raise IncompatibleOptions(f"text mode: ROI {k} of window {request.window.index} has no prompt; pass "
                                          "`prompt` or give the feature a prompt attribute")
            if not g.ensemble:
                phrasings = [prompt]
            elif g.llm_endpoint:
                phrasings = [prompt] + llm_phrasings(prompt, g.llm_endpoint, self.config.cache_dir, model=g.llm_model)
            else:
                phrasings = template_phrasings(prompt, synonyms)
            embeddings.append(ensemble_embedding(self.clip, phrasings))
            masks.append(mask_pyramid(request.labels == k, sizes))
        return ClipGuidance(self.clip, masks, embeddings, request.rgb, t_start_finest=schedule.t_start[-1],
                            strength=g.strength, views=g.views, every=g.every, momentum=g.momentum,
                            stop_frac=g.stop_frac, seed=request.seed)

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
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import EditConfig
from ..errors import IncompatibleOptions
from ..imaging import crop_around, one_malloc_arena, return_freed_memory, smooth_chroma
from ..model.cache import ModelCache, scene_key
from ..model.pyramid import Pyramid, build_pyramid, mask_pyramid, pyramid_spec
from ..patch.stage import patch_stage
from ..progress import StageReporter
from ..pipeline.contract import EditedBox
from . import resolve_device
from .copy import CopyPaste, restore_grain
from .keep import band_px, keep_pyramid


# A scene model trains this many times a window model's steps, whatever its window count.
SCENE_STEP_FACTOR = 2
# Windows of more pixels have the net draw every scale whatever ``net_scales`` says: the patch
# fill holds 16 numbers per pixel of the window and its field, where the tiled sampler's memory
# follows the tile. Measured: a 1280 x 1280 window peaked at 1.63 GB, a 2560 x 2560 one at
# 3.19 GB (against 1.30 and 1.52 GB with the net at every scale; docs/scaling.md).
PATCH_MAX_PIXELS = 3_000_000


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
        from ..model.schedule import Schedule

        cfg = self.config.model
        pyramid = build_pyramid(image, valid)
        return pyramid, Schedule.build(cfg.timesteps, pyramid.recon_error, cfg.detail_factor)

    def copies_scene(self, request) -> bool:
        """Whether the window's finer scales are drawn of the scene's patches (``net_scales``)."""
        spec = pyramid_spec(*request.image.shape[1:])
        return self._net_scales(spec) < spec.n_scales

    def _net_scales(self, spec) -> int:
        """How many of the coarsest scales of a window of pyramid ``spec`` the net draws: all
        unless ``net_scales`` says fewer and the window is at most :data:`PATCH_MAX_PIXELS`."""
        k = self.config.model.net_scales
        rows, cols = spec.sizes[-1]
        return k if 0 < k < spec.n_scales and rows * cols <= PATCH_MAX_PIXELS else spec.n_scales

    def _trained_scales(self, specs) -> int:
        """``net_scales`` where the net of these windows (one, or a scene model's) is trained on
        that many coarsest scales only: where every window draws its finer scales of patches;
        else 0, a net trained on every scale (it serves a window drawn either way)."""
        k = self.config.model.net_scales
        return k if all(self._net_scales(spec) == k for spec in specs) else 0

    def _net_part(self, pyramid: Pyramid, k: int) -> Pyramid:
        """The scales the net trains on: the coarsest ``k`` (0: all; the spec stays whole, so a
        scene model's scale offsets are those of the whole pyramids)."""
        if k <= 0:
            return pyramid
        return dataclasses.replace(pyramid, images=pyramid.images[:k], blurry=pyramid.blurry[:k],
                                   valid=pyramid.valid[:k], recon_error=pyramid.recon_error[:k])

    def _train_params(self, trained_scales: int) -> dict:
        """The model settings and the training constants (the model cache's key reads both), with
        the scales the net is trained on (:meth:`_trained_scales`)."""
        from ..model.trainer import fixed_params

        return {**dataclasses.asdict(self.config.model), **fixed_params(), "net_scales": trained_scales}

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
        pyramids, schedules = zip(*(self._pyramid(image, valid) for _, image, valid in windows))
        trained_scales = self._trained_scales([p.spec for p in pyramids])
        params = self._train_params(trained_scales)
        # Measured on four 128 px ROIs: a scene model given one window's steps trailed the
        # per-window models (luminance 1.18-1.41, seam 1.16-1.50 against 1.08-1.12 and 1.08-1.25);
        # with twice the steps it came close on two windows of three (docs/scaling.md).
        params["steps"] = params["steps"] * SCENE_STEP_FACTOR
        key = scene_key([image for _, image, _ in windows], [valid for _, _, valid in windows], params)
        net, trained = load_or_train(self.cache, key, [self._net_part(p, trained_scales) for p in pyramids],
                                     list(schedules), params, device=self.device, progress=progress)
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
        trained_scales = self._trained_scales([pyramid.spec])
        params = self._train_params(trained_scales)
        key = scene_key([image], [valid], params)
        net, trained = load_or_train(self.cache, key, self._net_part(pyramid, trained_scales), schedule, params,
                                     device=self.device, progress=progress)
        self.models.append({"cache_key": key, "scope": "window", "windows": [index], "steps": params["steps"],
                            **trained})
        return net, sampling, schedule, {"cache_key": key, "model_scope": "window", **stats, **trained}, 0

    # ------------------------------------------------------------------------------- editing

    def edit(self, request, progress: StageReporter) -> "np.ndarray | EditedBox":
        self._threads()
        # the prompts are read before training: a prompt CLIP cannot read stops the edit at once
        targets = self._text_targets(request) if self.config.mode == "text" else None
        net, pyramid, schedule, stats, offset = self.trained_model(request.image, request.valid,
                                                                   progress.sub("train", 0.0, 0.85),
                                                                   request.window.index)
        started = time.perf_counter()
        return_freed_memory()   # training's pyramid and temporaries
        cfg = self.config.model
        large = self._large_scales(request, pyramid.spec.sizes)
        schedule = schedule.started_at(cfg.start_mid, cfg.start_fine, large, cfg.start_large)
        stats["t_start_sampled"] = schedule.t_start
        result = self.sample(net, pyramid, schedule, request, progress.sub("sample", 0.85, 1.0), stats, offset,
                             targets)
        stats["sample_s"] = round(time.perf_counter() - started, 2)
        stats["window"] = request.window.index
        self.windows.append(stats)
        return result

    def sample(self, net, pyramid: Pyramid, schedule, request, progress: StageReporter, stats: dict,
               scale_offset: int = 0, targets: Optional[list] = None) -> "np.ndarray | EditedBox":
        """Sample the window's ROIs; ``targets`` (text mode) are their prompts' text embeddings."""
        import torch

        from ..model.sampler import KeepOriginal

        cfg = self.config.model
        sizes = list(pyramid.spec.sizes)
        rim_hold = cfg.rim_hold if any(self._large_scales(request, sizes)) else 0.0
        band = band_px(request, self.config.blend.band_px)
        stats["net_scales"] = self._net_scales(pyramid.spec)   # the scales the net draws here
        if stats["net_scales"] < len(sizes):
            return self._sample_layout(net, pyramid, schedule, request, progress, stats, scale_offset, targets, band,
                                       rim_hold)
        keep, final = keep_pyramid(request.roi, band, sizes, rim_hold)
        if rim_hold > 0:
            stats["rim_hold"] = rim_hold
        # the sampler frees each scale's original and mask once it is done with it: the pyramid
        # and the lists made here hand over their references (the finest is the request's image)
        kept = KeepOriginal(keep=[torch.from_numpy(k)[None, None] for k in keep],
                            originals=[torch.from_numpy(img)[None] for img in pyramid.images],
                            final=torch.from_numpy(final)[None, None], release=True)
        fine = patch_stage(pyramid.images, request.roi, keep, cfg.patch_scales, int(request.seed))
        del keep
        pyramid.images = []
        # a large window's finest scale is sampled on the box of the pixels it changes, and only
        # that box comes back (the rest is the request's image)
        out, (top, bottom, left, right), paste = self._run_net(net, schedule, request, sizes, sizes, kept, band,
                                                               progress, stats, scale_offset, targets, fine)
        result = out[0].float().cpu().numpy()
        del out
        if paste is not None and paste.ramp is not None and cfg.copy_grain > 1:
            box = (slice(None), slice(top, bottom), slice(left, right))
            donor = np.where(request.copy_mask[box[1:]], request.copy_source[box], result)
            result, stats["copy_grain"] = restore_grain(result, donor, paste.ramp[box[1:]], cfg.copy_grain)
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

    def _sample_layout(self, net, pyramid: Pyramid, schedule, request, progress: StageReporter, stats: dict,
                       scale_offset: int, targets: Optional[list], band: float, rim_hold: float) -> np.ndarray:
        """``net_scales`` below the window's scale count: the net samples the coarsest scales
        (with the original kept, the paste and the guidance as at every scale), and the patch
        fill lays the window's real patches out on its result from the last of them up."""
        import torch

        from ..model.sampler import KeepOriginal
        from ..patch.fill import fill
        from .patch import fill_inputs, pieces_stats

        cfg = self.config.model
        sizes = list(pyramid.spec.sizes)
        k = stats["net_scales"]
        coarse = sizes[:k]
        # the coarse scales and the finest, whose masks and paste ramp are those of a whole pyramid's
        scales = coarse + [sizes[-1]]
        keep, _ = keep_pyramid(request.roi, band, scales, rim_hold)
        kept = KeepOriginal(keep=[torch.from_numpy(m)[None, None] for m in keep[:k]],
                            originals=[torch.from_numpy(img)[None] for img in pyramid.images[:k]], release=True)
        out, (top, bottom, left, right), _ = self._run_net(net, schedule, request, coarse, scales, kept, band,
                                                           progress.sub("net", 0.0, 0.5), stats, scale_offset,
                                                           targets, None, len(sizes))
        layout = EditedBox(out[0].float().cpu().numpy(), slice(top, bottom), slice(left, right)).whole(
            pyramid.images[k - 1])
        del out, kept
        fill_progress = progress.sub("patches", 0.5, 1.0)

        def on_scale(scale: int, total: int) -> None:
            fill_progress(scale + 1, total, f"real patches, scale {scale + 1}/{total}")

        inputs, final = fill_inputs(request, pyramid, band, cfg.copy_wiggle)
        result = fill(inputs, novelty=cfg.novelty, seed=int(request.seed), on_scale=on_scale, layout=(k - 1, layout))
        stats.update(pieces_stats(inputs))
        return np.where(final[None], request.image, result).astype(np.float32)

    def _run_net(self, net, schedule, request, drawn: list, paste_sizes: list, kept, band: float,
                 progress: StageReporter, stats: dict, scale_offset: int, targets: Optional[list], fine,
                 n_scales: Optional[int] = None):
        """Sample the scales ``drawn`` (coarsest first) with the original ``kept``, copy mode's
        paste (its ramp per ``paste_sizes``), the guidance of ``targets`` and the ``fine`` stage
        (either may be None). Returns (the (1, C, H, W) sample, the box of the last scale drawn,
        the paste); ``n_scales`` is the window's scale count for the progress messages."""
        import torch

        from ..model.sampler import Sampler

        cfg = self.config.model
        paste = None
        if self._pastes(request):
            paste = CopyPaste.build(request, paste_sizes, cfg.copy_weight, band, self.device,
                                    cfg.copy_hold, cfg.copy_wiggle)
        guide = self._guidance(request, drawn, schedule, targets) if targets is not None else None
        generator = torch.Generator().manual_seed(int(request.seed))
        total_scales = n_scales or len(drawn)

        def on_step(scale: int, done: int, total: int) -> None:
            progress(done, total, f"sampling scale {scale + 1}/{total_scales}")

        sampler = Sampler(net, schedule, drawn, request.image.shape[0], device=self.device, stride=cfg.sample_stride,
                          novelty=cfg.novelty, tile=cfg.tile, scale_offset=scale_offset)
        stages = [st for st in (paste, guide, fine) if st is not None]
        out, box = sampler.run(generator, kept, stages, return_box=True, on_step=on_step)
        self._guided(guide, stats)
        return out, box, paste

    def _guided(self, guide, stats: dict) -> None:
        """Keep the guidance of the edit just sampled (None without one) and its scores in ``stats``."""
        self.last_guidance = guide
        if guide is not None:
            scores = guide.stats.scores
            stats["guidance"] = {"steps": guide.stats.steps, "first_score": scores[0] if scores else None,
                                 "last_score": scores[-1] if scores else None}

    def _pastes(self, request) -> bool:
        """Whether the request pastes content (copy mode, or text mode given a copy source)."""
        return self.config.mode == "copy" or (self.config.mode == "text" and request.copy_source is not None)

    def _large_scales(self, request, sizes) -> list[bool]:
        """The window's large middle scales (:func:`~..model.schedule.large_scales`), which
        start later and, with ``rim_hold``, come with the original held on the ROI's rim; none
        when content is pasted: the donor brings the layout there, and its own hold covers the
        coarser half of the scales only (a later start there raised mixed-450's seam to 1.14)."""
        from ..model.schedule import large_scales

        return [False] * len(sizes) if self._pastes(request) else large_scales(sizes, self.config.model.large_px)

    def _text_targets(self, request) -> list:
        """The (1, D) text embedding of each ROI's prompt (ensembled unless switched off)."""
        from ..guidance.prompts import ensemble_embedding, llm_phrasings, load_synonyms, template_phrasings

        g = self.config.guidance
        synonyms = load_synonyms(g.synonyms)
        embeddings = []
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
        return embeddings

    def _guidance(self, request, sizes, schedule, embeddings: list):
        from ..guidance.roi import ClipGuidance

        g = self.config.guidance
        masks = [mask_pyramid(request.labels == k, sizes) for k in range(1, len(embeddings) + 1)]
        return ClipGuidance(self.clip, masks, embeddings, request.rgb, t_start_finest=schedule.t_start[len(sizes) - 1],
                            strength=g.strength, views=g.views, every=g.every, momentum=g.momentum,
                            stop_frac=g.stop_frac, seed=request.seed)

"""SinDDM as the pipeline's editor: train (or load from the cache) a model on the window, then
sample inside the ROIs with the original kept outside them.

Modes:
- ``regenerate``: new content inside the ROIs in the window's own style. At every step and
  scale the original, re-noised with one fixed noise, replaces the sample outside the ROI mask;
  inside, the chain runs free from the coarsest scale.
- ``copy``: the content of a source region is pasted onto the predicted clean image inside the
  target ROIs at every scale but the finest (weight ``copy_weight``); the finest scale then
  harmonises it with its surroundings.
- ``text``: ``regenerate`` steered by CLIP towards each ROI's prompt (guidance/roi.py); with a
  copy source as well, the pasted content guides the coarse scales and CLIP the rest.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np

from ..config import EditConfig
from ..errors import IncompatibleOptions
from ..imaging import resize, smooth_chroma
from ..progress import StageReporter
from .checkpoint import ModelCache, cache_key
from .pyramid import Pyramid, build_pyramid


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA device must exist."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise IncompatibleOptions(f"`device` {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IncompatibleOptions(f"`device` {name}: no CUDA device is available here; use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise IncompatibleOptions(f"`device` {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def _seed_from_key(key: str) -> int:
    return int(key[:12], 16)


def _mask_pyramid(mask: np.ndarray, sizes) -> list[np.ndarray]:
    """A boolean mask at every scale: a pixel is in the mask if any of it is (area > 0)."""
    out = []
    for size in sizes:
        if tuple(size) == mask.shape:
            out.append(mask.copy())
        else:
            out.append(resize(mask.astype(np.float32), size, "area") > 1e-3)
    return out


def _keep_pyramid(roi: np.ndarray, band_px: float, sizes) -> tuple[list[np.ndarray], np.ndarray]:
    """The sampler's keep masks (see ``diffusion.Constraint``): per scale, 0 inside the ROI,
    rising linearly to 1 across ``band_px`` pixels (of the window) outside it, area-resized to
    the scale; and the last step's mask, 1 only beyond the band."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~roi)
    if band_px > 0:
        keep = np.clip(dist / band_px, 0.0, 1.0).astype(np.float32)
    else:
        keep = (~roi).astype(np.float32)
    per_scale = [keep if tuple(size) == keep.shape else np.clip(resize(keep, size, "area"), 0.0, 1.0)
                 for size in sizes]
    return per_scale, (dist > band_px).astype(np.float32)


class SinDDMEditor:
    """Editor protocol implementation (see ``pipeline.Editor``)."""

    name = "sinddm"

    def __init__(self, config: EditConfig):
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

    def describe(self) -> dict:
        out = {"name": self.name, "mode": self.config.mode, "preset": self.config.preset,
               "device": str(self.device), "model": dataclasses.asdict(self.config.model), "windows": self.windows}
        if self.clip is not None:
            out["clip"] = self.clip.describe()
            out["guidance"] = dataclasses.asdict(self.config.guidance)
        return out

    # ------------------------------------------------------------------------------- training

    def trained_model(self, image: np.ndarray, valid: np.ndarray, progress: StageReporter):
        """(EMA net, pyramid, schedule, stats): from the cache, else trained (resuming a checkpoint)."""
        import torch

        from .diffusion import Schedule, TrainState, train
        from .net import SinDDMNet

        cfg = self.config.model
        params = dataclasses.asdict(cfg)
        key = cache_key(image, valid, params)
        pyramid = build_pyramid(image, valid, cfg.scale_factor)
        schedule = Schedule.build(cfg.timesteps, pyramid.recon_error, cfg.detail_factor)
        bands = image.shape[0]
        stats = {"cache_key": key, "scales": [list(s) for s in pyramid.spec.sizes],
                 "recon_error": [round(e, 5) for e in pyramid.recon_error], "t_start": schedule.t_start}
        cached = self.cache.load(key, device="cpu")
        if cached is not None:
            state_dict, _ = cached
            net = SinDDMNet(bands, cfg.width)
            net.load_state_dict(state_dict)
            progress(1, 1, "model loaded from the cache")
            return net.to(self.device).eval(), pyramid, schedule, {**stats, "trained": False, "train_s": 0.0}

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from_key(key))
            net = SinDDMNet(bands, cfg.width)
        ema = copy.deepcopy(net)
        generator = torch.Generator().manual_seed(_seed_from_key(key) + 1)
        state, opt_state = TrainState(), None
        resumed_from = 0
        checkpoint = self.cache.load_checkpoint(key)
        if checkpoint is not None and checkpoint.get("steps") == cfg.steps:
            net.load_state_dict(checkpoint["net"])
            ema.load_state_dict(checkpoint["ema"])
            generator.set_state(checkpoint["generator"])
            state = TrainState(step=int(checkpoint["step"]), losses=list(checkpoint["losses"]))
            opt_state = checkpoint["optimizer"]
            resumed_from = state.step
        net.to(self.device)
        ema.to(self.device)
        latest: dict = {}

        def save_checkpoint(st: TrainState, opt: dict) -> None:
            self.cache.save_checkpoint(key, {
                "steps": cfg.steps, "step": st.step, "losses": st.losses,
                "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
                "optimizer": opt, "generator": generator.get_state()})

        report_every = max(1, cfg.steps // 200)
        started = time.perf_counter()

        def on_step(st: TrainState, opt: dict) -> None:
            latest["opt"] = opt
            if st.step % cfg.checkpoint_every == 0 and st.step < cfg.steps:
                save_checkpoint(st, opt)
            if st.step % report_every == 0 or st.step == cfg.steps:
                recent = st.losses[-report_every:]
                loss = float(np.mean(recent))
                progress(st.step, cfg.steps, f"training step {st.step}/{cfg.steps}, loss {loss:.4f}",
                         {"loss": loss, "step": st.step})

        try:
            state = train(net, ema, pyramid, schedule, steps=cfg.steps, batch=cfg.batch, crop=cfg.crop, lr=cfg.lr,
                          lr_decay_every=cfg.lr_decay_every, lr_gamma=cfg.lr_gamma, ema_decay=cfg.ema,
                          device=self.device, generator=generator, scale_power=cfg.scale_power, state=state,
                          optimizer_state=opt_state,
                          on_step=on_step)
        except BaseException:
            # Interrupted (Ctrl-C, cancelled job, error): keep what was learnt for the next run.
            if state.step > resumed_from and "opt" in latest:
                save_checkpoint(state, latest["opt"])
            raise
        train_s = time.perf_counter() - started
        losses = state.losses
        self.cache.save(key, ema.state_dict(), {
            "bands": bands, "model": params, "scales": stats["scales"], "recon_error": pyramid.recon_error,
            "train_seconds": round(train_s, 2), "resumed_from": resumed_from,
            "loss_first": float(np.mean(losses[:20])) if losses else None,
            "loss_last": float(np.mean(losses[-20:])) if losses else None})
        stats.update(trained=True, train_s=round(train_s, 2), resumed_from=resumed_from,
                     loss_first=float(np.mean(losses[:20])), loss_last=float(np.mean(losses[-20:])))
        return ema.eval(), pyramid, schedule, stats

    # ------------------------------------------------------------------------------- editing

    def edit(self, request, progress: StageReporter) -> np.ndarray:
        import torch

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        net, pyramid, schedule, stats = self.trained_model(request.image, request.valid,
                                                           progress.sub("train", 0.0, 0.85))
        started = time.perf_counter()
        result = self.sample(net, pyramid, schedule, request, progress.sub("sample", 0.85, 1.0), stats)
        stats["sample_s"] = round(time.perf_counter() - started, 2)
        stats["window"] = request.window.index
        self.windows.append(stats)
        return result

    def sample(self, net, pyramid: Pyramid, schedule, request, progress: StageReporter, stats: dict) -> np.ndarray:
        import torch

        from ..guidance.roi import CopyHook, chain
        from .diffusion import Constraint, sample

        cfg = self.config.model
        sizes = list(pyramid.spec.sizes)
        roi_masks = _mask_pyramid(request.roi, sizes)
        keep, final = _keep_pyramid(request.roi, self._band_px(request), sizes)
        constraint = Constraint(keep=[torch.from_numpy(k)[None, None] for k in keep],
                                originals=[torch.from_numpy(img)[None] for img in pyramid.images],
                                final=torch.from_numpy(final)[None, None])
        copy_hook = guide = None
        if self.config.mode == "copy" or (self.config.mode == "text" and request.copy_source is not None):
            copy_hook = CopyHook.build(request, sizes, roi_masks, cfg.copy_weight, self.device)
        if self.config.mode == "text":
            guide = self._guidance(request, sizes, schedule)
        generator = torch.Generator().manual_seed(int(request.seed))

        def on_step(scale: int, done: int, total: int) -> None:
            progress(done, total, f"sampling scale {scale + 1}/{len(sizes)}")

        out = sample(net, schedule, sizes, request.image.shape[0], device=self.device, generator=generator,
                     stride=cfg.sample_stride, constraint=constraint, novelty=cfg.novelty,
                     x0_hook=chain(copy_hook, guide), on_step=on_step)
        if guide is not None:
            stats["guidance"] = {"steps": guide.stats.steps, "first_score": guide.stats.scores[0] if guide.stats.scores
                                 else None, "last_score": guide.stats.scores[-1] if guide.stats.scores else None}
        self.last_guidance = guide
        result = out[0].float().cpu().numpy()
        if cfg.chroma_radius > 0:
            edited = final < 1
            result[:, edited] = smooth_chroma(result, cfg.chroma_radius)[:, edited]
        return result

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
            masks.append(_mask_pyramid(request.labels == k, sizes))
        return ClipGuidance(self.clip, masks, embeddings, request.rgb, t_start_finest=schedule.t_start[-1],
                            strength=g.strength, views=g.views, every=g.every, momentum=g.momentum,
                            stop_frac=g.stop_frac, seed=request.seed)

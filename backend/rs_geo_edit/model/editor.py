"""SinDDM as the pipeline's editor: train (or load from the cache) a model on the window, then
sample inside the ROIs with the original kept outside them.

Modes:
- ``regenerate``: new content inside the ROIs in the window's own style. At every step and
  scale the original, re-noised with one fixed noise, replaces the sample outside the ROI mask;
  inside, the chain runs free from the coarsest scale.
- ``copy``: the content of a source region is pasted onto the predicted clean image inside the
  target ROIs at every scale but the finest (weight ``copy_weight``); the finest scale then
  harmonises it with its surroundings.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Optional

import numpy as np

from ..config import EditConfig
from ..errors import IncompatibleOptions
from ..imaging import resize
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
        raise IncompatibleOptions(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IncompatibleOptions(f"--device {name}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise IncompatibleOptions(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
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


class SinDDMEditor:
    """Editor protocol implementation (see ``pipeline.Editor``)."""

    name = "sinddm"

    def __init__(self, config: EditConfig):
        if config.mode not in ("regenerate", "copy"):
            raise IncompatibleOptions(f"mode {config.mode!r} is not a SinDDM-only mode: use regenerate or copy")
        self.config = config
        self.device = resolve_device(config.device)
        self.cache = ModelCache(config.cache_dir, int(config.cache_max_gb * 1e9))
        self.windows: list[dict] = []

    def describe(self) -> dict:
        return {"name": self.name, "mode": self.config.mode, "preset": self.config.preset,
                "device": str(self.device), "model": dataclasses.asdict(self.config.model),
                "windows": self.windows}

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
        net = SinDDMNet(bands, cfg.width)
        if cached is not None:
            state_dict, _ = cached
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
                          device=self.device, generator=generator, state=state, optimizer_state=opt_state,
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
        result = self.sample(net, pyramid, schedule, request, progress.sub("sample", 0.85, 1.0))
        stats["sample_s"] = round(time.perf_counter() - started, 2)
        stats["window"] = request.window.index
        self.windows.append(stats)
        return result

    def sample(self, net, pyramid: Pyramid, schedule, request, progress: StageReporter) -> np.ndarray:
        import torch

        from .diffusion import Constraint, sample

        cfg = self.config.model
        sizes = list(pyramid.spec.sizes)
        roi_masks = _mask_pyramid(request.roi, sizes)
        constraint = Constraint(
            keep=[torch.from_numpy((~m).astype(np.float32))[None, None] for m in roi_masks],
            originals=[torch.from_numpy(img)[None] for img in pyramid.images])
        hook = None
        if self.config.mode == "copy":
            hook = self._copy_hook(request, sizes, roi_masks)
        generator = torch.Generator().manual_seed(int(request.seed))

        def on_step(scale: int, done: int, total: int) -> None:
            progress(done, total, f"sampling scale {scale + 1}/{len(sizes)}")

        out = sample(net, schedule, sizes, request.image.shape[0], device=self.device, generator=generator,
                     stride=cfg.sample_stride, constraint=constraint, x0_hook=hook, on_step=on_step)
        return out[0].float().cpu().numpy()

    def _copy_hook(self, request, sizes, roi_masks):
        import torch

        if request.copy_source is None or request.copy_mask is None or not request.copy_mask.any():
            raise IncompatibleOptions("copy mode needs a source region: a feature with role=source in the AOI "
                                      "file, or --copy-from")
        weight = self.config.model.copy_weight
        contents, masks = [], []
        for size, roi in zip(sizes, roi_masks):
            content = resize(request.copy_source, size, "lanczos")
            mask = (resize(request.copy_mask.astype(np.float32), size, "area") > 0.5) & roi
            contents.append(torch.from_numpy(content)[None].to(self.device))
            masks.append(torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device))
        finest = len(sizes) - 1

        def hook(x0: torch.Tensor, scale: int, t: int) -> torch.Tensor:
            if scale == finest:
                return x0
            m = masks[scale] * weight
            return m * contents[scale] + (1 - m) * x0

        return hook

"""Training a SinDDM net on one window, or on several windows of a scene at once: optimiser, EMA,
mixed precision, the random generator, checkpoint state and resume, and the trained-model cache.

:func:`train` is the loop (reproducible from a generator; resumable from its state).
:func:`load_or_train` is what an editor calls: the cached EMA net of a window (or of a set of
windows), else one trained from a seeded start, resuming a checkpoint left by an interrupted run,
saved to the cache.

One net serves several windows (a scene model) by conditioning on a scale index counted on a
ladder common to them: a window's scale s is net scale ``s + offset``, with offsets aligning
the windows' finest scales (see :func:`scale_offsets`). Each window keeps its own pyramid and
schedule; a training step draws a window uniformly, then a scale of it.
``cache`` is the model cache of ``model/cache.py`` (``load``, ``save``,
``load_checkpoint``, ``save_checkpoint``); this module knows nothing of options or modes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .net import SinDDMNet, precision
from .pyramid import SCALE_FACTOR, Pyramid
from .schedule import Schedule
from .training import noise_loss, training_batch

LR_GAMMA = 0.5       # the learning rate's decay factor, every ``lr_decay_every`` steps
EMA_DECAY = 0.995    # EMA decay of the weights used for sampling


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)


@dataclass
class TrainSettings:
    """The training parameters (see ``ModelConfig`` for their meaning and defaults)."""

    width: int
    steps: int
    batch: int
    crop: int
    lr: float
    lr_decay_every: int
    checkpoint_every: int
    scale_power: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TrainSettings":
        return cls(**{f.name: params[f.name] for f in fields(cls)})


def fixed_params() -> dict[str, float]:
    """The training constants by the names the model cache's key gives them."""
    return {"ema": EMA_DECAY, "lr_gamma": LR_GAMMA, "scale_factor": SCALE_FACTOR}


def scale_offsets(pyramids: Sequence[Pyramid]) -> list[int]:
    """Per window, what its scale indices add to reach the common ladder: the finest scales of
    all windows share one index (native resolution), the next finer ones the index below, and so
    on, so a scale index means about the same ground resolution in every window (the factors
    between scales are each refitted to within a few per cent of the nominal one)."""
    most = max(p.spec.n_scales for p in pyramids)
    return [most - p.spec.n_scales for p in pyramids]


def train(net: torch.nn.Module, ema: torch.nn.Module, pyramid: Pyramid | Sequence[Pyramid],
          schedule: Schedule | Sequence[Schedule], *, steps: int, batch: int, crop: int, lr: float, lr_decay_every: int, lr_gamma: float,
          ema_decay: float, device: torch.device, generator: torch.Generator, scale_power: float = 0.0,
          state: Optional[TrainState] = None, optimizer_state: Optional[dict] = None,
          on_step: Optional[Callable[[TrainState, dict], None]] = None) -> TrainState:
    """Train ``net`` (and its EMA copy ``ema``) on the pyramid, from ``state.step`` to ``steps``.

    ``pyramid`` and ``schedule`` may be lists (one per window, a scene model): each step then
    draws a window uniformly and conditions the net on the window's scale plus its
    :func:`scale_offsets`. One pyramid trains exactly as it always has (same random stream).

    ``generator`` (a CPU generator) draws scales, crops, timesteps and noise, so training is
    reproducible and a resumed run continues the same sequence when its state is restored.
    ``scale_power`` weights the scales drawn (see ``training.scale_probabilities``).
    ``on_step(state, optimizer_state)`` is called after every step (progress, checkpoints,
    cancellation); ``optimizer_state`` is what ``optimizer_state=`` takes back to resume.
    """
    state = state or TrainState()
    pyramids = list(pyramid) if isinstance(pyramid, (list, tuple)) else [pyramid]
    schedules = list(schedule) if isinstance(schedule, (list, tuple)) else [schedule]
    if len(pyramids) != len(schedules):
        raise ValueError(f"{len(pyramids)} pyramids but {len(schedules)} schedules")
    offsets = scale_offsets(pyramids)
    # valid masks stay boolean (a float copy of a native-resolution window's is ~100 MB)
    sources = [[(torch.from_numpy(img), None if blr is None else torch.from_numpy(blr), torch.from_numpy(ok)[None])
                for img, blr, ok in zip(p.images, p.blurry, p.valid)] for p in pyramids]
    optimizer, scheduler = _optimiser(net, lr, lr_decay_every, lr_gamma, optimizer_state)
    amp, amp_dtype = precision(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    net.train()
    # Channels-last convolutions: the backward pass of the convolutions is ~70 % of a CPU step,
    # and this layout shortened the demo's training from 203 s to 196 s (2 threads). The nets go
    # back to the default layout when done, so a net sampled right after training computes
    # exactly as one loaded from the cache.
    net.to(memory_format=torch.channels_last)
    ema.to(memory_format=torch.channels_last)
    try:
        while state.step < steps:
            w = int(torch.randint(0, len(sources), (1,), generator=generator)) if len(sources) > 1 else 0
            s, noisy, t, noise, weights = training_batch(sources[w], schedules[w], batch, crop, generator,
                                                         scale_power)
            noisy = noisy.to(device).contiguous(memory_format=torch.channels_last)
            t, noise, weights = t.to(device), noise.to(device), weights.to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
                pred = net(noisy, t, torch.full_like(t, s + offsets[w]))
            loss = noise_loss(pred, noise, weights)
            _update(net, ema, ema_decay, loss, optimizer, scheduler, scaler)
            state.step += 1
            state.losses.append(loss.item())
            if on_step is not None:
                on_step(state, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    finally:
        net.to(memory_format=torch.contiguous_format)
        ema.to(memory_format=torch.contiguous_format)
    return state


def _optimiser(net: torch.nn.Module, lr: float, lr_decay_every: int, lr_gamma: float, optimizer_state: Optional[dict]):
    """Adam and its step decay of the learning rate, restored from ``optimizer_state`` when resuming."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, lr_decay_every), gamma=lr_gamma)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])
    return optimizer, scheduler


def _update(net, ema, ema_decay: float, loss, optimizer, scheduler, scaler) -> None:
    """One optimiser step on ``loss``, the learning-rate schedule's step and the EMA's update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), net.parameters()):
            p_ema.lerp_(p, 1 - ema_decay)


def _seed_from_key(key: str) -> int:
    return int(key[:12], 16)


def cached_net(cache, key: str, width: int, device: torch.device) -> Optional[torch.nn.Module]:
    """The EMA net cached under ``key`` (eval mode, on ``device``), or None when absent."""
    cached = cache.load(key, device="cpu")
    if cached is None:
        return None
    state_dict, meta = cached
    net = SinDDMNet(meta["bands"], width)
    net.load_state_dict(state_dict)
    return net.to(device).eval()


def load_or_train(cache, key: str, pyramid: Pyramid | Sequence[Pyramid], schedule: Schedule | Sequence[Schedule],
                  params: dict[str, Any], *, device: torch.device, progress) -> tuple[torch.nn.Module, dict]:
    """(EMA net in eval mode on ``device``, stats) for the window (or, given lists, the windows
    of a scene model) whose cache key is ``key``.

    From ``cache`` when present; else trained with :func:`train`: the net starts from a seed
    derived from ``key`` and the generator from the next one, so the same window and parameters
    always give the same model; a checkpoint is saved every ``checkpoint_every`` steps and when
    training is interrupted (Ctrl-C, a cancelled job, an error), and a later run resumes from
    it. ``params`` are the model parameters (ModelConfig as a dict), kept with the model.
    ``progress(done, total, message, extra)`` reports training steps; its ``check()``, if it
    has one, is called at every step and may raise to stop training (a checkpoint is kept).
    """
    settings = TrainSettings.from_params(params)
    pyramids = list(pyramid) if isinstance(pyramid, (list, tuple)) else [pyramid]
    bands = pyramids[0].images[0].shape[0]
    cached = cached_net(cache, key, settings.width, device)
    if cached is not None:
        progress(1, 1, "model loaded from the cache")
        return cached, {"trained": False, "train_s": 0.0}

    net, ema, generator, state, opt_state = _start(cache, key, bands, settings)
    resumed_from = state.step
    net.to(device)
    ema.to(device)
    latest: dict = {}

    def save_checkpoint(st: TrainState, opt: dict) -> None:
        cache.save_checkpoint(key, {
            "steps": settings.steps, "step": st.step, "losses": st.losses,
            "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
            "optimizer": opt, "generator": generator.get_state()})

    started = time.perf_counter()
    on_step = _step_reporter(progress, settings, resumed_from, save_checkpoint, latest)
    try:
        state = train(net, ema, pyramid, schedule, steps=settings.steps, batch=settings.batch, crop=settings.crop,
                      lr=settings.lr, lr_decay_every=settings.lr_decay_every, lr_gamma=LR_GAMMA,
                      ema_decay=EMA_DECAY, device=device, generator=generator,
                      scale_power=settings.scale_power, state=state,
                      optimizer_state=opt_state, on_step=on_step)
    except BaseException:
        # Interrupted (Ctrl-C, cancelled job, error): keep what was learnt for the next run.
        if state.step > resumed_from and "opt" in latest:
            save_checkpoint(state, latest["opt"])
        raise
    stats = {"trained": True, "train_s": round(time.perf_counter() - started, 2), "resumed_from": resumed_from,
             "loss_first": float(np.mean(state.losses[:20])) if state.losses else None,
             "loss_last": float(np.mean(state.losses[-20:])) if state.losses else None}
    cache.save(key, ema.state_dict(), {
        "bands": bands, "model": params, "windows": len(pyramids),
        "scales": [[list(s) for s in p.spec.sizes] for p in pyramids] if len(pyramids) > 1
        else [list(s) for s in pyramids[0].spec.sizes],
        "recon_error": [p.recon_error for p in pyramids] if len(pyramids) > 1 else pyramids[0].recon_error,
        "train_seconds": stats["train_s"], "resumed_from": resumed_from,
        "loss_first": stats["loss_first"], "loss_last": stats["loss_last"]})
    return ema.eval(), stats


def _step_reporter(progress, settings: TrainSettings, resumed_from: int, save_checkpoint, latest: dict):
    """The training loop's ``on_step``: keeps the latest optimiser state in ``latest``, checks
    for a cancel, saves a checkpoint every ``checkpoint_every`` steps and reports progress
    every 1/200 of the steps (and at the first)."""
    report_every = max(1, settings.steps // 200)
    # A cancellable reporter (StageReporter) has a cheap check(); reports are steps/200 apart,
    # and a cancel must not wait for one.
    check = getattr(progress, "check", None)

    def on_step(st: TrainState, opt: dict) -> None:
        latest["opt"] = opt
        if check is not None:
            check()
        if st.step % settings.checkpoint_every == 0 and st.step < settings.steps:
            save_checkpoint(st, opt)
        # the first step is reported too: a long training shows up as training at once
        if st.step % report_every == 0 or st.step == settings.steps or st.step == resumed_from + 1:
            loss = float(np.mean(st.losses[-report_every:]))
            progress(st.step, settings.steps, f"training step {st.step}/{settings.steps}, loss {loss:.4f}",
                     {"loss": loss, "step": st.step})

    return on_step


def _start(cache, key: str, bands: int, settings: TrainSettings):
    """(net, EMA net, generator, state, optimiser state) to train from: seeded from ``key``, or
    where an interrupted run of the same steps left a checkpoint, restored from it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_from_key(key))
        net = SinDDMNet(bands, settings.width)
    ema = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(_seed_from_key(key) + 1)
    checkpoint = cache.load_checkpoint(key)
    if checkpoint is None or checkpoint.get("steps") != settings.steps:
        return net, ema, generator, TrainState(), None
    net.load_state_dict(checkpoint["net"])
    ema.load_state_dict(checkpoint["ema"])
    generator.set_state(checkpoint["generator"])
    state = TrainState(step=int(checkpoint["step"]), losses=list(checkpoint["losses"]))
    return net, ema, generator, state, checkpoint["optimizer"]

"""SinDDM benchmark: cost per training step, quality against training time, whole-edit time.

Prints
  1. ms per training step at each pyramid scale of a 256 x 256 window, for `fast` and `paper`
     (`paper` at its batch of 32 is extrapolated from a measured batch of 4: conv cost is linear
     in the batch; the extrapolation is labelled);
  2. for `fast` (and `--compare` variants) on a 256 x 256 window of the bundled aerial scene:
     patch SWD of an unconditional sample to the source against training wall time, next to the
     intrinsic SWD (left half vs right half of the window) and the SWD of noise with the
     window's mean and variance;
  3. a whole regenerate edit of that window through the CLI (train + sample + write), then a
     re-edit with another seed from the model cache.
Targets: `fast` reaches SWD <= 1.5 x intrinsic; whole edit <= 10 min (aim 3); re-edit <= 60 s
(aim 20 s).

Usage: .venv/bin/python scripts/bench/sinddm.py [--threads 1] [--skip-edit] [--compare 32:48:4]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"
AOI = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_aoi.geojson"
WINDOW = Window(576, 576, 256, 256)


def window_image():
    from rs_geo_edit.geo.raster import Normaliser

    with rasterio.open(SCENE) as src:
        raw = src.read(window=WINDOW)
    valid = np.ones(raw.shape[1:], bool)
    return Normaliser.fit(raw, valid).forward(raw), valid


def step_costs(image, valid, model_cfg, batch, label, scale_batch=1):
    from rs_geo_edit.model.schedule import Schedule
    from rs_geo_edit.model.training import training_batch
    from rs_geo_edit.model.net import SinDDMNet
    from rs_geo_edit.model.pyramid import build_pyramid

    pyr = build_pyramid(image, valid)
    sched = Schedule.build(model_cfg.timesteps, pyr.recon_error, model_cfg.detail_factor)
    net = SinDDMNet(image.shape[0], model_cfg.width)
    opt = torch.optim.Adam(net.parameters())
    gen = torch.Generator().manual_seed(0)
    rows = []
    for s, size in enumerate(pyr.spec.sizes):
        single = [(torch.from_numpy(pyr.images[s]), torch.from_numpy(pyr.blurry[s]),
                   torch.from_numpy(pyr.valid[s].astype(np.float32))[None])]
        one = Schedule(sched.abar, sched.gammas[s:s + 1] if s else sched.gammas[:1], [sched.t_start[s]])
        times = []
        for i in range(4):
            _, noisy, t, noise, w = training_batch(single, one, batch, model_cfg.crop, gen)
            t0 = time.perf_counter()
            loss = ((net(noisy, t, torch.full_like(t, s)) - noise).abs() * w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        rows.append((s, size, min(model_cfg.crop, size[0]), 1000 * np.median(times[1:]) * scale_batch))
    print(f"\n{label}: ms per training step (median of 3)")
    for s, size, crop, ms in rows:
        print(f"  scale {s}: {size[0]:>4} x {size[1]:<4} crop {crop:>4}  {ms:>10.1f} ms")
    print(f"  mean over scales (drawn uniformly): {np.mean([r[3] for r in rows]):.1f} ms")


def quality_curve(image, valid, model_cfg, checkpoints, label):
    from rs_geo_edit.eval import patch_swd
    from rs_geo_edit.model.sampler import Sampler
    from rs_geo_edit.model.schedule import Schedule
    from rs_geo_edit.model.net import SinDDMNet
    from rs_geo_edit.model.pyramid import build_pyramid
    from rs_geo_edit.model.trainer import EMA_DECAY, LR_GAMMA, TrainState, train

    pyr = build_pyramid(image, valid)
    sched = Schedule.build(model_cfg.timesteps, pyr.recon_error, model_cfg.detail_factor)
    torch.manual_seed(0)
    net = SinDDMNet(image.shape[0], model_cfg.width)
    ema = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(1)
    state, wall = TrainState(), 0.0
    print(f"\n{label}: SWD of a sample to the source vs training time "
          f"(width {model_cfg.width}, crop {model_cfg.crop}, batch {model_cfg.batch})")
    opt_state = {}

    def keep(st, opt):
        opt_state["s"] = opt

    results = []
    for steps in checkpoints:
        t0 = time.perf_counter()
        state = train(net, ema, pyr, sched, steps=steps, batch=model_cfg.batch, crop=model_cfg.crop,
                      lr=model_cfg.lr, lr_decay_every=model_cfg.lr_decay_every, lr_gamma=LR_GAMMA,
                      ema_decay=EMA_DECAY, device=torch.device("cpu"), generator=gen, state=state,
                      optimizer_state=opt_state.get("s"), on_step=keep)
        wall += time.perf_counter() - t0
        t1 = time.perf_counter()
        out = Sampler(ema, sched, list(pyr.spec.sizes), image.shape[0], device=torch.device("cpu"),
                      stride=model_cfg.sample_stride).run(torch.Generator().manual_seed(0))[0].numpy()
        sample_s = time.perf_counter() - t1
        swd = np.mean([patch_swd(out, image, seed=k) for k in range(3)])
        loss = np.mean(state.losses[-50:])
        results.append((steps, wall, swd))
        print(f"  steps {steps:>5}  train {wall:>7.1f} s  loss {loss:.4f}  sample {sample_s:5.1f} s  SWD {swd:.4f}",
              flush=True)
        net.train()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-edit", action="store_true")
    parser.add_argument("--skip-costs", action="store_true")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[150, 300, 600, 1000, 1500, 2000])
    parser.add_argument("--compare", nargs="*", default=[], help="extra fast variants as width:crop:batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rs_geo_edit.config import PRESETS, ModelConfig
    from rs_geo_edit.eval import patch_swd

    image, valid = window_image()
    fast = ModelConfig(**PRESETS["fast"])
    paper = ModelConfig(**PRESETS["paper"])
    print(f"torch {torch.__version__}, {args.threads} thread(s); window {WINDOW} of {SCENE.name}")
    if not args.skip_costs:
        step_costs(image, valid, fast, fast.batch, f"fast (batch {fast.batch})")
        step_costs(image, valid, paper, 4, f"paper (batch {paper.batch}, extrapolated x8 from batch 4)", 8)

    left, right = image[:, :, :128], image[:, :, 128:]
    intrinsic = np.mean([patch_swd(left, right, seed=k) for k in range(3)])
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(image.shape) * image.std(axis=(1, 2), keepdims=True)
             + image.mean(axis=(1, 2), keepdims=True)).astype(np.float32)
    noise_swd = np.mean([patch_swd(noise, image, seed=k) for k in range(3)])
    print(f"\nintrinsic SWD (left half vs right half): {intrinsic:.4f}; noise with the same mean/variance: "
          f"{noise_swd:.4f}; target for fast: <= {1.5 * intrinsic:.4f}")
    variants = [("fast", fast)]
    for spec in args.compare:
        w, c, b = (int(v) for v in spec.split(":"))
        variants.append((f"variant {spec}", dataclasses.replace(fast, width=w, crop=c, batch=b)))
    for label, cfg in variants:
        curve = quality_curve(image, valid, cfg, args.checkpoints, label)
        reached = [(s, t) for s, t, swd in curve if swd <= 1.5 * intrinsic]
        print(f"  -> {'reaches' if reached else 'does not reach'} 1.5 x intrinsic"
              + (f" at {reached[0][0]} steps, {reached[0][1]:.0f} s of training" if reached else ""))

    if not args.skip_edit:
        exe = Path(sys.executable).with_name("rs-geo-edit")
        with tempfile.TemporaryDirectory() as tmp:
            common = [str(exe), "edit", str(SCENE), "--aoi", str(AOI), "--cache-dir", f"{tmp}/cache",
                      "--threads", str(args.threads), "--quiet"]
            for label, extra in (("whole regenerate edit (train + sample + write)", ["--seed", "1"]),
                                 ("re-edit from the cache (another seed)", ["--seed", "2"])):
                t0 = time.perf_counter()
                subprocess.run(common + extra + ["-o", f"{tmp}/out_{extra[-1]}.tif"], check=True,
                               stdout=subprocess.DEVNULL)
                print(f"\n{label}: {time.perf_counter() - t0:.1f} s wall (process start included)")


if __name__ == "__main__":
    main()

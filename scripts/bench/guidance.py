"""Guidance benchmark: what CLIP guidance costs, and what it does to an ROI.

Cost, on the 256 x 256 window of the bundled aerial scene, with ViT-B-32 (RemoteCLIP's
architecture) with random weights: timings only, since the cost does not depend on the weights
and an edit such a model steers means nothing. Prints
  1. ms per unguided denoiser step at the finest scale (fast preset's net),
  2. ms per guidance step (forward + backward through CLIP) with the fast preset's views and
     with the reference's 16 views, and the ratio of each to (1);
  3. the wall time of a whole 256 x 256 text edit with the fast preset (train + sample + write).

Text (what guidance does), on the bundled ROI (forest, 128 px) with the fast preset: per prompt
of the controlled encoder's vocabulary, the edit guided by rsge-landcover and, with the same
seed, the unguided edit, both scored by rsge-judge (built apart from the guide, on other pixel
features; guidance/landcover.py) as ``rs-geo-edit eval`` scores them: the judge's score of the
unguided and the guided ROI and the gain, beside the guide's own gain (its objective, for
contrast: a gain only the guide sees is guidance fooling its own model).

Usage: .venv/bin/python scripts/bench/guidance.py [--threads 1] [--skip-edit] [--skip-cost]
       [--skip-text] [--steps N] [--cache-dir DIR] [--prompts "snow-covered field" "dense forest" ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"
AOI = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_aoi.geojson"


def timed(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


PROMPTS = ("snow-covered field", "dense forest", "open water", "a paved road")


def text_table(args, folder: Path) -> None:
    """Guided by rsge-landcover against the same seed unguided, judged by rsge-judge."""
    import geopandas as gpd

    from rs_geo_edit.config import GuidanceConfig, OutputConfig, make_config
    from rs_geo_edit.evaluate import evaluate_outputs
    from rs_geo_edit.pipeline import edit_scene

    steps = f", {args.steps} steps" if args.steps else ""
    print(f"\ntext: bundled ROI (128 px), fast preset{steps}, seed {args.seed}; guide rsge-landcover, judge rsge-judge "
          "(100 x cosine)")
    print(f"{'prompt':<22} {'unguided':>9} {'guided':>7} {'gain':>6}   {'guide gain':>10}  {'seconds':>7}")
    for prompt in args.prompts:
        aoi = folder / "aoi.geojson"
        features = gpd.read_file(AOI)
        features["prompt"] = [prompt] * len(features)
        features.to_file(aoi, driver="GeoJSON")
        config = make_config("fast", model_overrides={"steps": args.steps}, mode="text", seed=args.seed,
                             threads=args.threads, cache_dir=args.cache_dir or folder / "cache",
                             output=OutputConfig(overwrite=True),
                             guidance=GuidanceConfig(clip="rsge-landcover"))
        t0 = time.perf_counter()
        edit_scene(SCENE, aoi, folder / "text.tif", config)
        seconds = time.perf_counter() - t0
        judged, = evaluate_outputs([folder / "text.tif"], SCENE, aoi, config, None, scratch=folder)
        own, = evaluate_outputs([folder / "text.tif"], SCENE, aoi, config, "rsge-landcover",
                                unguided=judged["unguided"])
        j, g = judged["rois"][0], own["rois"][0]
        print(f"{prompt:<22} {j['clip_score_unguided']:9.1f} {j['clip_score_edit']:7.1f} {j['clip_gain']:6.1f}   "
              f"{g['clip_gain']:10.1f}  {seconds:7.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-edit", action="store_true", help="cost: no whole text edit")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="text: training steps (default: the fast preset's)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    parser.add_argument("--cache-dir", type=Path, default=None, help="text: model cache (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    if not args.skip_cost:
        cost(args)
    if not args.skip_text:
        with tempfile.TemporaryDirectory() as tmp:
            text_table(args, Path(tmp))


def cost(args) -> None:
    from rs_geo_edit.config import GuidanceConfig, ModelConfig
    from rs_geo_edit.geo.raster import Normaliser
    from rs_geo_edit.guidance.clip import load_clip
    from rs_geo_edit.guidance.prompts import ensemble_embedding, template_phrasings
    from rs_geo_edit.guidance.roi import ClipGuidance
    from rs_geo_edit.model.net import SinDDMNet

    with rasterio.open(SCENE) as src:
        raw = src.read(window=Window(576, 576, 256, 256))
    image = torch.from_numpy(Normaliser.fit(raw, np.ones((256, 256), bool)).forward(raw))[None]
    cfg, gcfg = ModelConfig(), GuidanceConfig()
    net = SinDDMNet(3, cfg.width).eval()
    t = torch.tensor([5])
    with torch.no_grad():
        plain = timed(lambda: net(image, t, torch.tensor([4])))
    clip = load_clip("ViT-B-32:random")
    text = ensemble_embedding(clip, template_phrasings("dense forest"))
    roi = np.zeros((256, 256), bool)
    roi[64:192, 64:192] = True
    print(f"cost: torch {torch.__version__}, {args.threads} thread(s), window 256 x 256, ROI 128 x 128; ViT-B-32 "
          "with random weights (timings only)")
    print(f"unguided denoiser step (width {cfg.width}): {plain:8.1f} ms")
    for views in sorted({gcfg.views, 16}):
        guide = ClipGuidance(clip, [[roi, roi]], [text], [0, 1, 2], t_start_finest=20, strength=gcfg.strength,
                             views=views, momentum=gcfg.momentum)
        cost = timed(lambda: guide(image.clone(), 1, 15))
        print(f"guidance step, ViT-B-32, {views:>2} views:      {cost:8.1f} ms  = {cost / plain:5.1f} x an unguided step")
    if not args.skip_edit:
        exe = Path(sys.executable).with_name("rs-geo-edit")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([str(exe), str(SCENE), "--aoi", str(AOI), "--prompt", "dense forest", "--clip",
                            "ViT-B-32:random", "--cache-dir", f"{tmp}/cache", "--threads", str(args.threads),
                            "--quiet", "-o", f"{tmp}/text.tif"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            print(f"whole 256 x 256 text edit, fast preset (train + sample + write): "
                  f"{time.perf_counter() - t0:.1f} s wall")


if __name__ == "__main__":
    main()

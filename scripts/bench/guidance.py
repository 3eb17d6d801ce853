"""Guidance benchmark: the cost of CLIP guidance relative to a plain SinDDM sampling step.

On the 256 x 256 window of the bundled aerial scene, with ViT-B-32 (RemoteCLIP's architecture,
random weights: the cost does not depend on the weights), prints
  1. ms per unguided denoiser step at the finest scale (fast preset's net),
  2. ms per guidance step (forward + backward through CLIP) with the fast preset's views and
     with the reference's 16 views, and the ratio of each to (1);
  3. the wall time of a whole 256 x 256 text edit with the fast preset (train + sample + write).

Usage: .venv/bin/python scripts/bench/guidance.py [--threads 1] [--skip-edit]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-edit", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
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
    print(f"torch {torch.__version__}, {args.threads} thread(s), window 256 x 256, ROI 128 x 128")
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

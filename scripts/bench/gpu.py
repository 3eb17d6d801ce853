"""GPU check: the paths only a GPU runs, each timed, with its peak GPU memory and realism figures.

Cases (all on the bundled aerial scene, through the real library call ``edit_scene``):
  paper-text    the `paper` preset (the SinDDM reference: width 160, whole scales, batch 32) in
                text mode on the demo ROI, guided by the built-in rsge-landcover and judged by
                rsge-judge against the same seed unguided (the gain); the denoiser trains and
                samples in mixed precision (bfloat16 where the GPU has it, else float16);
  tiled         regenerate on an 800 px ROI (a 1024 px window) with `--tile 512`, so the large
                scales are sampled in overlapping tiles fused at every step;
  instruct      the instruct engine in float16 on the demo ROI: $RS_GEO_EDIT_INSTRUCT_MODEL when
                set (a diffusers pipeline folder), else a small randomly initialised
                InstructPix2Pix built here (the fp16 path and its memory, not edit quality).
Printed per case: seconds (train + sample + write; the unguided reference apart), peak GPU
memory (torch.cuda.max_memory_allocated), the realism figures (luminance and colour detail,
seam ratio; targets 0.8-1.2, <= 1.3, <= 1.1), and for paper-text the judge's gain.

`--steps` caps the training steps of every SinDDM case (the paper's 120000 take hours; 3000 by
default: a check of the path, not of the paper's quality). `--device cpu` with small `--steps`
runs the script's logic on a machine without a GPU (no GPU figures).

Usage: scripts/bench/gpu.sh [--steps 3000] [--cases paper-text tiled instruct] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"
AOI = SCENE.with_name("aerial_aoi.geojson")
CASES = ("paper-text", "tiled", "instruct")


def peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float:
    import torch

    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 1e9


def large_aoi(folder: Path, side: int = 800) -> Path:
    """An AOI of one ``side`` px square in the middle of the scene."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(SCENE) as src:
        t, h, w, crs = src.transform, src.height, src.width, src.crs
    r0, c0 = (h - side) // 2, (w - side) // 2
    x0, y0 = t * (c0, r0 + side)
    x1, y1 = t * (c0 + side, r0)
    path = folder / "large.geojson"
    gpd.GeoDataFrame({"name": ["large"]}, geometry=[box(x0, y0, x1, y1)], crs=crs).to_file(path, driver="GeoJSON")
    return path


def case_config(case: str, args, folder: Path):
    """(config, AOI) of a case."""
    from rs_geo_edit.config import GuidanceConfig, InstructConfig, OutputConfig, make_config

    output = OutputConfig(overwrite=True)
    common = {"seed": args.seed, "device": args.device, "cache_dir": folder / "cache", "output": output}
    if case == "paper-text":
        return make_config("paper", model_overrides={"steps": args.steps}, mode="text",
                           guidance=GuidanceConfig(clip="rsge-landcover"), **common), AOI
    if case == "tiled":
        return make_config("fast", model_overrides={"steps": args.steps, "tile": 512}, mode="regenerate",
                           **common), large_aoi(folder)
    model = args.instruct_model or str(tiny_instruct(folder))
    return make_config(engine="instruct", mode="text", instruct=InstructConfig(model=model, steps=args.instruct_steps),
                       **common), AOI


def tiny_instruct(folder: Path) -> Path:
    """The test suite's ~1 MB randomly initialised InstructPix2Pix pipeline (tests/conftest.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_instruct

    return build_tiny_instruct(folder / "tiny-instruct")


def run_case(case: str, args, folder: Path) -> dict:
    from rs_geo_edit.editors import resolve_device
    from rs_geo_edit.evaluate import evaluate_outputs
    from rs_geo_edit.pipeline import edit_scene

    config, aoi = case_config(case, args, folder)
    device = resolve_device(config.device)
    output = folder / f"{case}.tif"
    peak_reset(device)
    started = time.perf_counter()
    result = edit_scene(SCENE, aoi, output, config)
    row = {"case": case, "seconds": round(time.perf_counter() - started, 1), "peak_gb": round(peak_gb(device), 2),
           "device": str(device), **result.record["windows"][0].get("realism", {})}
    if case == "instruct":
        row["dtype"] = result.record["editor"]["dtype"]
    else:
        row["train_s"] = round(sum(m.get("train_s", 0.0) for m in result.record["editor"]["models"]), 1)
    if case == "paper-text":
        (report,) = evaluate_outputs([output], SCENE, aoi, config, None, device=device, scratch=folder)
        (roi,) = report["rois"]
        row.update(judge=report["judge"]["name"], gain=round(roi["clip_gain"], 2), unguided_s=report["unguided_s"])
    return row


def show(row: dict) -> str:
    fig = " ".join(f"{k} {row[k]:.2f}" for k in ("luminance", "colour", "seam") if k in row)
    extra = " ".join(f"{k} {row[k]}" for k in ("dtype", "judge", "gain", "unguided_s") if k in row)
    train = f" (train {row['train_s']:.1f} s)" if "train_s" in row else ""
    return f"{row['case']:<11} {row['seconds']:8.1f} s{train}  peak {row['peak_gb']:6.2f} GB  {fig}  {extra}".rstrip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--steps", type=int, default=3000, help="training steps of every SinDDM case")
    parser.add_argument("--instruct-model", default=None, help="diffusers pipeline folder (default: "
                        "$RS_GEO_EDIT_INSTRUCT_MODEL, else a tiny random one)")
    parser.add_argument("--instruct-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import os

    import torch

    args.instruct_model = args.instruct_model or os.environ.get("RS_GEO_EDIT_INSTRUCT_MODEL")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA device (torch.cuda.is_available() is False): run it on a GPU machine, or pass "
              "--device cpu for a smoke run", file=sys.stderr)
        return 1
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"{name}, torch {torch.__version__}, steps {args.steps}, seed {args.seed}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rs-gpu-") as tmp:
        for case in args.cases:
            rows.append(run_case(case, args, Path(tmp)))
            print(show(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "steps": args.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

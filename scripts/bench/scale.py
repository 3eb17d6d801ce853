"""Scale bench: large ROIs edited at native resolution, on scenes mosaicked from the bundled one.

Scenes: the bundled 1024 px aerial scene mirrored into a 4096^2 and a 16384^2 tiled GeoTIFF
(512 px blocks, deflate; mirroring keeps the texture continuous across copies). ROIs: squares of
256, 1024, 2048 (4096^2 scene) and 4096 px (16384^2 scene), centred on a mixed place (PLACE). Each edit (regenerate, fast
preset, the library call ``edit_scene``) runs in its own process so that its peak RSS (VmHWM) is
its own. Printed against targets:
  seconds (train + sample + write) and the sampling seconds,
  seconds per megapixel of ROI (total and sampling),
  peak RSS (VmHWM, GB),
  luminance detail ratio inside the ROI against the ring around it (eval/metrics.py): no blur;
  and the colour detail ratio (no target here; the realism issue's is <= 1.3): colour speckle.

Targets (2 threads): a 4096 px ROI at native resolution in <= 20 min with peak RSS <= 2.5 GB;
seconds per megapixel flat (within 1.3x) from 1024 to 4096 px; luminance ratio >= 0.8 at every size.

--many N ... edits N ROIs of 128 px spread over the 16384^2 mosaic in one scene (each count in
its own process) and prints total seconds, trainings run (from the editor's record of models),
windows and sampling seconds; target: the largest count in <= 2x the time of one ROI plus its
samplings. --scope scene serves all windows with one model (the option ``model_scope``).

Models are cached in WORK/cache between runs (a rerun times sampling only, and says so); --fresh
trains every size anew.

--crops DIR writes, per ROI, before | after at 2x around the tile overlap nearest the ROI's
centre (where a tile seam would show).

Usage:
  .venv/bin/python scripts/bench/scale.py --sizes 256 1024          # the quick cases
  .venv/bin/python scripts/bench/scale.py --fresh                   # all four, each trained anew (long)
  .venv/bin/python scripts/bench/scale.py --sizes 1024 --set tile=0 max_side=1024 --crops out/crops
  .venv/bin/python scripts/bench/scale.py --many 1 5 20 --scope scene   # many ROIs, one model
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"
SIZES = (256, 1024, 2048, 4096)
# ROI centres, from the middle of the mosaic (a copy of the scene that is not mirrored): a mixed
# place of the bundled scene (fields, trees, a road), not the snow at its corner where copies meet.
PLACE = (620, 560)
TARGET_MINUTES, TARGET_RSS_GB, TARGET_FLAT, TARGET_LUMINANCE = 20.0, 2.5, 1.3, 0.8
MANY_SIDE, MANY_SCENE = 128, 16384


def scene_side(roi: int) -> int:
    """The mosaic an ROI of ``roi`` px is placed on."""
    return 4096 if roi <= 2048 else 16384


def build_mosaic(path: Path, side: int) -> Path:
    """The bundled scene mirrored into a ``side`` x ``side`` tiled GeoTIFF, written block by block
    under a temporary name (kept for later runs)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    if path.exists():
        return path
    with rasterio.open(SCENE) as src:
        tile = src.read()
        profile = src.profile
        t = src.transform
    n = tile.shape[1]
    flips = {(0, 0): tile, (0, 1): tile[:, :, ::-1], (1, 0): tile[:, ::-1, :], (1, 1): tile[:, ::-1, ::-1]}
    profile.update(width=side, height=side, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   predictor=2, photometric="rgb", transform=Affine(t.a, t.b, t.c, t.d, t.e, t.f))
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, side, n):
            for c in range(0, side, n):
                dst.write(flips[(r // n % 2, c // n % 2)], window=Window(c, r, n, n))
    tmp.rename(path)
    return path


def write_aoi(scene: Path, roi: int, path: Path) -> None:
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        r0, c0 = src.height // 2 + PLACE[0] - roi // 2, src.width // 2 + PLACE[1] - roi // 2
        x0, y1 = src.transform * (c0, r0)
        x1, y0 = src.transform * (c0 + roi, r0 + roi)
        crs = src.crs
    gpd.GeoDataFrame({"name": [f"roi-{roi}"]}, geometry=[box(x0, y0, x1, y1)], crs=crs).to_file(path, driver="GPKG")


def write_many_aoi(scene: Path, count: int, path: Path) -> None:
    """``count`` squares of MANY_SIDE px, one at the centre of each cell of a grid laid over the
    scene (the grid's last row may be partly empty), so the ROIs are spread over all of it."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        per_row = math.ceil(math.sqrt(count))
        rows = math.ceil(count / per_row)
        boxes = []
        for k in range(count):
            r, c = k // per_row, k % per_row
            r0 = int((r + 0.5) * src.height / rows) - MANY_SIDE // 2
            c0 = int((c + 0.5) * src.width / per_row) - MANY_SIDE // 2
            x0, y1 = src.transform * (c0, r0)
            x1, y0 = src.transform * (c0 + MANY_SIDE, r0 + MANY_SIDE)
            boxes.append(box(x0, y0, x1, y1))
        crs = src.crs
    gpd.GeoDataFrame({"name": [f"roi-{k}" for k in range(count)]}, geometry=boxes, crs=crs).to_file(
        path, driver="GPKG")


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def seam_crop(before: np.ndarray, after: np.ndarray, roi: np.ndarray, tile: int, path: Path, zoom: int = 2,
              half: int = 96) -> None:
    """Before | after at ``zoom`` x around the tile overlap nearest the ROI's centre."""
    from PIL import Image

    from rs_geo_edit.model.tiling import tile_grid

    rows, cols = np.nonzero(roi)
    cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    h, w = roi.shape
    if tile > 0 and max(h, w) > tile:   # the middle of the overlap of two neighbouring tiles
        starts, size = tile_grid(w, tile, 64)
        mids = [(a + size + b) // 2 for a, b in zip(starts[:-1], starts[1:])]
        cx = min(mids, key=lambda m: abs(m - cx))
        starts, size = tile_grid(h, tile, 64)
        mids = [(a + size + b) // 2 for a, b in zip(starts[:-1], starts[1:])]
        cy = min(mids, key=lambda m: abs(m - cy)) if mids else cy
    r0, c0 = max(0, cy - half), max(0, cx - half)
    panels = []
    for img in (before, after):
        crop = np.clip(img[:3, r0:r0 + 2 * half, c0:c0 + 2 * half], 0, 255).astype(np.uint8).transpose(1, 2, 0)
        panels.append(np.kron(crop, np.ones((zoom, zoom, 1), np.uint8)))
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(path)


def parse_value(text: str):
    """A ``--set`` value: an int, a float or a word (``scope=scene``)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def child(args) -> dict:
    """One edit in this process; returns its figures."""
    import rasterio
    import torch
    from affine import Affine

    from rs_geo_edit.config import OutputConfig, WindowConfig, make_config
    from rs_geo_edit.eval.metrics import detail_ratios
    from rs_geo_edit.geo.raster import read_window, validity_mask
    from rs_geo_edit.geo.windows import roi_labels
    from rs_geo_edit.pipeline import edit_scene, make_editor, plan_scene

    torch.set_num_threads(args.threads)
    model, windows = {}, {}
    for item in args.set:
        key, value = item.split("=", 1)
        target = windows if key in ("max_side", "margin_frac") else model
        target[key] = parse_value(value)
    wcfg = WindowConfig(margin_frac=windows.get("margin_frac", args.margin_frac),
                        max_side=int(windows.get("max_side", 0)))
    config = make_config("fast", model_overrides=model, mode="regenerate", seed=args.seed, threads=args.threads,
                         cache_dir=args.cache_dir, windows=wcfg, output=OutputConfig(overwrite=True, provenance=False))
    editor = make_editor(config)
    t0 = time.perf_counter()
    edit_scene(args.scene, args.aoi, args.out, config, editor=editor)
    total = time.perf_counter() - t0
    rss = peak_rss_gb()   # the edit's own peak, before the bench's measuring below
    if args.many:
        return {"total_s": round(total, 1), "rss_gb": round(rss, 3), "windows": len(editor.windows),
                "trainings": sum(1 for m in editor.models if m.get("trained")),
                "train_s": round(sum(m.get("train_s") or 0.0 for m in editor.models), 1),
                "sample_s": round(sum(w.get("sample_s") or 0.0 for w in editor.windows), 1)}
    stats = editor.windows[0]
    plan = plan_scene(args.scene, args.aoi, config)
    ew = plan.windows[0]
    with rasterio.open(args.scene) as src, rasterio.open(args.out) as out:
        before = read_window(src, ew.window)
        after = read_window(out, ew.window)
        valid = validity_mask(src, ew.window, before)
    roi = roi_labels(ew, Affine(*plan.transform[:6])) > 0
    figures = detail_ratios(after, before, roi, valid, plan.rgb)
    if args.crops:
        seam_crop(before, after, roi, config.model.tile if ew.scale == 1 else 0, args.crops)
    return {"window": [int(ew.window.height), int(ew.window.width)], "scale": ew.scale,
            "train_s": stats.get("train_s"), "sample_s": stats.get("sample_s"), "total_s": round(total, 1),
            "luminance": figures["luminance"], "colour": figures.get("colour", float("nan")), "rss_gb": round(rss, 3)}


def run_child(cmd: list[str], label) -> dict | None:
    """Run one edit in its own process (its peak RSS is its own); its figures, or None after
    printing why it failed."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{label:>5} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_json(path: Path | None, rows) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="ROI sides, pixels")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model overrides and max_side / margin_frac, e.g. steps=500 tile=1024 max_side=1024")
    parser.add_argument("--margin-frac", type=float, default=0.125,
                        help="context margin per ROI side as a fraction of the ROI (a 4096 px ROI gets 512 px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rs-scale-bench",
                        help="mosaics and outputs (the mosaics are kept for later runs)")
    parser.add_argument("--crops", type=Path, default=None, help="write before|after PNGs at 2x here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true",
                        help="train every size anew (a fresh model cache each) instead of reusing WORK/cache")
    parser.add_argument("--child", nargs=4, metavar=("SCENE", "AOI", "OUT", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--many", nargs="+", type=int, default=None, metavar="N",
                        help=f"instead of --sizes: N ROIs of {MANY_SIDE} px spread over the {MANY_SCENE}^2 mosaic")
    parser.add_argument("--scope", choices=["window", "scene"], default="window",
                        help="model scope of the --many edits (window: one model per window)")
    parser.add_argument("--crop-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-many", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        scene, aoi, out, cache = map(Path, args.child)
        ns = argparse.Namespace(scene=scene, aoi=aoi, out=out, cache_dir=cache, crops=args.crop_file,
                                set=args.set, margin_frac=args.margin_frac, threads=args.threads, seed=args.seed,
                                many=args.child_many)
        print(json.dumps(child(ns)))
        return 0
    if args.many:
        return many(args)

    args.work.mkdir(parents=True, exist_ok=True)
    if args.crops:
        args.crops.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'roi':>5} {'window':>11} {'scale':>5} {'train':>6} {'sample':>7} {'total':>7} {'s/MP':>6} "
          f"{'smp/MP':>6} {'RSS GB':>6} {'lum':>5} {'colour':>6}")
    for roi in args.sizes:
        side = scene_side(roi)
        scene = build_mosaic(args.work / f"mosaic-{side}.tif", side)
        aoi = args.work / f"roi-{roi}.gpkg"
        write_aoi(scene, roi, aoi)
        cache = Path(tempfile.mkdtemp(prefix=f"cache-{roi}-", dir=args.work)) if args.fresh else args.work / "cache"
        cmd = [sys.executable, __file__, "--child", str(scene), str(aoi), str(args.work / f"out-{roi}.tif"),
               str(cache), "--threads", str(args.threads), "--seed", str(args.seed),
               "--margin-frac", str(args.margin_frac), "--set", *args.set]
        if args.crops:
            cmd += ["--crop-file", str(args.crops / f"roi-{roi}.png")]
        figures = run_child(cmd, roi)
        if figures is None:
            continue
        row = {"roi": roi, **figures}
        mp = roi * roi / 1e6
        row["s_per_mp"], row["sample_s_per_mp"] = row["total_s"] / mp, row["sample_s"] / mp
        rows.append(row)
        train = f"{row['train_s']:6.0f}" if row["train_s"] else f"{'cached':>6}"
        print(f"{roi:>5} {'x'.join(map(str, row['window'])):>11} {row['scale']:5.2f} {train} "
              f"{row['sample_s']:7.0f} {row['total_s']:7.0f} {row['s_per_mp']:6.0f} {row['sample_s_per_mp']:6.0f} "
              f"{row['rss_gb']:6.2f} {row['luminance']:5.2f} {row.get('colour', float('nan')):6.2f}", flush=True)
    print_targets(rows)
    write_json(args.json, rows)


def print_targets(rows: list[dict]) -> None:
    print("\ntargets:")
    by = {r["roi"]: r for r in rows}
    if 4096 in by:
        r = by[4096]
        minutes = (f"{r['total_s'] / 60:.1f} min {'ok' if r['total_s'] <= TARGET_MINUTES * 60 else 'MISS'}"
                   if r["train_s"] else "not measured (cached model: run with --fresh)")
        print(f"  4096 px ROI <= {TARGET_MINUTES:.0f} min: {minutes}; peak RSS <= {TARGET_RSS_GB} GB: "
              f"{r['rss_gb']:.2f} {'ok' if r['rss_gb'] <= TARGET_RSS_GB else 'MISS'}")
    large = [by[s] for s in (1024, 2048, 4096) if s in by]
    if len(large) > 1:
        for key, what in (("s_per_mp", "total"), ("sample_s_per_mp", "sampling")):
            if key == "s_per_mp" and len({bool(r["train_s"]) for r in large}) > 1:
                print(f"  s/MP of the {what} flat from 1024 px: not comparable (some sizes used a cached model: "
                      "run with --fresh)")
                continue
            spread = max(r[key] for r in large) / min(r[key] for r in large)
            print(f"  s/MP of the {what} flat from 1024 px (max/min <= {TARGET_FLAT}): {spread:.2f} "
                  f"{'ok' if spread <= TARGET_FLAT else 'MISS'}")
    for r in rows:
        lum = r["luminance"]
        print(f"  luminance >= {TARGET_LUMINANCE} at {r['roi']} px: {lum:.2f} "
              f"{'ok' if np.isfinite(lum) and lum >= TARGET_LUMINANCE else 'MISS'}")
    return 0


def many(args) -> int:
    """The --many rows: each ROI count edited in its own process with a fresh model cache."""
    args.work.mkdir(parents=True, exist_ok=True)
    scene = build_mosaic(args.work / f"mosaic-{MANY_SCENE}.tif", MANY_SCENE)
    print(f"{'rois':>5} {'windows':>7} {'trainings':>9} {'train':>6} {'sample':>7} {'total':>7} {'RSS GB':>6}  "
          f"(scope {args.scope})")
    rows = {}
    for count in args.many:
        aoi = args.work / f"many-{count}.gpkg"
        write_many_aoi(scene, count, aoi)
        cache = Path(tempfile.mkdtemp(prefix=f"many-{count}-", dir=args.work))
        cmd = [sys.executable, __file__, "--child", str(scene), str(aoi), str(args.work / f"many-{count}.tif"),
               str(cache), "--child-many", "--threads", str(args.threads), "--seed", str(args.seed),
               "--margin-frac", str(args.margin_frac), "--set", f"scope={args.scope}", *args.set]
        row = run_child(cmd, count)
        if row is None:
            continue
        rows[count] = row
        print(f"{count:>5} {row['windows']:>7} {row['trainings']:>9} {row['train_s']:6.0f} {row['sample_s']:7.0f} "
              f"{row['total_s']:7.0f} {row['rss_gb']:6.2f}", flush=True)
    if 1 in rows and max(rows) > 1:
        one, most = rows[1], rows[max(rows)]
        budget = 2 * one["total_s"] + most["sample_s"]
        print(f"\ntarget: {max(rows)} ROIs <= 2 x one ROI + their samplings = {budget:.0f} s: "
              f"{most['total_s']:.0f} s {'ok' if most['total_s'] <= budget else 'MISS'}")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

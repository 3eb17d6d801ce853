"""Realism bench: texture detail ratios, seam ratio and seconds of edits on the bundled scene.

Each case is an ROI (a square of a given side, or an irregular polygon) at a named place of the
bundled aerial scene (forest, snow field, road, mixed), or several ROIs in one AOI (``four-128``:
a 128 px square at each place, one row per window; with ``--scope scene`` one model serves all). For every case and mode the bench runs the
real library call (``edit_scene``, fast preset unless --set overrides it), then measures, on the
written GeoTIFF against the source:
  luminance and colour detail ratios (eval/metrics.py), seam ratio (eval/seams.py),
  seconds: train + sample + write (a cached re-edit is timed with --reedit),
  donor (copy mode): how much of the pasted material shows, 0 (the source) to 1 (the donor),
  src lum: the luminance figure of the unedited scene itself (its ROI against its ring),
and prints them against the targets (donor has none: it tells a paste that fades from one that
shows). --crops DIR writes before/after crops at 2x zoom per case.

Targets (fast preset, 2 threads): luminance in [0.8, 1.2], colour <= 1.3, seam <= 1.1;
<= 180 s for ROIs up to 128 px, <= 480 s for 450 px; cached re-edit <= 20 s for 128 px.

Usage:
  .venv/bin/python scripts/bench/quality.py                       # every case, regenerate + copy
  .venv/bin/python scripts/bench/quality.py --cases forest-128 road-300 --modes regenerate \
      --set steps=2000 --crops out/crops --json out/quality.json
  .venv/bin/python scripts/bench/quality.py --cases four-128 --modes regenerate --scope scene
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"

# name -> (centre row, centre col, side px or "polygon"); places picked on the bundled scene
PLACES = {"forest": (820, 240), "snow": (200, 460), "road": (300, 640), "mixed": (620, 560)}
CASES = {
    "forest-64": ("forest", 64), "forest-128": ("forest", 128), "snow-128": ("snow", 128),
    "road-128": ("road", 128), "mixed-64": ("mixed", 64), "road-300": ("road", 300),
    "snow-300": ("snow", 300), "mixed-450": ("mixed", 450), "forest-poly": ("forest", "polygon"),
    "snow-poly": ("snow", "polygon"), "four-128": ("four", 128),
}
DEFAULT_CASES = ["forest-64", "forest-128", "snow-128", "road-128", "mixed-64", "road-300", "mixed-450",
                 "forest-poly", "snow-poly"]
TARGETS = {"luminance": (0.8, 1.2), "colour": (0.0, 1.3), "seam": (0.0, 1.1)}


def case_geometries(case: str, transform, height: int, width: int) -> list:
    """The case's ROI polygons in the scene CRS."""
    place, side = CASES[case]
    places = list(PLACES) if place == "four" else [place]
    return [_roi_polygon(PLACES[p], side, transform, height, width) for p in places]


def _roi_polygon(centre, side, transform, height: int, width: int):
    from shapely.geometry import Polygon, box

    row, col = centre
    if side == "polygon":   # an irregular blob about 180 px across, with concave parts
        angles = np.linspace(0, 2 * math.pi, 23, endpoint=False)
        radii = 90 * (1 + 0.25 * np.sin(3 * angles) + 0.15 * np.cos(5 * angles + 1))
        pts = [(col + r * math.cos(a), row + r * math.sin(a)) for a, r in zip(angles, radii)]
    else:
        half = side / 2
        r0, c0 = max(0, round(row - half)), max(0, round(col - half))
        r0, c0 = min(r0, height - side), min(c0, width - side)
        pts = list(box(c0, r0, c0 + side, r0 + side).exterior.coords)
    return Polygon([transform * p for p in pts])


def write_aoi(case: str, path: Path) -> None:
    import geopandas as gpd
    import rasterio

    with rasterio.open(SCENE) as src:
        geoms = case_geometries(case, src.transform, src.height, src.width)
        crs = src.crs
    gpd.GeoDataFrame({"name": [case] * len(geoms), "role": ["target"] * len(geoms)}, geometry=geoms,
                     crs=crs).to_file(path, driver="GPKG")


def donor_square(case: str, height: int, width: int) -> tuple[int, int, int]:
    """Copy mode's donor for ``case``: (top row, left col, side) of a square of the ROI's size
    at another place of the scene (``height`` x ``width`` px)."""
    place, side = CASES[case]
    side = 180 if side == "polygon" else side
    row, col = PLACES[{"forest": "mixed", "snow": "road", "road": "snow", "mixed": "forest"}[place]]
    return min(max(0, row - side // 2), height - side), min(max(0, col - side // 2), width - side), side


def write_copy_source(case: str, path: Path) -> None:
    """Copy mode's source: a square of the ROI's size from another place of the scene."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(SCENE) as src:
        r0, c0, side = donor_square(case, src.height, src.width)
        geom = box(*(src.transform * (c0, r0 + side)), *(src.transform * (c0 + side, r0)))
        crs = src.crs
    target = gpd.read_file(path)
    source = gpd.GeoDataFrame({"name": ["donor"], "role": ["source"]}, geometry=[geom], crs=crs)
    gpd.pd.concat([target, source]).to_file(path, driver="GPKG")


def measure(output: Path, aoi: Path, config) -> list[dict]:
    """Realism figures of each window of ``output`` against the source."""
    import rasterio
    from affine import Affine

    from rs_geo_edit.eval.metrics import realism
    from rs_geo_edit.geo.raster import read_window, validity_mask
    from rs_geo_edit.geo.windows import roi_labels
    from rs_geo_edit.pipeline import plan_scene

    plan = plan_scene(SCENE, aoi, config)
    figures = []
    for ew in plan.windows:
        with rasterio.open(SCENE) as src, rasterio.open(output) as out:
            before = read_window(src, ew.window).astype(np.float64)
            after = read_window(out, ew.window).astype(np.float64)
            valid = validity_mask(src, ew.window, before)
        roi = roi_labels(ew, Affine(*plan.transform[:6])) > 0
        itself = realism(before, before, roi, valid, plan.rgb)   # the scene's own ROI against its ring
        figures.append({**realism(after, before, roi, valid, plan.rgb), "source_luminance": itself["luminance"],
                        "window": [int(ew.window.height), int(ew.window.width)], "index": ew.index,
                        "before": before, "after": after, "roi": roi})
    return figures


def donor_share(fig: dict, case: str, config) -> float:
    """Copy mode: how much of the donor shows, from 0 (the source unchanged) to 1 (the output
    equals the donor), weighted by the paste's weight (:func:`copy_ramp`: 0 on the ROI's rim,
    1 in its core), on the band mean blurred by 2 px so that texture does not count, only what
    material lies there: 1 - sum w|output - donor| / sum w|source - donor|."""
    import rasterio
    from scipy.ndimage import gaussian_filter

    from rs_geo_edit.editors.copy import copy_ramp
    from rs_geo_edit.imaging import resize
    from rs_geo_edit.pipeline import window_seed

    roi = fig["roi"]
    with rasterio.open(SCENE) as src:
        r0, c0, side = donor_square(case, src.height, src.width)
        donor = src.read(window=((r0, r0 + side), (c0, c0 + side))).astype(np.float32)
    rows, cols = np.nonzero(roi)
    placed = np.zeros_like(fig["before"], dtype=np.float32)
    placed[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1] = resize(
        donor, (rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()), "lanczos")
    band = config.blend.band_px
    weight = copy_ramp(roi, band, 2 * band, config.model.copy_wiggle, window_seed(config.seed, fig["index"]))

    def smooth(img):
        return gaussian_filter(img[:3].mean(axis=0), 2)

    d, s, o = smooth(placed), smooth(fig["before"]), smooth(fig["after"])
    return float(1 - (weight * np.abs(o - d)).sum() / max((weight * np.abs(s - d)).sum(), 1e-9))


def save_crops(fig: dict, path: Path, zoom: int = 2, max_side: int = 320) -> None:
    """Before | after around the ROI, at ``zoom`` x (nearest neighbour), with the ROI outline
    left out so the edge is judged on the pixels alone. Where that crop shows only the ROI's
    middle, the whole ROI with a 40 px margin is also written at 1x (``*-full.png``): its
    edges are where a square would show."""
    roi = fig["roi"]
    rows, cols = np.nonzero(roi)
    cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    whole = max(np.ptp(rows), np.ptp(cols)) // 2 + 40
    half = min(max_side // zoom // 2 * 2, whole)
    _save_pair(fig, path, cy, cx, half, zoom)
    if half < whole:
        _save_pair(fig, path.with_name(path.stem + "-full.png"), cy, cx, whole, 1)


def _save_pair(fig: dict, path: Path, cy: int, cx: int, half: int, zoom: int) -> None:
    from PIL import Image

    roi = fig["roi"]
    r0, c0 = max(0, cy - half), max(0, cx - half)
    r1, c1 = min(roi.shape[0], cy + half), min(roi.shape[1], cx + half)
    tiles = []
    for img in (fig["before"], fig["after"]):
        crop = np.clip(img[:3, r0:r1, c0:c1], 0, 255).astype(np.uint8).transpose(1, 2, 0)
        tiles.append(np.kron(crop, np.ones((zoom, zoom, 1), np.uint8)))
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([tiles[0], gap, tiles[1]], axis=1)).save(path)


def verdict(name: str, value: float) -> str:
    lo, hi = TARGETS[name]
    return "ok" if np.isfinite(value) and lo <= value <= hi else "MISS"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=sorted(CASES))
    parser.add_argument("--modes", nargs="+", default=["regenerate", "copy"], choices=["regenerate", "copy"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model/blend overrides, e.g. steps=2000 blend=poisson feather=24")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scope", choices=["window", "scene"], default="window",
                        help="model scope: one model per window, or one per scene (see --cases four-128)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: a fresh temp folder)")
    parser.add_argument("--reedit", action="store_true", help="also time a cached re-edit with another seed")
    parser.add_argument("--crops", type=Path, default=None, help="write before|after PNGs at 2x here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from rs_geo_edit.config import BlendConfig, OutputConfig, make_config
    from rs_geo_edit.pipeline import edit_scene, make_editor

    torch.set_num_threads(args.threads)
    model_over, blend_over = {}, {}
    for item in args.set:
        key, value = item.split("=", 1)
        if key in ("blend", "feather", "color_match", "detail_match"):
            blend_over[{"blend": "mode", "feather": "band_px"}.get(key, key)] = value
        else:
            model_over[key] = float(value) if "." in value or "e" in value else int(value)
    blend = BlendConfig()
    for key, value in blend_over.items():
        setattr(blend, key, value == "1" if isinstance(getattr(blend, key), bool) else type(getattr(blend, key))(value))
    tmp = Path(tempfile.mkdtemp(prefix="rs-quality-"))
    cache = args.cache_dir or tmp / "cache"
    if args.crops:
        args.crops.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'case':<12} {'mode':<10} {'window':>9} {'lum':>6} {'':4} {'colour':>6} {'':4} {'seam':>5} {'':4} "
          f"{'train':>6} {'sample':>6} {'total':>6}  {'reedit':>6}  {'donor':>5}  {'src lum':>6}")
    for case in args.cases:
        for mode in args.modes:
            if mode == "copy" and CASES[case][0] == "four":
                continue   # copy takes one donor per target ROI; the multi-ROI case is about the model
            aoi = tmp / f"{case}-{mode}.gpkg"
            write_aoi(case, aoi)
            if mode == "copy":
                write_copy_source(case, aoi)
            config = make_config("fast", model_overrides=model_over, mode=mode, seed=args.seed,
                                 threads=args.threads, cache_dir=cache, blend=blend,
                                 output=OutputConfig(overwrite=True, provenance=False))
            config.model.scope = args.scope
            out = tmp / f"{case}-{mode}.tif"
            editor = make_editor(config)
            t0 = time.perf_counter()
            edit_scene(SCENE, aoi, out, config, editor=editor)
            total = time.perf_counter() - t0
            train_s = sum(m.get("train_s", 0.0) for m in editor.models)
            reedit = float("nan")
            if args.reedit:
                config.seed = args.seed + 1
                t0 = time.perf_counter()
                edit_scene(SCENE, aoi, tmp / f"{case}-{mode}-re.tif", config, editor=make_editor(config))
                reedit = time.perf_counter() - t0
            figures = measure(out, aoi, config)
            for k, (fig, stats) in enumerate(zip(figures, editor.windows)):
                name = case if len(figures) == 1 else f"{case}#{k}"
                if args.crops:
                    save_crops(fig, args.crops / f"{name}-{mode}.png")
                share = donor_share(fig, case, config) if mode == "copy" else float("nan")
                row = {"case": name, "mode": mode, "scope": args.scope, "window": fig["window"], "donor": share,
                       "luminance": fig["luminance"], "colour": fig["colour"], "seam": fig["seam"],
                       "source_luminance": fig["source_luminance"],
                       "train_s": round(train_s, 1), "trainings": len(editor.models),
                       "sample_s": stats.get("sample_s"), "total_s": round(total, 1), "reedit_s": round(reedit, 1),
                       "overrides": args.set}
                rows.append(row)
                print(f"{name:<12} {mode:<10} {'x'.join(map(str, fig['window'])):>9} "
                      f"{fig['luminance']:6.2f} {verdict('luminance', fig['luminance']):4} "
                      f"{fig['colour']:6.2f} {verdict('colour', fig['colour']):4} "
                      f"{fig['seam']:5.2f} {verdict('seam', fig['seam']):4} "
                      f"{train_s:6.1f} {stats.get('sample_s', 0):6.1f} {total:6.1f}  {reedit:6.1f}  {share:5.2f}"
                      f"  {fig['source_luminance']:6.2f}",
                      flush=True)
            if len(figures) > 1:
                print(f"{case}: {len(editor.models)} training(s), {train_s:.1f} s training, {total:.1f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    misses = sum(verdict(k, r[k]) == "MISS" for r in rows for k in TARGETS)
    print(f"\n{len(rows)} edits, {misses} figure(s) off target")
    return 0


if __name__ == "__main__":
    sys.exit(main())

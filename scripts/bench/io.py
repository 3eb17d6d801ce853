"""I/O benchmark: writing an edited scene vs a plain rasterio windowed copy, and peak memory.

For generated scenes of 5000^2 and 20000^2 x 3 uint8 (tiled 512, deflate) with 5 ROIs and a
trivial editor (colour inversion), prints
  (a) edited-scene write time / plain rasterio block-by-block copy time, same run, same machine;
  (b) peak RSS of the whole edit (each scene in its own process), to show it stays flat.
Targets: ratio <= 1.25, peak RSS <= 1.5 GB and flat as the scene grows.

Usage: .venv/bin/python scripts/bench/io.py [--sizes 5000 20000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scene(path: Path, size: int) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(400_000, 5_200_000, 0.5, 0.5),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (3, 512, 512), dtype=np.uint8)
    yy, xx = np.mgrid[0:512, 0:512]
    with rasterio.open(path, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            r, c = int(window.row_off), int(window.col_off)
            h, w = int(window.height), int(window.width)
            smooth = ((np.sin((yy + r) / 37.0) + np.cos((xx + c) / 53.0)) * 60 + 128).astype(np.uint8)
            block = (base // 4 + smooth[None]).astype(np.uint8)[:, :h, :w]
            dst.write(block, window=Window(c, r, w, h))


def plain_copy(src_path: Path, dst_path: Path) -> float:
    import rasterio

    t0 = time.perf_counter()
    with rasterio.open(src_path) as src:
        with rasterio.open(dst_path, "w", **src.profile) as dst:
            for _, window in dst.block_windows(1):
                dst.write(src.read(window=window), window=window)
    return time.perf_counter() - t0


def write_aoi(scene: Path, path: Path, size: int) -> None:
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        t = src.transform
        geoms = []
        for k in range(5):
            c, r = int(size * (0.1 + 0.17 * k)), int(size * (0.15 + 0.15 * k))
            x0, y0 = t @ (c, r)
            x1, y1 = t @ (c + 200, r + 150)
            geoms.append(box(x0, y1, x1, y0))
    gpd.GeoDataFrame(geometry=geoms, crs="EPSG:32633").to_file(path, engine="pyogrio")


def child(scene: str, aoi: str, out: str) -> None:
    """Run one edit in this process and print its timings and peak RSS as JSON."""
    from rs_geo_edit.config import make_config
    from rs_geo_edit.pipeline import edit_scene

    class Invert:
        def edit(self, request, progress):
            return -request.image

        def describe(self):
            return {"name": "invert-bench"}

    result = edit_scene(scene, aoi, out, make_config(), editor=Invert())
    print(json.dumps({"timings": result.record["timings"], "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM is reset by exec; ru_maxrss is not (it would report the
    parent's peak when the parent is larger)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rs-geo-edit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        scene, aoi = work / f"scene_{size}.tif", work / f"aoi_{size}.gpkg"
        if not scene.exists():
            print(f"generating {size}x{size}x3 ...", flush=True)
            make_scene(scene, size)
            write_aoi(scene, aoi, size)
        copy_path, out = work / f"copy_{size}.tif", work / f"edited_{size}.tif"
        for p in (copy_path, out, out.with_suffix(".json")):
            p.unlink(missing_ok=True)
        baseline = plain_copy(scene, copy_path)
        proc = subprocess.run([sys.executable, __file__, "--child", str(scene), str(aoi), str(out)],
                              capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        write_s = stats["timings"]["write_s"]
        rows.append((size, baseline, write_s, write_s / baseline, stats["timings"]["total_s"], stats["peak_rss_mb"]))
        for p in (copy_path, out, out.with_suffix(".json")):
            p.unlink(missing_ok=True)
    print(f"{'scene':>12} {'plain copy s':>13} {'edited write s':>15} {'ratio':>6} {'edit total s':>13} {'peak RSS MB':>12}")
    for size, base, write_s, ratio, total, rss in rows:
        print(f"{size:>6}^2 x3 {base:>13.2f} {write_s:>15.2f} {ratio:>6.2f} {total:>13.2f} {rss:>12.0f}")
    print("targets: ratio <= 1.25; peak RSS <= 1536 MB and flat as the scene grows")


if __name__ == "__main__":
    main()

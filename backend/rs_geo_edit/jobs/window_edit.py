"""The worker's half of a remote edit: edit each uploaded window, keep the box of changed pixels.

Each upload is the whole window of the client's plan (context margin included), so it is edited
as a scene of its own with ``edit_scene``: the plan finds the same window (the margin is made to
reach the file's edges), the blend band stays inside it, and the window's seed is the one the
local edit would give it, so the client's output is the bytes a local edit writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import ProgressCallback, ProgressEvent
from .transfer import result_dir

WHOLE_FILE_MARGIN = 1 << 30  # pixels: any ROI's window grows to the edges of the uploaded window


class _SeededEditor:
    """The pipeline's editor with the seed and index the window has in the client's scene."""

    def __init__(self, editor, seed: int, index: int):
        self.editor, self.seed, self.index = editor, seed, index

    def edit(self, request, progress):
        window = dataclasses.replace(request.window, index=self.index)
        return self.editor.edit(dataclasses.replace(request, seed=self.seed, window=window), progress)

    def describe(self) -> dict:
        return self.editor.describe()


class _Span:
    """Progress of one window's edit mapped into its share [lo, hi] of the job; ``check`` passes
    the job's cancel check through, so a cancel lands between steps as in a local job."""

    def __init__(self, progress: ProgressCallback, lo: float, hi: float, index: int):
        self.progress, self.lo, self.hi, self.index = progress, lo, hi, index

    def __call__(self, event: ProgressEvent) -> None:
        self.progress(dataclasses.replace(event, fraction=self.lo + (self.hi - self.lo) * event.fraction,
                                          window=self.index))

    def check(self) -> None:
        check = getattr(self.progress, "check", None)
        if check is not None:
            check()


def _write_aoi(features: list[dict], crs, path: Path) -> None:
    """The window's ROIs as a GeoPackage in the window's CRS (binary coordinates: no rounding)."""
    import geopandas as gpd

    gpd.GeoDataFrame.from_features(features, crs=crs).to_file(path, driver="GPKG", engine="pyogrio")


def _changed_box(window_path: Path, edited_path: Path, out_path: Path) -> dict[str, Any]:
    """Write the bounding box of the data-band pixels that differ (bit for bit) as a GeoTIFF;
    returns its offsets in window pixels and size (0 x 0 when nothing changed)."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from ..geo.raster import data_bands

    with rasterio.open(window_path) as src, rasterio.open(edited_path) as dst:
        bands = data_bands(src)
        before, after = src.read(bands), dst.read(bands)
        crs, transform = src.crs, src.transform
    unsigned = f"u{before.dtype.itemsize}"
    changed = np.any(before.view(unsigned) != after.view(unsigned), axis=0)
    if not changed.any():
        return {"col": 0, "row": 0, "width": 0, "height": 0, "file": None, "bytes": 0}
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = Window(c0, r0, c1 - c0, r1 - r0)
    floating = np.issubdtype(before.dtype, np.floating)
    profile = {"driver": "GTiff", "width": c1 - c0, "height": r1 - r0, "count": len(bands),
               "dtype": str(before.dtype), "crs": crs, "transform": window_transform(box, transform),
               "compress": "deflate", "predictor": 3 if floating else 2}
    tmp = out_path.with_name(f".{out_path.name}.partial")
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(tmp, "w", **profile) as out:
        out.write(after[:, r0:r1, c0:c1])
    os.replace(tmp, out_path)
    return {"col": c0, "row": r0, "width": c1 - c0, "height": r1 - r0, "file": out_path.name,
            "bytes": out_path.stat().st_size}


def edit_uploaded_windows(job: dict, data_dir: Path, progress: ProgressCallback) -> dict:
    """Edit the uploaded windows of ``job``; writes ``result/manifest.json`` and one GeoTIFF of
    changed pixels per window under the job's folder. Returns the job's result record."""
    import rasterio

    from ..pipeline import edit_scene, make_editor, model_inputs, window_seed
    from ..progress import StageReporter
    from .worker import job_config

    request = job["request"]
    job_dir = Path(data_dir) / "jobs" / job["id"]
    _, _, _, config = job_config(request, job_dir)
    config.windows.margin_px = WHOLE_FILE_MARGIN
    config.windows.merge = True
    config.output = dataclasses.replace(config.output, overwrite=True, cog=False, compress=None, provenance=True)
    out_dir = result_dir(data_dir, job["id"])
    shutil.rmtree(out_dir, ignore_errors=True)  # a retried job starts its results over
    out_dir.mkdir(parents=True)
    editor = make_editor(config)
    windows = sorted(request["windows"], key=lambda w: w["index"])
    paths = {}
    for w in windows:
        index = w["index"]
        window_path = Path(data_dir) / "uploads" / f"{w['upload']}.tif"
        features = [f for f in request["aoi"]["features"] if f["properties"].get("window") == index]
        with rasterio.open(window_path) as src:
            crs = src.crs
        aoi_path = job_dir / f"aoi-{index}.gpkg"
        aoi_path.unlink(missing_ok=True)
        _write_aoi(features, crs, aoi_path)
        paths[index] = (window_path, aoi_path)
    lo = 0.0
    if getattr(editor, "shares_model", False) and len(windows) > 1:
        # The scene model a local edit of the whole scene trains: the same windows, the same order.
        inputs = [(index, image, valid) for index, (window_path, aoi_path) in paths.items()
                  for _, image, valid in model_inputs(window_path, aoi_path, config)]
        editor.prepare(inputs, StageReporter(_Span(progress, 0.0, 0.45, None), "train", 0.0, 1.0))
        lo = 0.45
    share = (1.0 - lo) / len(windows)
    entries = []
    for k, w in enumerate(windows):
        index = w["index"]
        window_path, aoi_path = paths[index]
        edited = job_dir / f"edited-{index}.tif"
        result = edit_scene(scene=window_path, aoi=aoi_path, output=edited, config=config,
                            editor=_SeededEditor(editor, window_seed(config.seed, index), index),
                            progress=_Span(progress, lo + k * share, lo + (k + 1) * share, index))
        box = _changed_box(window_path, edited, out_dir / f"window-{index}.tif")
        record = {**result.record["windows"][0], "index": index}
        entries.append({"index": index, "col_off": w["col_off"] + box.pop("col"),
                        "row_off": w["row_off"] + box.pop("row"), **box, "record": record})
        edited.unlink()
        if result.provenance is not None:
            result.provenance.unlink(missing_ok=True)
    manifest = {"job": job["id"], "windows": entries, "editor": editor.describe()}
    tmp = out_dir / ".manifest.json.partial"
    tmp.write_text(json.dumps(manifest, default=str))
    os.replace(tmp, out_dir / "manifest.json")
    return {"windows": len(entries), "changed_pixels_box": sum(e["width"] * e["height"] for e in entries),
            "result": f"/jobs/{job['id']}/result"}

"""Before/after training pairs for change detection and change captioning (``rs-geo-edit pairs``).

For each target ROI of the AOI and each of ``variants`` seeds (``seed``, ``seed + 1``, ...), a
chip of ``chip`` x ``chip`` pixels centred on the ROI (clamped to the scene; smaller where the
scene is) is cut from the scene and edited with that ROI alone, through :func:`edit_scene` and
any engine. Layout of ``out_dir``::

    pairs.jsonl                      one JSON object per finished pair (see ``make_pairs``)
    <scene>-f<feature>-s<seed>/
        pre.tif                      the chip as it is: source dtype, bands, nodata, metadata
        post.tif                     the edited chip, same grid
        mask.tif                     uint8: 1 edited ROI, 2 changed by the blend band around it, 0 identical
        roi.geojson                  the ROI in the scene CRS, with its prompt
        preview.png                  before | after, with previews=True

A pair folder is built under a hidden temporary name and renamed when complete; ``pairs.jsonl``
is rewritten through a temporary file after each pair. A rerun skips the pairs it lists whose
inputs and parameters are unchanged, so an interrupted run resumes where it stopped; a pair
folder it does not list, or one made from other inputs, is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__
from .config import EditConfig, config_from_dict
from .errors import AOIError, IncompatibleOptions, OutputError, SceneError
from .progress import ProgressCallback, ProgressEvent

RECORDS = "pairs.jsonl"
FILES = ("pre.tif", "post.tif", "mask.tif", "roi.geojson")
MASK_ROI, MASK_BAND = 1, 2
# Parameters that do not change a pair's pixels (or are recorded apart): they never force a redo.
NOT_PIXELS = ("cache_dir", "cache_max_gb", "threads", "device", "seed", "output")


@dataclass
class PairTask:
    id: str
    roi: object
    seed: int
    variant: int
    window: object          # rasterio Window of the chip, scene pixels
    key: str                # hash of the inputs and parameters that make this pair


def chip_window(roi_bbox: tuple[int, int, int, int], chip: int, height: int, width: int):
    """The chip window (scene pixels) centred on an ROI's (row0, col0, row1, col1) box, moved
    inside the scene and no larger than it."""
    from rasterio.windows import Window

    r0, c0, r1, c1 = roi_bbox
    ch, cw = min(chip, height), min(chip, width)
    row = min(max(0, (r0 + r1) // 2 - ch // 2), height - ch)
    col = min(max(0, (c0 + c1) // 2 - cw // 2), width - cw)
    return Window(col, row, cw, ch)


def _key(scene_sha: str, roi, chip: int, seed: int, config: EditConfig) -> str:
    parameters = {k: v for k, v in config.to_dict().items() if k not in NOT_PIXELS}
    inputs = {"scene": scene_sha, "roi": roi.geometry.wkb_hex, "prompt": roi.prompt, "chip": chip, "seed": seed,
              "parameters": parameters}
    if roi.caption is not None:     # a caption is recorded: changing it redoes the pair (keys without one unchanged)
        inputs["caption"] = roi.caption
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_records(out_dir: Path) -> dict[str, dict]:
    """The finished pairs listed in ``out_dir/pairs.jsonl``, by id (empty if there is none)."""
    path = out_dir / RECORDS
    if not path.is_file():
        return {}
    records = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[record["id"]] = record
        except (ValueError, KeyError, TypeError):
            raise OutputError(f"{str(path)!r} line {n} is not a pair record: fix or remove the line, "
                              "or choose another `out_dir`") from None
    return records


def _write_records(out_dir: Path, records: dict[str, dict]) -> None:
    from .files import atomic_path

    with atomic_path(out_dir / RECORDS) as tmp:
        tmp.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in records.values()))


def _finished(out_dir: Path, record: dict) -> bool:
    return all((out_dir / record["id"] / name).is_file() for name in FILES)


def plan_pairs(scene: str | Path, aoi: str | Path, out_dir: Path, config: EditConfig, *, chip: int = 512,
               variants: int = 1, overwrite: bool = False):
    """(scene plan, tasks to run, records of pairs already finished). Refuses, before any work,
    pair folders that are not finished pairs of this run's inputs (unless ``overwrite``)."""
    from affine import Affine

    from .files import sha256_file
    from .geo.windows import pixel_bbox
    from .pipeline import plan_scene

    if chip < 32:
        raise IncompatibleOptions(f"`chip` {chip} is too small: use 32 pixels or more")
    if variants < 1:
        raise IncompatibleOptions("`variants` must be >= 1")
    if config.mode == "copy":
        raise IncompatibleOptions("pairs edit each ROI on its own chip, which copy mode cannot: use regenerate or "
                                  "text (or `engine` instruct)")
    plan = plan_scene(scene, aoi, config)
    transform = Affine(*plan.transform[:6])
    scene_sha = sha256_file(scene)
    records = read_records(out_dir)
    tasks, done = [], []
    for roi in plan.aoi.targets:
        r0, c0, r1, c1 = pixel_bbox(roi.geometry, transform)
        bbox = (max(0, r0), max(0, c0), min(plan.height, r1), min(plan.width, c1))
        window = chip_window(bbox, chip, plan.height, plan.width)
        for variant in range(variants):
            seed = config.seed + variant
            pair_id = f"{Path(scene).stem}-f{roi.feature}-s{seed}"
            key = _key(scene_sha, roi, chip, seed, config)
            record = records.get(pair_id)
            folder = out_dir / pair_id
            finished = record is not None and _finished(out_dir, record)
            if finished and record.get("key") == key and not overwrite:
                done.append(record)
                continue
            if folder.exists() and not overwrite:
                why = ("was made from other inputs or parameters" if finished
                       else f"is not a finished pair listed in {RECORDS}")
                raise OutputError(f"pair folder {str(folder)!r} {why}: pass `overwrite` to redo it, or choose "
                                  "another `out_dir`")
            tasks.append(PairTask(pair_id, roi, seed, variant, window, key))
    return plan, tasks, done


def make_pairs(scene: str | Path, aoi: str | Path, out_dir: str | Path, config: EditConfig, *, chip: int = 512,
               variants: int = 1, previews: bool = False, overwrite: bool = False, editor=None,
               progress: Optional[ProgressCallback] = None) -> list[dict]:
    """Make the before/after pairs of every ROI of ``aoi`` in ``scene`` under ``out_dir``.

    Returns one row per pair: ``{"id", "status", ...}`` with status ``done`` (made now, the row is
    its record), ``complete`` (made by an earlier run) or ``skipped`` (its ROI lies on nodata;
    ``error`` says so). A record holds the scene (path, sha256), CRS, the chip's transform, bounds
    and window (scene pixels), the ROI's feature, the pair's ``instruction`` and ``caption``
    (:func:`describe_pair`), engine, seed, variant, the editor's description, every parameter,
    the files (relative to ``out_dir``) and metrics.
    """
    from .pipeline import make_editor

    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".*.partial-*"):  # what a run killed mid-pair left behind
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    plan, tasks, done = plan_pairs(scene, aoi, out_dir, config, chip=chip, variants=variants, overwrite=overwrite)
    records = read_records(out_dir)
    rows = [{"id": r["id"], "status": "complete"} for r in done]
    if tasks and editor is None:
        editor = make_editor(config)
    total = len(tasks)
    for n, task in enumerate(tasks):
        def report(event: ProgressEvent, n=n, task=task) -> None:
            if progress is not None:
                progress(ProgressEvent("pairs", n, total, (n + event.fraction) / total,
                                       f"{task.id}: {event.stage} {event.message}".strip(), event.window))

        try:
            record = _make_pair(scene, plan, task, out_dir, config, editor, chip, previews, report)
        except (SceneError, AOIError) as exc:  # e.g. the ROI lies on nodata in its chip
            rows.append({"id": task.id, "status": "skipped", "error": str(exc)})
            continue
        records[task.id] = record
        _write_records(out_dir, records)
        rows.append({**record, "status": "done"})
    return rows


def _make_pair(scene, plan, task: PairTask, out_dir: Path, config: EditConfig, editor, chip: int, previews: bool,
               progress) -> dict:
    import geopandas as gpd
    import shapely
    from affine import Affine

    from .files import sha256_file
    from .geo.raster import open_scene, write_chip
    from .geo.windows import window_bounds
    from .pipeline import edit_scene

    data = config.to_dict()
    data.update(seed=task.seed, prompt=None, prompt_field="prompt", layer=None, copy_from=None)
    data["output"] = {**data["output"], "overwrite": False, "provenance": False, "cog": False}
    pair_config = config_from_dict(data)
    final = out_dir / task.id
    tmp = out_dir / f".{task.id}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        with open_scene(scene) as src:
            write_chip(src, task.window, tmp / "pre.tif")
        gpd.GeoDataFrame({"prompt": [task.roi.prompt], "feature": [task.roi.feature]}, geometry=[task.roi.geometry],
                         crs=plan.crs).to_file(tmp / "roi.geojson", driver="GeoJSON", engine="pyogrio")
        result = edit_scene(tmp / "pre.tif", tmp / "roi.geojson", tmp / "post.tif", config=pair_config, editor=editor,
                            progress=progress)
        metrics = _write_mask(tmp, result.record)
        if previews:
            from .geo.preview import render_before_after
            from .pipeline import plan_scene

            render_before_after(tmp / "pre.tif", tmp / "post.tif", plan_scene(tmp / "pre.tif", tmp / "roi.geojson",
                                                                             pair_config), tmp / "preview.png")
        if final.exists():  # only with overwrite (plan_pairs refused it otherwise)
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    transform = Affine(*plan.transform[:6])
    chip_transform = transform * Affine.translation(task.window.col_off, task.window.row_off)
    editor_record = {k: v for k, v in result.record["editor"].items() if k != "windows"}
    files = {name.split(".")[0]: f"{task.id}/{name}" for name in FILES}
    files["preview"] = f"{task.id}/preview.png" if previews else None
    return {
        "id": task.id, "key": task.key,
        "scene": str(Path(scene).resolve()), "scene_sha256": sha256_file(scene),
        "aoi": str(Path(plan.aoi.path).resolve()), "feature": task.roi.feature, **describe_pair(task.roi, config),
        "engine": config.engine, "seed": task.seed, "variant": task.variant,
        "crs": plan.crs, "transform": list(chip_transform)[:6],
        "bounds": list(window_bounds(task.window, transform)),
        "window": {"col_off": int(task.window.col_off), "row_off": int(task.window.row_off),
                   "width": int(task.window.width), "height": int(task.window.height)},
        "chip": chip, "roi_bounds": list(task.roi.geometry.bounds),
        "roi_clipped": not shapely.box(*window_bounds(task.window, transform)).buffer(1e-9 * chip).contains(
            task.roi.geometry),
        "files": files, "metrics": metrics,
        "editor": editor_record, "parameters": pair_config.to_dict(),
        "software": "rs-geo-edit", "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe_pair(roi, config: EditConfig) -> dict:
    """What was asked apart from what describes the target: ``instruction``, the prompt the edit
    read (text mode, or the instruct engine, which reads it in any mode; None otherwise: a
    regenerate edit reads no prompt), and ``caption``, the feature's caption attribute, else for
    a text edit guided by CLIP its prompt (which describes the target), else None."""
    reads_prompt = config.mode == "text" or config.engine == "instruct"
    instruction = roi.prompt if reads_prompt else None
    described = config.mode == "text" and config.engine == "sinddm"
    return {"instruction": instruction, "caption": roi.caption or (roi.prompt if described else None)}


def _write_mask(folder: Path, edit_record: dict) -> dict:
    """``mask.tif`` beside pre/post (1 ROI, 2 blend band, 0 identical) and the pair's metrics."""
    import geopandas as gpd
    import rasterio
    from rasterio.windows import Window

    from .geo.raster import WRITE_ENV, gdal_env
    from .geo.windows import geometry_mask_in_window

    with rasterio.open(folder / "pre.tif") as pre, rasterio.open(folder / "post.tif") as post:
        before, after = pre.read(), post.read()
        valid = pre.dataset_mask() > 0
        roi_geometry = gpd.read_file(folder / "roi.geojson", engine="pyogrio").to_crs(pre.crs).geometry
        roi = geometry_mask_in_window(list(roi_geometry), Window(0, 0, pre.width, pre.height), pre.transform) & valid
        profile = {"driver": "GTiff", "width": pre.width, "height": pre.height, "count": 1, "dtype": "uint8",
                   "crs": pre.crs, "transform": pre.transform, "compress": "deflate"}
    same = np.all((before == after) | (np.isnan(before) & np.isnan(after)) if before.dtype.kind == "f"
                  else before == after, axis=0)
    mask = np.zeros(roi.shape, np.uint8)
    mask[~same] = MASK_BAND
    mask[roi] = MASK_ROI
    with gdal_env(**WRITE_ENV), rasterio.open(folder / "mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
        dst.update_tags(1, VALUES="0: identical to pre.tif, 1: edited ROI, 2: changed by the blend band")
    windows = [w for w in edit_record["windows"] if "skipped" not in w]
    first = windows[0] if windows else {}
    return {"roi_pixels": int(roi.sum()), "changed_pixels": int((~same).sum()),
            "roi_changed_fraction": round(float((~same)[roi].mean()), 5) if roi.any() else None,
            "outside_changed_pixels": int((~same & ~roi).sum()),
            "seam_gradient_ratio": first.get("seam_gradient_ratio"), "boundary_step": first.get("boundary_step"),
            "realism": first.get("realism"), "seconds": first.get("seconds")}


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

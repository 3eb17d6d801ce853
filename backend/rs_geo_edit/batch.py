"""Batch editing: the same edit over many scenes, resumable, on one machine or a Ray cluster.

Input: a manifest (CSV or JSON lines with ``scene, aoi, prompt, mode, output, seed``; relative
paths resolve against the manifest's folder), or a glob of scenes with one AOI whose features are
matched to every scene they intersect, whatever the CRSs. Output: one GeoTIFF and provenance JSON
per scene in the output folder, and ``summary.csv`` / ``summary.json`` with status, timings and
the error of each scene. A rerun skips scenes whose output is complete and whose provenance
records the same inputs (sha256) and parameters; ``force`` redoes them.

With ``pairs`` (``batch --pairs``), each scene gives training pairs instead of an edited copy:
``out_dir/<scene stem>/`` holds its pair folders and ``pairs.jsonl`` (see ``pairs.py``), resumed
pair by pair; ``force`` redoes them.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .config import EditConfig, config_from_dict
from .errors import IncompatibleOptions
from .options import EditOptions
from .progress import ProgressEvent

SUMMARY_FIELDS = ("scene", "aoi", "output", "status", "seconds", "windows", "error")


@dataclass
class BatchItem:
    scene: str
    aoi: str
    output: str
    prompt: Optional[str] = None
    mode: Optional[str] = None
    seed: Optional[int] = None


def read_manifest(path: str | Path, out_dir: Path) -> list[BatchItem]:
    """Items of a CSV (header row) or JSON-lines manifest."""
    path = Path(path)
    if not path.is_file():
        raise IncompatibleOptions(f"manifest {str(path)!r} does not exist")
    base = path.parent
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise IncompatibleOptions(f"manifest {str(path)!r} line {n} is not JSON") from None
    else:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    items = []
    for n, row in enumerate(rows, start=1):
        if not row.get("scene") or not row.get("aoi"):
            raise IncompatibleOptions(f"manifest {str(path)!r} row {n} needs 'scene' and 'aoi'")
        scene = base / row["scene"]
        output = Path(row["output"]) if row.get("output") else out_dir / f"{scene.stem}_edited.tif"
        if row.get("output") and not output.is_absolute():
            output = base / output
        seed = row.get("seed")
        items.append(BatchItem(scene=str(scene), aoi=str(base / row["aoi"]), output=str(output),
                               prompt=row.get("prompt") or None, mode=row.get("mode") or None,
                               seed=int(seed) if seed not in (None, "") else None))
    return items


def items_from_glob(pattern: str, aoi: str | Path, out_dir: Path) -> list[BatchItem]:
    """One item per scene matching ``pattern``; each gets the shared AOI (matched per scene)."""
    scenes = sorted(glob.glob(pattern))
    if not scenes:
        raise IncompatibleOptions(f"`scenes` {pattern!r} matches no file")
    return [BatchItem(scene=s, aoi=str(aoi), output=str(out_dir / f"{Path(s).stem}_edited.tif")) for s in scenes]


def item_config(item: BatchItem, base: EditOptions | EditConfig) -> EditConfig:
    """The configuration of one item: ``base`` with the item's prompt, mode and seed. From
    options, an item with a prompt and no mode runs text (when the options give no mode)."""
    overrides = {k: v for k, v in (("prompt", item.prompt), ("mode", item.mode), ("seed", item.seed)) if v is not None}
    if isinstance(base, EditOptions):
        return dataclasses.replace(base, **overrides).to_config()
    return config_from_dict({**base.to_dict(), **overrides})


def is_complete(item: BatchItem, config: EditConfig) -> bool:
    """Whether ``item``'s output exists with a provenance that matches its inputs and parameters."""
    from .pipeline import matches

    return matches(item.output, item.scene, item.aoi, config)


def run_item(task: dict, progress: Optional[Callable[[ProgressEvent], None]] = None) -> dict:
    """Run one task (any process: a pool worker, a Ray task). Never raises: errors become rows.

    A task edits a scene, makes its pairs, or, for a scene split into window tasks
    (``split``), prepares it (``prepare``: plan and scene model) or edits one of its windows
    (``window``); those rows carry the :class:`~.pipeline.ScenePrep` or the window's
    :class:`~.pipeline.WindowEdit` back to :func:`run_batch`."""
    return _as_row(task, lambda: _run(task, progress))


def _run(task: dict, progress: Optional[Callable[[ProgressEvent], None]]) -> dict:
    from .pipeline import edit_one_window, edit_scene, prepare_windows

    config = config_from_dict(task["config"])
    if task.get("pairs"):
        from .pairs import make_pairs

        made = make_pairs(task["scene"], task["aoi"], task["output"], config, progress=progress, **task["pairs"])
        return {"status": "done", "windows": sum(r["status"] == "done" for r in made)}
    config.output.overwrite = True  # run_batch checked it: absent, an earlier result of ours, or `overwrite`
    split = task.get("split")
    if split == "prepare":
        return {"status": "prepared", "prep": prepare_windows(task["scene"], task["aoi"], task["output"], config,
                                                              progress=progress)}
    if split == "window":
        return {"status": "edited", "edit": edit_one_window(task["scene"], task["aoi"], config, task["window"],
                                                            scene_model=task["scene_model"], progress=progress)}
    if task.get("remote"):
        from .jobs.client import Backend, edit_remotely

        result = edit_remotely(task["scene"], task["aoi"], task["output"], config, Backend(**task["remote"]),
                               progress=progress)
    else:
        result = edit_scene(task["scene"], task["aoi"], task["output"], config, progress=progress)
    return {"status": "done", "windows": len(result.record["windows"])}


def _as_row(task: dict, work: Callable[[], dict]) -> dict:
    """The summary row of ``task`` with what ``work()`` returns, or the error it raised."""
    from .errors import AOIOutsideScene, RsGeoEditError

    started = time.perf_counter()
    row = {"scene": task["scene"], "aoi": task["aoi"], "output": task["output"]}
    try:
        row.update(work())
    except AOIOutsideScene as exc:
        row.update(status="skipped", error=str(exc))
    except RsGeoEditError as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug or system error on one scene must not stop the batch
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


class _SplitScenes:
    """The scenes of a batch edited one task per window, between their first task and the
    stitching of their last window: the prepared scene, the windows edited so far and the
    seconds their tasks took."""

    def __init__(self):
        self.scenes: dict[int, dict] = {}

    def prepared(self, position: int, task: dict, row: dict) -> list[dict]:
        """The window tasks of a prepared scene (each knows the scene model's cache key)."""
        prep = row["prep"]
        self.scenes[position] = {"prep": prep, "edits": [], "seconds": row["seconds"]}
        return [{**task, "split": "window", "window": index, "scene_model": prep.scene_model}
                for index in prep.windows]

    def edited(self, position: int, task: dict, row: dict) -> Optional[dict]:
        """The scene's row once its last window is in (stitched here), or once a window failed
        (nothing is written); None while windows are outstanding or after the scene failed."""
        state = self.scenes.get(position)
        if state is None:  # an earlier window failed: the scene's row is out
            return None
        state["seconds"] += row.get("seconds", 0.0)  # a lost Ray task has no time
        if row["status"] != "edited":
            del self.scenes[position]
            return {**row, "status": "failed", "error": f"window {task['window']}: {row.get('error')}",
                    "seconds": round(state["seconds"], 2)}
        state["edits"].append(row["edit"])
        if len(state["edits"]) < len(state["prep"].windows):
            return None
        del self.scenes[position]
        row = _as_row(task, lambda: self._write(task, state))
        row["seconds"] = round(state["seconds"] + row["seconds"], 2)
        return row

    @staticmethod
    def _write(task: dict, state: dict) -> dict:
        from .pipeline import write_windows

        config = config_from_dict(task["config"])
        config.output.overwrite = True  # as in run_item: checked by run_batch, then by the first task
        result = write_windows(task["scene"], task["aoi"], task["output"], config, state["prep"], state["edits"])
        return {"status": "done", "windows": len(result.record["windows"])}


def check_summaries(out_dir: Path, overwrite: bool) -> None:
    """Refuse ``summary.json``/``summary.csv`` in ``out_dir`` that an earlier batch did not write
    (a rerun replaces its own), unless ``overwrite``."""
    from .errors import OutputError

    for path, ours in ((out_dir / "summary.json", _our_summary_json), (out_dir / "summary.csv", _our_summary_csv)):
        if path.exists() and not overwrite and not ours(path):
            raise OutputError(f"summary {str(path)!r} already exists and was not written by a batch: set `overwrite` "
                              "or choose another output folder")


def _our_summary_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) >= {"executor", "scenes"}


def _our_summary_csv(path: Path) -> bool:
    try:
        with open(path, newline="") as fh:
            return next(csv.reader(fh), None) == list(SUMMARY_FIELDS)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def check_split_windows(split_windows: bool, pairs: Optional[dict], remote: Optional[dict]) -> None:
    """Refuse ``split_windows`` with what it cannot split: pairs, or scenes edited remotely."""
    if split_windows and (pairs is not None or remote):
        raise IncompatibleOptions("`split_windows` edits each scene here, window by window: it does not combine "
                                  "with `pairs` or `backend`")


def run_batch(items: list[BatchItem], options: EditOptions | EditConfig, out_dir: Path, executor, *,
              force: bool = False, progress: Optional[Callable[[ProgressEvent], None]] = None,
              pairs: Optional[dict] = None, remote: Optional[dict] = None, split_windows: bool = False) -> list[dict]:
    """Run ``items`` with ``executor``; write ``out_dir/summary.csv`` and ``summary.json``.

    ``pairs`` (``chip``, ``variants``, ``previews``): make training pairs per scene instead.
    ``remote`` (``{"url": ..., "token": ...}``): edit each scene on that service, windows only.
    ``split_windows``: each scene is a task that plans it and trains its scene model (with
    ``model_scope`` scene), then one task per window, which may run beside any other scene's;
    this process stitches each scene's windows as they complete. The output is the bytes
    ``edit_scene`` writes; a failed window fails its scene and writes nothing."""
    from .errors import AOIOutsideScene, RsGeoEditError
    from .files import atomic_path
    from .geo.check import check_inputs
    from .pipeline import check_outputs, written_by_us

    check_split_windows(split_windows, pairs, remote)
    overwrite = options.overwrite if isinstance(options, EditOptions) else options.output.overwrite
    check_summaries(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Optional[dict]] = [None] * len(items)
    tasks, positions = [], []
    # Everything is checked before the first scene trains: unusable inputs become rows at once,
    # and an output that is not an earlier result of ours stops the batch unless `overwrite`.
    for index, item in enumerate(items):
        cfg = item_config(item, options)
        if pairs is not None:
            tasks.append({"scene": item.scene, "aoi": item.aoi, "output": str(out_dir / Path(item.scene).stem),
                          "config": cfg.to_dict(), "pairs": {**pairs, "overwrite": force}})
            positions.append(index)
            continue
        if not force and is_complete(item, cfg):
            rows[index] = {**asdict(item), "status": "complete", "seconds": 0.0}
            continue
        try:
            check_inputs(item.scene, item.aoi, layer=cfg.layer, prompt_field=cfg.prompt_field,
                         default_prompt=cfg.prompt)
        except AOIOutsideScene as exc:
            rows[index] = {**asdict(item), "status": "skipped", "error": str(exc), "seconds": 0.0}
            continue
        except RsGeoEditError as exc:
            rows[index] = {**asdict(item), "status": "failed", "error": str(exc), "seconds": 0.0}
            continue
        if not written_by_us(item.output):
            check_outputs(item.scene, item.aoi, item.output, cfg)
        tasks.append({"scene": item.scene, "aoi": item.aoi, "output": item.output, "config": cfg.to_dict(),
                      **({"remote": remote} if remote else {}), **({"split": "prepare"} if split_windows else {})})
        positions.append(index)
    done = len(items) - len(tasks)

    def report(message: str) -> None:
        if progress is not None:
            progress(ProgressEvent("batch", done, len(items), done / max(1, len(items)), message))

    report(f"{done} scene(s) already complete, {len(tasks)} to do")

    split = _SplitScenes()

    def on_result(task_index: int, row: dict) -> Optional[list[dict]]:
        nonlocal done
        task, position = tasks[task_index], positions[task_index]
        # a lost Ray task's row names no scene
        row = {"scene": task["scene"], "aoi": task["aoi"], "output": task["output"], **row}
        if task.get("split") == "prepare" and row["status"] == "prepared":
            follow_ups = split.prepared(position, task, row)
            tasks.extend(follow_ups)
            positions.extend([position] * len(follow_ups))
            report(f"{Path(row['scene']).name}: {len(follow_ups)} window task(s)")
            return follow_ups
        if task.get("split") == "window":
            row = split.edited(position, task, row)
            if row is None:
                return None
        done += 1
        rows[position] = row
        report(f"{Path(row['scene']).name}: {row['status']}")
        return None

    def on_progress(task_index: int, event: ProgressEvent) -> None:
        if progress is not None:
            name = Path(tasks[task_index]["scene"]).name
            overall = (done + event.fraction) / max(1, len(items))
            progress(ProgressEvent("batch", done, len(items), overall, f"{name}: {event.stage} {event.message}"))

    executor.run(run_item, tasks, on_result, on_progress)
    final = [r for r in rows if r is not None]
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps({"software": "rs-geo-edit", "executor": executor.describe(), "scenes": final},
                                  indent=2))
    with atomic_path(out_dir / "summary.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(final)
    return final

"""The worker's half of a remote edit: edit each uploaded window, keep the box of changed pixels.

Each upload is a whole window of the client's plan (context margin included). The pipeline plans
it as that window (:func:`~rs_geo_edit.pipeline.plan_window_file`: same index, same ROIs) and
edits it with the seed the client's scene gives it (:func:`~rs_geo_edit.pipeline.edit_window`,
the step every local edit runs), after training the scene model on every window when the
options share one; so the client's output is the bytes a local edit writes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

from ..progress import ProgressCallback, ProgressEvent
from .inputs import UploadedWindow, job_inputs, uploaded_windows
from .layout import JobLayout


class _Span:
    """Progress of one window's edit mapped into its share [lo, hi] of the job; ``check`` passes
    the job's cancel check through, so a cancel lands between steps as in a local job."""

    def __init__(self, progress: ProgressCallback, lo: float, hi: float, index):
        self.progress, self.lo, self.hi, self.index = progress, lo, hi, index

    def __call__(self, event: ProgressEvent) -> None:
        self.progress(dataclasses.replace(event, fraction=self.lo + (self.hi - self.lo) * event.fraction,
                                          window=self.index))

    def check(self) -> None:
        check = getattr(self.progress, "check", None)
        if check is not None:
            check()


def _train_scene_model(editor, windows: list[UploadedWindow], config, progress: ProgressCallback) -> None:
    """The scene model a local edit of the whole scene trains: the same windows, the same order."""
    from ..geo.raster import open_scene
    from ..pipeline import model_input, plan_window_file
    from ..progress import StageReporter

    inputs = []
    for w in windows:
        with open_scene(w.path) as src:
            item = model_input(src, plan_window_file(src, w.features, w.index, config))
        if item is not None:
            inputs.append(item)
    editor.prepare(inputs, StageReporter(_Span(progress, 0.0, 0.45, None), "train", 0.0, 1.0))


def _edit_one(w: UploadedWindow, config, editor, layout: JobLayout, job_id: str, span: _Span) -> dict[str, Any]:
    """Edit one uploaded window and write the box of its changed pixels; returns its manifest
    entry (offsets in the client's scene)."""
    from ..geo.raster import changed_part, open_scene, write_pixels
    from ..pipeline import edit_window, plan_window_file, window_seed

    with open_scene(w.path) as src:
        ew = plan_window_file(src, w.features, w.index, config)
        edit = edit_window(src, ew, window_seed(config.seed, w.index), config, editor, progress=span)
        part = changed_part(src, edit.patch) if edit.patch is not None else None
        entry = {"index": w.index, "col_off": w.col_off, "row_off": w.row_off, "width": 0, "height": 0,
                 "file": None, "bytes": 0}
        if part is not None:
            path = write_pixels(layout.result_window(job_id, w.index), part.pixels, src.crs,
                                src.window_transform(part.window))
            entry.update(col_off=w.col_off + int(part.window.col_off), row_off=w.row_off + int(part.window.row_off),
                         width=int(part.window.width), height=int(part.window.height), file=path.name,
                         bytes=path.stat().st_size)
    # the window's record, placed in the client's scene
    return {**entry, "record": {**edit.record, "col_off": w.col_off, "row_off": w.row_off}}


def edit_uploaded_windows(job: dict, layout: JobLayout, progress: ProgressCallback) -> dict:
    """Edit the uploaded windows of ``job``; writes the job's result manifest and one GeoTIFF of
    changed pixels per window. Returns the job's result record."""
    from ..errors import SceneError
    from ..files import atomic_path
    from ..pipeline import make_editor
    from ..pipeline.contract import SceneModelEditor

    request = job["request"]
    config = job_inputs(request).config
    windows = uploaded_windows(request, layout)
    out_dir = layout.results(job["id"])
    shutil.rmtree(out_dir, ignore_errors=True)  # a retried job starts its results over
    out_dir.mkdir(parents=True)
    editor = make_editor(config)
    lo = 0.0
    if isinstance(editor, SceneModelEditor) and editor.shares_model and len(windows) > 1:
        _train_scene_model(editor, windows, config, progress)
        lo = 0.45
    share = (1.0 - lo) / len(windows)
    entries = [_edit_one(w, config, editor, layout, job["id"], _Span(progress, lo + k * share, lo + (k + 1) * share,
                                                                     w.index))
               for k, w in enumerate(windows)]
    if all("skipped" in e["record"] for e in entries):
        raise SceneError("every ROI of the uploaded windows lies on nodata pixels: draw the ROIs over valid data")
    manifest = {"job": job["id"], "windows": entries, "editor": editor.describe()}
    with atomic_path(layout.manifest(job["id"])) as tmp:
        tmp.write_text(json.dumps(manifest, default=str))
    return {"windows": len(entries), "changed_pixels_box": sum(e["width"] * e["height"] for e in entries),
            "result": f"/jobs/{job['id']}/result"}

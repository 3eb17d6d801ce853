"""``edit_scene``: the one orchestrator behind the CLI, the service, QGIS Processing and batch.

scene + AOI -> window plan -> per window (:func:`~.window.edit_window`): read, validity mask,
normalise, edit (an :class:`~.contract.Editor`), blend -> stream the edited copy of the scene ->
provenance JSON.

The same steps run apart for a scene whose windows are separate tasks (``batch
--split-windows``): :func:`prepare_windows` (plan, scene model), :func:`edit_one_window` per
window, :func:`write_windows` (writer and provenance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import EditConfig
from ..editors import make_editor
from ..errors import SceneError
from ..geo.raster import check_output_path, open_scene, remove_partials, write_edited
from ..progress import ProgressCallback, StageReporter
from .contract import Editor, SceneModelEditor
from .copy_source import CopyInputs
from .plan import ScenePlan, plan_scene
from .provenance import build_record, provenance_path, write_record
from .window import WindowEdit, edit_window, model_input, window_seed

@dataclass
class EditResult:
    output: Path
    provenance: Optional[Path]
    record: dict


@dataclass
class SceneEdit:
    """An edit of one scene under way: its inputs, checked outputs, configuration and plan."""

    scene: str | Path
    aoi: str | Path
    output: Path
    provenance: Optional[Path]
    config: EditConfig
    plan: ScenePlan


@dataclass
class ScenePrep:
    """What the first task of a scene edited window by window (:func:`prepare_windows`) hands to
    the window tasks and the final writer: the window indices in plan order, the scene model's
    cache key and per-window scale offsets (None when every window trains, or loads, its own),
    the model records of the editor and the seconds spent planning and training."""

    windows: list[int]
    scene_model: Optional[dict]
    models: list[dict]
    plan_s: float
    train_s: float


def default_output(scene: str | Path) -> Path:
    """``<scene>_edited.tif`` beside the scene."""
    scene = Path(scene)
    return scene.with_name(f"{scene.stem}_edited.tif")


def _check_config(config) -> EditConfig:
    if isinstance(config, EditConfig):
        return config.validate()
    if hasattr(config, "edit") and hasattr(config, "describe"):
        raise TypeError("edit_scene(scene, aoi, output, config, *, editor=None, progress=None): "
                        "the editor goes in editor=")
    raise TypeError(f"edit_scene needs an EditConfig, not {type(config).__name__}")


def check_outputs(scene: str | Path, aoi: Optional[str | Path], output: str | Path,
                  config: EditConfig) -> tuple[Path, Optional[Path]]:
    """(GeoTIFF, provenance JSON or None): every file an edit of ``scene`` writes, checked before
    any work. Each must not be an input and must not exist unless ``config.output.overwrite``;
    raises :class:`rs_geo_edit.errors.OutputError` naming the first that fails."""
    inputs = [scene, aoi, config.copy_from]
    output = check_output_path(output, inputs, config.output.overwrite)
    prov_path = provenance_path(output) if config.output.provenance else None
    if prov_path is not None:
        check_output_path(prov_path, inputs, config.output.overwrite, role="provenance")
    return output, prov_path


def start_edit(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig,
               progress: Optional[ProgressCallback] = None) -> SceneEdit:
    """Check the configuration and every output, clear what a killed earlier run to ``output``
    left behind, and plan the windows: the start of every edit of ``scene``."""
    config = _check_config(config)
    output, prov_path = check_outputs(scene, aoi, output, config)
    remove_partials(output)
    report = StageReporter(progress, "plan", 0.0, 0.02)
    plan = plan_scene(scene, aoi, config)
    report(1, 1, f"{len(plan.windows)} window(s)")
    return SceneEdit(scene, aoi, output, prov_path, config, plan)


def edit_scene(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, *,
               editor: Optional[Editor] = None, progress: Optional[ProgressCallback] = None) -> EditResult:
    """Edit the ROIs of ``aoi`` in ``scene`` with ``config`` and write ``output`` (GeoTIFF) plus
    its provenance record.

    ``editor`` defaults to the engine ``config.engine`` names (``editors.make_editor``). Pixels
    outside the ROIs grown by the blend band are bit-identical to the source. Raises a
    :class:`rs_geo_edit.errors.RsGeoEditError` subclass on bad input before any output exists;
    nothing is left at ``output`` if the edit fails or is cancelled.
    """
    started = time.perf_counter()
    job = start_edit(scene, aoi, output, config, progress)
    timings = {"plan_s": time.perf_counter() - started}
    plan = job.plan
    if editor is None:
        editor = make_editor(job.config)
    edits: list[WindowEdit] = []
    first, span = 0.02, 0.88 / len(plan.windows)
    with open_scene(scene) as src:
        if _shares_model(editor, plan):
            # One model for the scene: trained on every window before any is edited.
            editor.prepare(_model_inputs(src, plan), StageReporter(progress, "train", 0.02, 0.45))
            first, span = 0.45, 0.45 / len(plan.windows)
        copies = CopyInputs(job.config.mode, plan, src, src.transform)
        for n, ew in enumerate(plan.windows):
            edits.append(edit_window(src, ew, window_seed(job.config.seed, ew.index), job.config, editor,
                                     copies=copies, progress=progress, start=first + span * n, span=span))
    timings["edit_s"] = time.perf_counter() - started - timings["plan_s"]
    return write_output(job, editor.describe(), edits, timings, progress)


def write_output(job: SceneEdit, editor_description: dict, edits: list[WindowEdit], timings: dict,
                 progress: Optional[ProgressCallback] = None) -> EditResult:
    """Stream the patches of ``edits`` (in plan order) into a copy of the scene at ``job.output``
    and write the provenance record; ``timings`` holds ``plan_s`` and ``edit_s``."""
    patches = [e.patch for e in edits if e.patch is not None]
    if not patches:
        raise SceneError(f"every ROI of {str(job.aoi)!r} lies on nodata pixels of {str(job.scene)!r}: "
                         "draw the ROIs over valid data")
    t0 = time.perf_counter()
    config = job.config
    write_info = write_edited(job.scene, job.output, patches, compress=config.output.compress, cog=config.output.cog,
                              progress=StageReporter(progress, "write", 0.9, 1.0))
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = timings["plan_s"] + timings["edit_s"] + timings["write_s"]
    record = build_record(job.plan, config, editor_description, [e.record for e in edits], timings, write_info,
                          job.output)
    if job.provenance is not None:
        write_record(record, job.provenance)
    return EditResult(output=job.output, provenance=job.provenance, record=record)


# ------------------------------------------------------------------------ one window per task
# A huge scene's windows can run as separate tasks (``batch --split-windows``): one task trains
# the scene model, one task per window edits it, and the caller stitches the results. Each step
# is the one ``edit_scene`` takes, so the output is the same bytes.

def prepare_windows(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, *,
                    progress: Optional[ProgressCallback] = None) -> ScenePrep:
    """The first task of a scene edited window by window: check the outputs, plan, and train (or
    load from the cache) the scene model when the editor shares one over the scene's windows,
    as :func:`edit_scene` does. The model stays in the cache, where the window tasks find it."""
    started = time.perf_counter()
    job = start_edit(scene, aoi, output, config, progress)
    plan_s = time.perf_counter() - started
    scene_model, models = None, []
    if len(job.plan.windows) > 1:  # a single window trains its own model in its task
        editor = make_editor(job.config)
        if _shares_model(editor, job.plan):
            with open_scene(scene) as src:
                editor.prepare(_model_inputs(src, job.plan), StageReporter(progress, "train", 0.02, 1.0))
            if editor.shared is not None:
                scene_model = {"key": editor.shared.key, "offsets": dict(editor.shared.offsets)}
            models = editor.describe().get("models", [])
    return ScenePrep([ew.index for ew in job.plan.windows], scene_model, models, plan_s,
                     time.perf_counter() - started - plan_s)


def edit_one_window(scene: str | Path, aoi: str | Path, config: EditConfig, index: int, *,
                    scene_model: Optional[dict] = None,
                    progress: Optional[ProgressCallback] = None) -> WindowEdit:
    """Edit window ``index`` of the scene's plan alone, reading only that window: with
    ``scene_model`` (from :func:`prepare_windows`) the editor takes the scene model from the
    cache, else the window trains or loads its own. Writes nothing."""
    config = _check_config(config)
    plan = plan_scene(scene, aoi, config)
    windows = {ew.index: ew for ew in plan.windows}
    if index not in windows:
        raise ValueError(f"window {index} is not in the plan of {str(scene)!r} ({len(windows)} window(s))")
    editor = make_editor(config)
    if scene_model is not None:
        editor.use_scene_model(scene_model["key"], scene_model["offsets"])
    with open_scene(scene) as src:
        copies = CopyInputs(config.mode, plan, src, src.transform)
        edit = edit_window(src, windows[index], window_seed(config.seed, index), config, editor, copies=copies,
                           progress=progress)
    edit.editor = editor.describe()
    return edit


def write_windows(scene: str | Path, aoi: str | Path, output: str | Path, config: EditConfig, prep: ScenePrep,
                  edits: list[WindowEdit], progress: Optional[ProgressCallback] = None) -> EditResult:
    """Stitch the windows of a scene edited one per task (:func:`edit_one_window`, one result per
    window of ``prep``, in any order) into ``output`` with the writer and provenance record of
    :func:`edit_scene`: the editor description joins the tasks' model and window entries."""
    started = time.perf_counter()
    job = start_edit(scene, aoi, output, config)
    by_index = {e.index: e for e in edits}
    if sorted(by_index) != sorted(prep.windows):
        raise ValueError(f"windows {sorted(by_index)} edited, the plan has {sorted(prep.windows)}")
    ordered = [by_index[index] for index in prep.windows]
    descriptions = [e.editor or {} for e in ordered]
    description = dict(descriptions[0])
    if "models" in description:
        description["models"] = prep.models + [m for d in descriptions for m in d.get("models", [])]
    if "windows" in description:
        description["windows"] = [w for d in descriptions for w in d.get("windows", [])]
    timings = {"plan_s": prep.plan_s + time.perf_counter() - started,
               "edit_s": prep.train_s + sum(e.record.get("seconds", 0.0) for e in ordered)}
    return write_output(job, description, ordered, timings, progress)


def _shares_model(editor: Editor, plan: ScenePlan) -> bool:
    return isinstance(editor, SceneModelEditor) and editor.shares_model and len(plan.windows) > 1


def _model_inputs(src, plan: ScenePlan) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """What a scene model learns from: :func:`~.window.model_input` of every window of ``plan``."""
    return [item for ew in plan.windows if (item := model_input(src, ew)) is not None]

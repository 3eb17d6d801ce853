"""The editing pipeline, cut along its seams.

- ``contract``: :class:`EditRequest`, :class:`EditedBox` and the :class:`Editor` and
  :class:`SceneModelEditor` protocols (windows in, edited windows out): the seam between the
  pipeline and the editing engines, a layer below both so the engines can import it.
- ``plan``: :func:`plan_scene`, the scene's facts, ROIs and edit windows (:func:`plan_grid` for a
  scene known only by its grid).
- ``copy_source``: copy-mode inputs (where pasted content comes from, per window).
- ``provenance``: the record written beside every output, and :func:`matches` for resume.
- ``orchestrator``: :func:`edit_scene`, the one orchestrator, and the same steps for a scene
  whose windows run as separate tasks (:func:`prepare_windows`, :func:`edit_one_window`,
  :func:`write_windows`).
"""

from .contract import EditRequest, Editor
from .orchestrator import (EditResult, ScenePrep, WindowEdit, check_outputs, default_output, edit_one_window,
                           edit_scene, make_editor, model_inputs, prepare_windows, window_seed, write_windows)
from .plan import ScenePlan, plan_grid, plan_scene, window_features
from .provenance import matches, provenance_path, written_by_us

__all__ = ["EditRequest", "EditResult", "Editor", "ScenePlan", "ScenePrep", "WindowEdit", "check_outputs",
           "default_output", "edit_one_window", "edit_scene", "make_editor", "matches", "model_inputs", "plan_grid",
           "plan_scene", "prepare_windows", "provenance_path", "window_features", "window_seed", "write_windows",
           "written_by_us"]

"""The editing pipeline, cut along its seams.

- ``contract``: :class:`EditRequest`, :class:`EditedBox` and the :class:`Editor` and
  :class:`SceneModelEditor` protocols (windows in, edited windows out): the seam between the
  pipeline and the editing engines, a layer below both so the engines can import it.
- ``plan``: :func:`plan_scene`, the scene's facts, ROIs and edit windows (:func:`plan_grid` for a
  scene known only by its grid, :func:`plan_window_file` for one window held in a file of its own).
- ``copy_source``: copy-mode inputs (where pasted content comes from, per window).
- ``window``: :func:`edit_window`, the edit of one planned window with its seed, which every
  edit runs (whole scene, split-window task, uploaded window).
- ``provenance``: the record written beside every output, and :func:`matches` for resume.
- ``orchestrator``: :func:`edit_scene`, the one orchestrator, and the same steps for a scene
  whose windows run as separate tasks (:func:`prepare_windows`, :func:`edit_one_window`,
  :func:`write_windows`).
"""

from .contract import EditRequest, Editor
from .orchestrator import (EditResult, ScenePrep, check_outputs, default_output, edit_one_window, edit_scene,
                           make_editor, prepare_windows, write_windows)
from .plan import ScenePlan, plan_grid, plan_scene, plan_window_file, window_features
from .provenance import matches, provenance_path, written_by_us
from .window import WindowEdit, edit_window, model_input, window_seed

__all__ = ["EditRequest", "EditResult", "Editor", "ScenePlan", "ScenePrep", "WindowEdit", "check_outputs",
           "default_output", "edit_one_window", "edit_scene", "edit_window", "make_editor", "matches", "model_input",
           "plan_grid", "plan_scene", "plan_window_file", "prepare_windows", "provenance_path", "window_features",
           "window_seed", "write_windows", "written_by_us"]

"""The editing contract: what an editor receives for one window, and what it must return.

The engines in ``editors/`` implement it and the rest of ``pipeline/`` calls them through it, so
this module sits below both and imports nothing of the package above the foundations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..geo.windows import EditWindow
    from ..progress import StageReporter


@dataclass
class EditRequest:
    """What an editor gets for one window, at the working resolution.

    ``image`` is (bands, rows, cols) float32 in [-1, 1] with invalid pixels filled from their
    nearest valid neighbour; ``roi`` is where new content goes (valid pixels only); ``labels``
    tells which ROI (1-based, 0 = none) owns each pixel and ``prompts[k-1]`` is ROI k's prompt.
    ``rgb`` are the 0-based positions, among ``image``'s bands, that an RGB model sees.
    ``copy_source`` is content aligned with the window, valid where ``copy_mask`` is True: always
    present in copy mode (the pipeline refuses a copy edit without it), present in text mode when
    the AOI or the copy_from option gives a source, None otherwise.
    """

    image: np.ndarray
    roi: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    prompts: list[Optional[str]]
    rgb: list[int]
    seed: int
    window: "EditWindow"
    copy_source: Optional[np.ndarray] = None
    copy_mask: Optional[np.ndarray] = None


@dataclass
class EditedBox:
    """An edit that changed only a box of the window: ``pixels`` (bands, rows, cols) are the box
    at ``rows`` and ``cols`` of the window (working resolution), and the rest of the window is the
    request's image unchanged. A large ROI's editor returns this instead of a copy of the whole
    window, which at native resolution is hundreds of megabytes."""

    pixels: np.ndarray
    rows: slice
    cols: slice

    def on(self, image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """The edited window's ``rows`` and ``cols`` (float32): that part of ``image``, the
        request's image, with the edited pixels that fall in it pasted."""
        out = np.array(image[:, rows, cols], dtype=np.float32)
        top, bottom = max(self.rows.start, rows.start), min(self.rows.stop, rows.stop)
        left, right = max(self.cols.start, cols.start), min(self.cols.stop, cols.stop)
        if top < bottom and left < right:
            out[:, top - rows.start:bottom - rows.start, left - cols.start:right - cols.start] = \
                self.pixels[:, top - self.rows.start:bottom - self.rows.start, left - self.cols.start:right - self.cols.start]
        return out

    def whole(self, image: np.ndarray) -> np.ndarray:
        """The edited window: a copy of ``image`` with the box pasted."""
        return self.on(image, slice(0, image.shape[1]), slice(0, image.shape[2]))


class Editor(Protocol):
    """Anything that turns an :class:`EditRequest` into an edited image of the same shape
    (float32, [-1, 1]), or an :class:`EditedBox` when it changed only a box of the window; it
    reports progress through the reporter and may be cancelled by it. An editor that can serve
    all the windows of a scene with one model is also a :class:`SceneModelEditor`. An editor
    whose pixels for a request are copies of the scene says so with an optional
    ``copies_scene(request) -> bool`` (the blend then leaves their grain as it is)."""

    def edit(self, request: EditRequest, progress: "StageReporter") -> "np.ndarray | EditedBox": ...

    def describe(self) -> dict: ...


@runtime_checkable
class SceneModelEditor(Editor, Protocol):
    """An :class:`Editor` that can learn one model from every window of a scene; the pipeline
    tells one from a plain editor with ``isinstance``.

    When ``shares_model`` is true (the editor's configuration asks for a scene model), the
    pipeline calls ``prepare`` once, with (index, image, valid) of every window at the working
    resolution, before the first ``edit``: one model learnt from all of them then serves each.
    ``shared`` then names that model by its ``key`` (in the model cache) and ``offsets`` (window
    index -> scale offset), or is None when there is none; ``use_scene_model(key, offsets)`` lets
    another instance (a task editing one window) serve windows with it."""

    shares_model: bool
    shared: Optional[Any]

    def prepare(self, windows: list[tuple[int, np.ndarray, np.ndarray]], progress: "StageReporter") -> None: ...

    def use_scene_model(self, key: str, offsets: dict[int, int]) -> None: ...

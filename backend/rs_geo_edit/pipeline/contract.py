"""The editing contract: what an editor receives for one window, and what it must return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

import numpy as np

from ..editors import EditedBox  # noqa: F401  (part of the contract: what an editor may return)

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


class Editor(Protocol):
    """Anything that turns an :class:`EditRequest` into an edited image of the same shape
    (float32, [-1, 1]), or an :class:`EditedBox` when it changed only a box of the window; it
    reports progress through the reporter and may be cancelled by it.

    An editor whose ``shares_model`` attribute is true also has ``prepare(windows, progress)``,
    which the pipeline calls once with (index, image, valid) of every window of the scene
    before the first ``edit``: one model learnt from all of them then serves each. Its
    ``shared`` (``key``, ``offsets``) then names that model, and ``use_scene_model(key, offsets)``
    lets another instance (a task editing one window) serve windows with it."""

    def edit(self, request: EditRequest, progress: "StageReporter") -> "np.ndarray | EditedBox": ...

    def describe(self) -> dict: ...

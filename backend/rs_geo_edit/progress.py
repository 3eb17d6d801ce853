"""The one progress callback type shared by the CLI, the service, the QGIS provider and batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    ``stage`` is a short machine-friendly name ("plan", "train", "sample", "blend", "write");
    ``done``/``total`` count units of that stage (steps, blocks); ``fraction`` is the overall
    progress of the whole edit in [0, 1]; ``window`` is the index of the window being edited.
    """

    stage: str
    done: float
    total: float
    fraction: float
    message: str = ""
    window: Optional[int] = None
    metrics: Optional[dict] = None


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """A callback that ignores every event."""


class StageReporter:
    """Maps a stage's local progress into the overall fraction [start, end] and forwards it.

    A callback may raise :class:`rs_geo_edit.errors.JobCancelled` to stop the work.
    """

    def __init__(self, callback: Optional[ProgressCallback], stage: str, start: float, end: float,
                 window: Optional[int] = None):
        self.callback = callback or no_progress
        self.stage = stage
        self.start = start
        self.end = end
        self.window = window

    def __call__(self, done: float, total: float, message: str = "", metrics: Optional[dict] = None) -> None:
        share = (done / total) if total else 1.0
        fraction = self.start + (self.end - self.start) * min(max(share, 0.0), 1.0)
        self.callback(ProgressEvent(self.stage, done, total, fraction, message, self.window, metrics))

    def check(self) -> None:
        """Let the callback stop the work between two reports: cheap enough to call every step.

        A callback that can be cancelled has a ``check()`` method raising
        :class:`rs_geo_edit.errors.JobCancelled`; a plain function has none and is never asked.
        """
        check = getattr(self.callback, "check", None)
        if check is not None:
            check()

    def sub(self, stage: str, lo: float, hi: float) -> "StageReporter":
        """A reporter for a sub-stage covering [lo, hi] of this stage's share."""
        span = self.end - self.start
        return StageReporter(self.callback, stage, self.start + span * lo, self.start + span * hi, self.window)

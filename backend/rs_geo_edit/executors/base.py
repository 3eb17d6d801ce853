"""What every executor is: the :class:`Executor` protocol and the ``on_result`` callback type."""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

# on_result(index, result) -> follow-up tasks (or None)
OnResult = Callable[[int, dict], Optional[Sequence[dict]]]


class Executor(Protocol):
    name: str

    def run(self, fn: Callable[..., dict], tasks: Sequence[dict], on_result: OnResult,
            on_progress: Optional[Callable[[int, object], None]] = None) -> None: ...

    def describe(self) -> dict: ...

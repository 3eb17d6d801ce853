"""Executors run batch tasks: ``local`` (worker processes on this machine) and ``ray`` (a cluster).

Both take a top-level function and a list of task dicts and call ``on_result(index, result)`` as
tasks finish. ``on_result`` may return more tasks, which run too, numbered after every task so
far (a scene's windows become tasks once its model is trained). A task's function catches its
own errors and returns a row, so one bad scene never stops a batch.
"""

from __future__ import annotations

from .base import Executor, OnResult

__all__ = ["Executor", "OnResult", "make_executor"]


def make_executor(name: str, *, workers: int = 1, address: str = "auto", gpus_per_task: float = 0.0,
                  max_retries: int = 3) -> Executor:
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(workers)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(address=address, gpus_per_task=gpus_per_task, max_retries=max_retries)
    from ..errors import IncompatibleOptions

    raise IncompatibleOptions(f"unknown executor {name!r}: use local or ray")

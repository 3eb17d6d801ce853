"""The default executor: tasks in this process (1 worker) or in a pool of worker processes."""

from __future__ import annotations

from typing import Callable, Optional, Sequence


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers}

    def run(self, fn: Callable[..., dict], tasks: Sequence[dict], on_result: Callable[[int, dict], None],
            on_progress: Optional[Callable[[int, object], None]] = None) -> None:
        if self.workers == 1:  # in this process: the current scene's stages reach the caller too
            for index, task in enumerate(tasks):
                hook = (lambda event, i=index: on_progress(i, event)) if on_progress else None
                on_result(index, fn(task, hook))
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # torch and forked threads do not mix
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            futures = {pool.submit(fn, task): index for index, task in enumerate(tasks)}
            for future in as_completed(futures):
                on_result(futures[future], future.result())

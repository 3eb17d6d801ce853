"""The default executor: tasks in this process (1 worker) or in a pool of worker processes."""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional, Sequence

from .base import OnResult


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers}

    def run(self, fn: Callable[..., dict], tasks: Sequence[dict], on_result: OnResult,
            on_progress: Optional[Callable[[int, object], None]] = None) -> None:
        if self.workers == 1:  # in this process: the current scene's stages reach the caller too
            queue = deque(enumerate(tasks))
            count = len(tasks)
            while queue:
                index, task = queue.popleft()
                hook = (lambda event, i=index: on_progress(i, event)) if on_progress else None
                for follow_up in on_result(index, fn(task, hook)) or ():
                    queue.append((count, follow_up))
                    count += 1
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx = multiprocessing.get_context("spawn")  # torch and forked threads do not mix
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            futures = {pool.submit(fn, task): index for index, task in enumerate(tasks)}
            count = len(tasks)
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    for follow_up in on_result(futures.pop(future), future.result()) or ():
                        futures[pool.submit(fn, follow_up)] = count
                        count += 1

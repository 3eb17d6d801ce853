"""Ray executor: one Ray task per scene (or per window), ``num_gpus`` per task, retried when a
worker is lost.

``--address auto`` joins a running cluster (``ray start --head`` first) or starts a local one;
``ray://host:port`` connects a Ray client. Point ``--cache-dir`` at a path every node sees to
share trained models across the cluster. Ray is an optional extra: ``pip install .[ray]``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import IncompatibleOptions
from .base import OnResult


class RayExecutor:
    name = "ray"

    def __init__(self, address: str = "auto", gpus_per_task: float = 0.0, max_retries: int = 3,
                 num_cpus: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise IncompatibleOptions("the ray executor needs Ray: pip install 'rs-geo-edit[ray]' "
                                      "(or use --executor local)") from None
        self.address, self.gpus_per_task, self.max_retries, self.num_cpus = address, gpus_per_task, max_retries, num_cpus

    def describe(self) -> dict:
        return {"executor": self.name, "address": self.address, "gpus_per_task": self.gpus_per_task,
                "max_retries": self.max_retries}

    def _connect(self):
        import ray

        if ray.is_initialized():
            return ray
        try:
            if self.address == "local":
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        except ConnectionError:
            if self.address != "auto":
                raise IncompatibleOptions(f"cannot reach the Ray cluster at {self.address!r}: start it with "
                                          "'ray start --head' or check the address") from None
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
        return ray

    def run(self, fn: Callable[..., dict], tasks: Sequence[dict], on_result: OnResult, on_progress=None) -> None:
        ray = self._connect()
        remote = ray.remote(num_gpus=self.gpus_per_task, max_retries=self.max_retries)(fn)
        pending = {remote.remote(task): index for index, task in enumerate(tasks)}
        count = len(tasks)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the task's worker died beyond its retries
                    result = {"status": "failed", "error": f"ray task lost: {type(exc).__name__}: {exc}"}
                for follow_up in on_result(index, result) or ():
                    pending[remote.remote(follow_up)] = count
                    count += 1

"""Worker supervision: the service's pool of worker processes, watched on a clock.

Every ``interval`` seconds the supervisor (a thread of the API process) looks at each worker:
one that died (killed, out of memory, a crash in native code) is replaced at once, and the job it
held is queued again once or failed with the reason (:meth:`JobStore.worker_lost`). A running job
whose cancel is older than ``cancel_limit`` seconds (its worker is stuck in a step that reports
nothing) is marked cancelled and its worker is killed and replaced: a cancel always lands.
Partial outputs of such jobs are removed; finished files and the model cache are left alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional

from .store import JobStore

log = logging.getLogger("rs_geo_edit.jobs")


class WorkerPool:
    """``size`` worker processes running :func:`worker.worker_main` on one store."""

    def __init__(self, store: JobStore, data_dir: Path, size: int, *, interval: float = 0.25,
                 cancel_limit: float = 1.2):
        self.store, self.data_dir, self.size = store, Path(data_dir), size
        self.interval, self.cancel_limit = interval, cancel_limit
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.restarts = 0
        self.last_loss: Optional[dict] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def _spawn(self, slot: int):
        from .worker import worker_main

        proc = self.ctx.Process(target=worker_main, args=(str(self.store.path), str(self.data_dir), os.getpid()),
                                daemon=True, name=f"rs-geo-edit-worker-{slot}")
        proc.start()
        return proc

    def start(self) -> "WorkerPool":
        self.procs = [self._spawn(i) for i in range(self.size)]
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the supervisor must outlive a bad tick (a locked store, a full disk)
                log.exception("worker supervision failed; retrying")

    def check(self) -> None:
        """One round: stop workers holding overdue cancels, replace dead workers."""
        with self._lock:
            for job in self.store.overdue_cancels(self.cancel_limit):
                proc = next((p for p in self.procs if p.pid == job["worker"]), None)
                if self.store.force_cancel(job["id"]) and proc is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.join(timeout=5)
                _remove_partials(job)
            for slot, proc in enumerate(self.procs):
                if proc.is_alive():
                    continue
                proc.join(timeout=0)
                reason = _death(proc.exitcode)
                for job in self.store.running_on(proc.pid):
                    state = self.store.worker_lost(job["id"], reason)
                    _remove_partials(job)
                    self.last_loss = {"job": job["id"], "reason": reason, "state": state, "time": time.time()}
                    log.warning("job %s: %s; now %s", job["id"], reason, state)
                self.procs[slot] = self._spawn(slot)
                self.restarts += 1

    def health(self) -> dict:
        """For /health: every worker's pid and liveness, restarts so far, the last job lost."""
        workers = [{"pid": p.pid, "alive": p.is_alive()} for p in self.procs]
        alive = sum(w["alive"] for w in workers)
        return {"workers": len(workers), "workers_alive": alive, "worker_restarts": self.restarts,
                "worker_pids": [w["pid"] for w in workers], "last_worker_loss": self.last_loss}


def _death(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the worker process running this job was killed ({name})"
    return f"the worker process running this job exited (code {exitcode})"


def _remove_partials(job: dict) -> None:
    """Temporary files of the job's output that its dead worker could not clean up."""
    from ..geo.raster import remove_partials
    from .inputs import output_path

    if job["request"].get("windows"):  # a window job writes only under its job folder
        return
    try:
        output = output_path(job["request"])
    except Exception:  # a request that no longer parses has no output to clean
        return
    remove_partials(output)

"""Worker processes: claim queued jobs from the store and run ``pipeline.edit_scene``.

The work never runs in the API process. Each worker dies with the service (PR_SET_PDEATHSIG on
Linux), so a killed service leaves no orphan writing outputs; on restart the store re-queues
the jobs that were running. Under a running service, :mod:`.supervisor` replaces a worker that
dies and stops one that ignores a cancel.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

from ..errors import JobCancelled, RsGeoEditError
from .inputs import job_inputs
from .layout import JobLayout


class CancelWatch:
    """A thread that polls the store for a cancel of the job this worker runs, on a clock: the
    edit learns of it within ``interval`` seconds whatever it is doing, and stops at its next
    step (:meth:`Reporter.check`), not at its next progress report."""

    def __init__(self, store, interval: float = 0.2):
        self.store, self.interval = store, interval
        # One (job, event) pair, swapped whole: a late answer about the previous job sets that
        # job's event, never the next one's.
        self.current: Optional[tuple[str, threading.Event]] = None
        threading.Thread(target=self._run, name="cancel-watch", daemon=True).start()

    def follow(self, job_id: Optional[str]) -> threading.Event:
        event = threading.Event()
        self.current = (job_id, event) if job_id is not None else None
        return event

    def _run(self) -> None:
        while True:
            current = self.current
            if current is not None and not current[1].is_set() and self.store.cancel_requested(current[0]):
                current[1].set()
            time.sleep(self.interval)


class Reporter:
    """Progress callback for a job: throttled writes to the store, and the cancel check."""

    def __init__(self, store, job_id: str, cancelled: threading.Event, interval: float = 0.5):
        self.store, self.job_id, self.cancelled, self.interval = store, job_id, cancelled, interval
        self.last = 0.0
        self.stage = None

    def check(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled("cancelled by the user")

    def __call__(self, event) -> None:
        self.check()
        now = time.monotonic()
        if event.stage == self.stage and now - self.last < self.interval and event.fraction < 1.0:
            return
        self.last, self.stage = now, event.stage
        where = f"window {event.window}: " if event.window is not None else ""
        self.store.progress(self.job_id, event.fraction, event.stage, where + event.message)


def run_job(store, job: dict, data_dir: Path, cancelled: Optional[threading.Event] = None) -> None:
    """Run one claimed job to a terminal state."""
    from ..pipeline import edit_scene

    job_id = job["id"]
    cancelled = cancelled or threading.Event()
    layout = JobLayout(data_dir)
    try:
        if job["request"].get("windows"):
            from .window_edit import edit_uploaded_windows

            result = edit_uploaded_windows(job, layout, Reporter(store, job_id, cancelled))
            store.finish(job_id, "done", result=result)
            return
        inputs = job_inputs(job["request"], layout.job(job_id))
        result = edit_scene(inputs.scene, inputs.aoi, inputs.output, inputs.config,
                            progress=Reporter(store, job_id, cancelled))
        store.finish(job_id, "done", result={"output": str(result.output),
                                             "provenance": str(result.provenance) if result.provenance else None,
                                             "timings": result.record["timings"]})
    except JobCancelled:
        store.finish(job_id, "cancelled", error="cancelled by the user")
    except RsGeoEditError as exc:
        from .schema import api_name

        store.finish(job_id, "failed", error=exc.render(api_name))
    except Exception as exc:  # a bug or a system error: keep the worker alive, record the traceback
        detail = traceback.format_exc(limit=5)
        store.finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}\n{detail}")


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_main(db_path: str, data_dir: str, parent_pid: int, poll: float = 0.5) -> None:
    """Entry point of a worker process."""
    from .store import JobStore

    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the service; it stops us
    store = JobStore(db_path)
    _write_device_info(JobLayout(data_dir))
    watch = CancelWatch(store)
    while True:
        job = store.claim(os.getpid())
        if job is None:
            time.sleep(poll)
            continue
        run_job(store, job, Path(data_dir), watch.follow(job["id"]))
        watch.follow(None)


def _write_device_info(layout: JobLayout) -> None:
    """What the workers compute on, for /health (the API process never imports torch)."""
    import torch

    from ..files import atomic_path

    info = {"device": "cuda" if torch.cuda.is_available() else "cpu",
            "cuda_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__}
    with atomic_path(layout.device_info) as tmp:
        tmp.write_text(json.dumps(info))

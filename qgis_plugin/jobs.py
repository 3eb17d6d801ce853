"""Following a job: submit, poll until it ends, cancel on request. One loop for the dock (through
``EditTask``, a QgsTask) and for the Processing algorithm (through its feedback)."""

from __future__ import annotations

import time
from typing import Callable, Optional

from qgis.core import QgsTask

from .client import BackendClient, _sleep
from .entities import Job
from .errors import BackendError

CANCEL_WAIT = 30.0  # seconds to wait for the backend to confirm a cancel (it lands within ~2 s)


def follow_job(client: BackendClient, request: Optional[dict] = None, *, job_id: Optional[str] = None,
               is_canceled: Callable[[], bool] = lambda: False, on_update: Callable[[Job], None] = lambda job: None,
               poll: float = 0.5, is_detached: Callable[[], bool] = lambda: False) -> Job:
    """Submit ``request`` (or follow the existing ``job_id``) and poll every ``poll`` seconds until the
    job ends; returns its last state. Once ``is_canceled()`` is true, the job is cancelled on the
    backend too and followed until it stops; once ``is_detached()`` is true (QGIS is closing), the
    job is left running and its state so far returned. Raises BackendError when the backend cannot
    be reached. Blocking: call it from a worker thread."""
    job = client.submit(request) if job_id is None else client.job(job_id)
    on_update(job)
    cancelled_at = None
    while not job.terminal and not is_detached():
        if cancelled_at is None and is_canceled():
            cancelled_at = time.monotonic()
            job = client.cancel(job.id)
            on_update(job)
            continue
        if cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_WAIT:
            break
        _sleep(poll, (lambda: is_canceled() or is_detached()) if cancelled_at is None else is_detached)
        job = client.job(job.id)
        on_update(job)
    return job


class EditTask(QgsTask):
    """A job followed in QGIS's task manager, on the backend of ``connection`` (a
    ``backend.Connection``: the task first waits for a connect still under way, e.g. a local
    backend starting). ``job`` holds the latest state (read it on the main thread from
    ``progressChanged``); ``taskCompleted``/``taskTerminated`` report the end."""

    def __init__(self, connection, request: Optional[dict] = None, job_id: Optional[str] = None,
                 poll: float = 0.5):
        title = (request or {}).get("prompt") or (request or {}).get("mode") or job_id or "edit"
        super().__init__(f"rs-geo-edit: {title}", QgsTask.CanCancel)
        self.connection, self.request, self.job_id, self.poll = connection, request, job_id, poll
        self.job: Optional[Job] = None
        self.error: Optional[str] = None
        self.unreachable = False   # the backend stopped answering (status None)
        self.detached = False

    def detach(self) -> None:
        """Stop following without cancelling the job (QGIS is closing): the backend finishes it and
        the dock lists it on the next Connect."""
        self.detached = True
        self.cancel()

    def is_canceled(self) -> bool:
        return self.isCanceled() and not self.detached

    def run(self) -> bool:  # worker thread: no widgets here
        try:
            self.job = self.follow(self.connection.client(self.is_canceled))
        except (BackendError, ValueError, OSError) as exc:
            self.error = str(exc)
            self.unreachable = getattr(exc, "status", 0) is None and self.connection.done \
                and not self.connection.failed
            return False
        if self.job.state == "failed":
            self.error = self.job.error or "the job failed"
        return self.job.state == "done" and not self.detached

    def follow(self, client: BackendClient) -> Job:
        """Submit (or follow) the job on ``client``'s backend until it ends."""
        return follow_job(client, self.request, job_id=self.job_id, is_canceled=self.is_canceled,
                          on_update=self._update, poll=self.poll, is_detached=lambda: self.detached)

    def _update(self, job: Job) -> None:
        self.job = job
        self.setProgress(100.0 * job.progress)

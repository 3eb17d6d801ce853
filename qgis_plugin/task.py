"""A QgsTask that submits an edit to the backend and follows it; Cancel cancels the job too."""

from __future__ import annotations

import time

from qgis.core import QgsTask

from .client import BackendClient, BackendError


class EditTask(QgsTask):
    """Runs in QGIS's task manager; results are handed back on the main thread in finished()."""

    def __init__(self, client: BackendClient, request: dict, on_done, poll: float = 0.5):
        """``on_done(ok, job, error)`` runs on the main thread; connect ``progressChanged`` for
        progress (``self.job`` then holds the latest stage and message)."""
        super().__init__(f"rs-geo-edit: {request.get('prompt') or request.get('mode', 'edit')}", QgsTask.CanCancel)
        self.client, self.request, self.on_done, self.poll = client, request, on_done, poll
        self.job: dict = {}
        self.error = None

    def run(self) -> bool:  # worker thread: no widgets here
        try:
            self.job = self.client.submit(self.request)
            while True:
                if self.isCanceled():
                    self.job = self.client.cancel(self.job["id"])
                    deadline = time.time() + 30
                    while self.job["state"] == "running" and time.time() < deadline:
                        time.sleep(self.poll)
                        self.job = self.client.job(self.job["id"])
                    return False
                self.job = self.client.job(self.job["id"])
                self.setProgress(100.0 * self.job["progress"])
                if self.job["state"] in ("done", "failed", "cancelled"):
                    if self.job["state"] == "failed":
                        self.error = self.job.get("error") or "the job failed"
                    return self.job["state"] == "done"
                time.sleep(self.poll)
        except BackendError as exc:
            self.error = str(exc)
            return False

    def finished(self, result: bool) -> None:  # main thread
        self.on_done(result, self.job, self.error)

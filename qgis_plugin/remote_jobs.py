"""Which remote jobs this machine sent, and where their scene and output are here. Only this
machine knows that, so it is stored (in the plugin's settings) and outlives a restart of QGIS.
Qt-free; the store is injected."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from .entities import Job, LocalFiles, is_remote_job

KEY = "remote_jobs"
REMEMBERED = 200  # the newest jobs kept: an old job's files are forgotten, not its result


class RemoteJobs:
    def __init__(self, store, keep: int = REMEMBERED):
        self.store, self.keep = store, keep

    def _all(self) -> dict:
        try:
            return dict(json.loads(self.store.value(KEY, "{}") or "{}"))
        except (TypeError, ValueError):
            return {}  # unreadable (edited by hand): as if none were sent from here

    def remember(self, job_id: str, files: LocalFiles) -> None:
        """Keep ``job_id``'s files; a job already known keeps its first files."""
        known = self._all()
        if job_id not in known:
            known[job_id] = dataclasses.asdict(files)
            self.store.setValue(KEY, json.dumps(dict(list(known.items())[-self.keep:])))

    def files(self, job_id: str) -> Optional[LocalFiles]:
        entry = self._all().get(job_id)
        return LocalFiles(**entry) if entry is not None else None

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._all()

    def localise(self, job: Job) -> Job:
        """A remote job as this machine sees it: its local scene and output, when sent from here."""
        files = self.files(job.id) if is_remote_job(job) else None
        if files is None:
            return job
        return dataclasses.replace(job, output=files.output, request={**job.request, "scene": files.scene})

"""Where the service keeps its files: every job, upload and result path, spelled once.

``<data dir>/``
    ``jobs.sqlite``              the job store
    ``device.json``              what the workers compute on (for /health)
    ``uploads/<id>.tif``         an uploaded window (the bytes so far), ``<id>.json`` its state
    ``jobs/<id>/aoi.geojson``    a job's inline AOI
    ``jobs/<id>/result/``        a window job's ``manifest.json`` and ``window-<index>.tif`` files
    ``jobs/.<purpose>-<hex>/``   a request's staging folder, removed when the request is answered
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def inline_aoi(folder: Path) -> Path:
    """Where a request's inline GeoJSON AOI is written in ``folder`` (a job's or a staging folder)."""
    return Path(folder) / "aoi.geojson"


class JobLayout:
    """The paths under one service's data folder (nothing is created but by :meth:`staging`)."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)

    @property
    def database(self) -> Path:
        return self.root / "jobs.sqlite"

    @property
    def device_info(self) -> Path:
        return self.root / "device.json"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def upload(self, upload_id: str) -> Path:
        return self.uploads / f"{upload_id}.tif"

    def upload_state(self, upload_id: str) -> Path:
        return self.uploads / f"{upload_id}.json"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def job(self, job_id: str) -> Path:
        return self.jobs / job_id

    def results(self, job_id: str) -> Path:
        return self.job(job_id) / "result"

    def manifest(self, job_id: str) -> Path:
        return self.results(job_id) / "manifest.json"

    def result_window(self, job_id: str, index: int) -> Path:
        return self.results(job_id) / f"window-{index}.tif"

    @contextlib.contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        """A fresh folder for one request (``purpose``: what it is for), removed afterwards. It is
        named with a leading dot, so no job id can be it."""
        folder = self.jobs / f".{purpose}-{uuid.uuid4().hex}"
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

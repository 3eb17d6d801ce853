"""The service's HTTP API, and nothing else: no widgets, no QGIS project, no polling.

Every call blocks until the service answers (at most ``timeout`` seconds), so the plugin makes
them only from worker threads (QgsTask.run, or a Processing algorithm, which QGIS runs in its own
task). Standard library only, so it works the same inside QGIS, ``qgis_process`` and tests.

A local backend reads the scene by path (``submit``); a remote server gets only the windows
around the ROIs: ``plan`` asks which windows, ``upload`` sends each (resuming after a dropped
connection), ``result`` and ``download`` bring the changed pixels back (see ``remote.py``).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from .entities import Job


class BackendError(Exception):
    """The backend is down (``status`` None) or answered with an error (its HTTP ``status``); the
    message is the backend's own."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class BackendClient:
    """``proxy`` (``http://[user:password@]host:port``) routes every call through that HTTP proxy;
    without it the environment's proxy variables apply, as for any urllib call."""

    def __init__(self, url: str, token: str, timeout: float = 10.0, proxy: Optional[str] = None):
        self.url, self.token, self.timeout = url.strip().rstrip("/"), token.strip(), timeout
        handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy})] if proxy else []
        self._opener = urllib.request.build_opener(*handlers)

    def _request(self, method: str, path: str, body: Optional[dict] = None):
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path, data, "application/json") as response:
            return json.loads(response.read().decode() or "{}")

    def _open(self, method: str, path: str, data: Optional[bytes] = None, content_type: Optional[str] = None,
              headers: Optional[dict] = None, timeout: Optional[float] = None):
        """The open response of one call; raises BackendError with the backend's own message."""
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None and content_type:
            request.add_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read().decode()).get("detail")
            except ValueError:
                detail = None
            if isinstance(detail, list):  # pydantic validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            raise BackendError(f"backend error {exc.code}: {detail or exc.reason}", exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"backend at {self.url} is not reachable ({reason}): start it with "
                               "'rs-geo-edit serve' or tick 'start the local backend'") from None

    def health(self) -> dict:
        return self._request("GET", "/health")

    def submit(self, request: dict) -> Job:
        return Job.from_api(self._request("POST", "/jobs", request))

    def job(self, job_id: str) -> Job:
        return Job.from_api(self._request("GET", f"/jobs/{job_id}"))

    def jobs(self, limit: int = 50) -> list[Job]:
        """The most recent jobs, newest first."""
        return [Job.from_api(item) for item in self._request("GET", f"/jobs?limit={int(limit)}")]

    def cancel(self, job_id: str) -> Job:
        return Job.from_api(self._request("DELETE", f"/jobs/{job_id}"))

    # ------------------------------------------------------------------ remote edits (windows)
    def plan(self, body: dict) -> dict:
        """The windows of an edit over a scene the server cannot read (``POST /plan``)."""
        return self._request("POST", "/plan", body)

    def upload(self, path: Path, sent: Callable[[int], None] = lambda n: None,
               is_canceled: Callable[[], bool] = lambda: False, chunk: int = 1 << 20, retries: int = 6) -> str:
        """Upload ``path`` in chunks; after a failed chunk ask the server how much it holds and go
        on from there (up to ``retries`` failures in a row). Returns the upload id."""
        size = os.path.getsize(path)
        upload_id = self._request("POST", "/uploads", {"size": size})["id"]
        offset, failures = 0, 0
        with open(path, "rb") as fh:
            while offset < size:
                if is_canceled():
                    self._request("DELETE", f"/uploads/{upload_id}")
                    raise BackendError("upload cancelled")
                fh.seek(offset)
                piece = fh.read(chunk)
                try:
                    with self._open("PATCH", f"/uploads/{upload_id}", piece, "application/offset+octet-stream",
                                    {"Upload-Offset": str(offset)}, timeout=max(self.timeout, 60.0)) as response:
                        offset = json.loads(response.read().decode())["offset"]
                    failures = 0
                except BackendError as exc:
                    failures += 1
                    # a dropped connection, a server error or an offset the server disagrees with: resume
                    if failures > retries or exc.status not in (None, 409, 500, 502, 503, 504):
                        raise
                    time.sleep(min(2.0 ** failures, 30.0) / 4)
                    offset = self._request("GET", f"/uploads/{upload_id}")["offset"]
                sent(offset)
        return upload_id

    def result(self, job_id: str) -> dict:
        """What a finished remote job changed: its windows' boxes and provenance records."""
        return self._request("GET", f"/jobs/{job_id}/result")

    def download(self, job_id: str, index: int, dest: Path) -> int:
        """Stream window ``index`` of a finished remote job to ``dest``; returns its size."""
        with self._open("GET", f"/jobs/{job_id}/result/{index}", timeout=max(self.timeout, 60.0)) as response, \
                open(dest, "wb") as fh:
            while piece := response.read(1 << 20):
                fh.write(piece)
        return os.path.getsize(dest)

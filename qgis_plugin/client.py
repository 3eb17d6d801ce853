"""The service's HTTP API, and nothing else: no widgets, no QGIS project, no polling.

Every call blocks until the service answers (at most ``timeout`` seconds), so the plugin makes
them only from worker threads (QgsTask.run, or a Processing algorithm, which QGIS runs in its own
task). Standard library only, so it works the same inside QGIS, ``qgis_process`` and tests.

The job follower and the controller use only ``submit``, ``job``, ``jobs``, ``cancel`` and
``health``: a client for a remote server, which uploads the windows around the ROIs instead of
sending paths, slots in behind the same five calls.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Optional

from .entities import Job


class BackendError(Exception):
    """The backend is down or answered with an error; the message is the backend's own."""


class BackendClient:
    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url, self.token, self.timeout = url.strip().rstrip("/"), token.strip(), timeout

    def _request(self, method: str, path: str, body: Optional[dict] = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read().decode()).get("detail")
            except ValueError:
                detail = None
            if isinstance(detail, list):  # pydantic validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            raise BackendError(f"backend error {exc.code}: {detail or exc.reason}") from None
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

"""The service's HTTP API, and nothing else: no widgets, no QGIS project, no polling.

Every call goes through QGIS's network stack (``network.send``, QGIS's network timeout applies)
and blocks until the service answers, so the plugin makes them only from worker threads
(QgsTask.run, or a Processing algorithm, which QGIS runs in its own task).

A local backend is called with the token it gives (``rs-geo-edit serve --print-token``), never
stored; a remote server with a QGIS authentication configuration (``authcfg``) that QGIS applies.
A local backend reads the scene by path (``submit``); a remote server gets only the windows around
the ROIs: ``plan`` asks which windows, ``upload`` sends each (resuming after a dropped connection),
``result`` and ``download`` bring the changed pixels back (see ``remote.py``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from .entities import Job
from .errors import BackendError
from .network import Reply, send

LOCAL_HINT = "start it with 'rs-geo-edit serve', or tick 'start it' in the dock's Backend box"
STARTED_HINT = ("it stopped answering: press Connect to start it again (its log: rs-geo-edit/serve.log in the "
                "QGIS profile folder)")
REMOTE_HINT = "check the URL, and that 'rs-geo-edit serve' runs there"
TRANSIENT = (409, 500, 502, 503, 504)   # an upload resumes after these (and after no answer at all)


def _sleep(seconds: float, wake: Callable[[], bool]) -> None:
    """Sleep, waking early when ``wake()`` turns true, so a cancel reaches the backend at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not wake():
        time.sleep(0.05)


class BackendClient:
    """``token``: the bearer token of a local backend; ``authcfg``: the QGIS authentication
    configuration of a remote server; ``hint``: what to do when the backend does not answer."""

    def __init__(self, url: str, token: str = "", authcfg: str = "", hint: str = LOCAL_HINT):
        self.url, self.token, self.authcfg = url.strip().rstrip("/"), token.strip(), authcfg.strip()
        self.hint = hint

    def _request(self, method: str, path: str, body: Optional[dict] = None):
        data = json.dumps(body).encode() if body is not None else None
        reply = self._call(method, path, data, {"Content-Type": "application/json"} if data is not None else None)
        return json.loads(reply.body.decode() or "{}")

    def _send(self, method: str, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None) -> Reply:
        """One call as it went: an answer of any status, or none (status None)."""
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return send(method, self.url + path, data, headers, self.authcfg)

    def _call(self, method: str, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None) -> Reply:
        """A successful answer; else BackendError with the backend's own message, or the reason none came."""
        return self._checked(self._send(method, path, data, headers))

    def _checked(self, reply: Reply) -> Reply:
        if reply.status is None:
            raise BackendError(f"backend at {self.url} is not reachable ({reply.error}): {self.hint}")
        if reply.status >= 400:
            raise BackendError(self._refusal(reply), reply.status)
        return reply

    def _refusal(self, reply: Reply) -> str:
        try:
            detail = json.loads(reply.body.decode()).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, list):  # pydantic validation errors
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
        if reply.status == 401 and self.authcfg:
            detail = (f"the authentication configuration {self.authcfg!r} does not hold this server's token "
                      "(on the server: rs-geo-edit serve --print-token)")
        elif reply.status == 401 and not self.token:
            detail = "no credentials: choose or store the server's token in the dock's Backend box"
        return f"backend error {reply.status}: {detail or reply.body.decode(errors='replace')[:200]}"

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
               is_canceled: Callable[[], bool] = lambda: False, chunk: int = 1 << 20, retries: int = 8) -> str:
        """Upload ``path`` in chunks. After a dropped connection or a server error, wait (1 s,
        doubling up to 10 s), ask the server how much it holds and go on from there; a conflict
        (409) says where to go on. Gives up after ``retries`` failures in a row. Returns the
        upload id."""
        size = os.path.getsize(path)
        upload_id = self._request("POST", "/uploads", {"size": size})["id"]
        offset, failures = 0, 0
        with open(path, "rb") as fh:
            while offset < size:
                if is_canceled():
                    self._request("DELETE", f"/uploads/{upload_id}")
                    raise BackendError("upload cancelled")
                fh.seek(offset)
                reply = self._send("PATCH", f"/uploads/{upload_id}", fh.read(chunk),
                                   {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)})
                if reply.status is not None and reply.status < 400:
                    offset, failures = json.loads(reply.body.decode())["offset"], 0
                elif reply.status == 409 and "upload-offset" in reply.headers:
                    held = int(reply.headers["upload-offset"])
                    if held == offset:      # a dropped chunk is still arriving there
                        time.sleep(0.2)
                    offset = held
                elif reply.status is None or reply.status in TRANSIENT:
                    failures = self._back_off(failures, retries, reply, path, is_canceled)
                    offset = self._held(upload_id, offset)
                else:
                    self._checked(reply)
                sent(offset)
        return upload_id

    def _back_off(self, failures: int, retries: int, reply: Reply, path: Path,
                  is_canceled: Callable[[], bool]) -> int:
        """One more failure in a row: give up after ``retries``, else wait (waking early once
        ``is_canceled()`` is true). Returns the new count."""
        failures += 1
        if failures > retries:
            cause = reply.error if reply.status is None else f"error {reply.status}"
            raise BackendError(f"upload of {path.name} to {self.url} failed {failures} times in a row ({cause}): "
                               "check the connection and run the edit again", reply.status)
        _sleep(min(0.5 * 2 ** failures, 10.0), is_canceled)
        return failures

    def _held(self, upload_id: str, fallback: int) -> int:
        """How many bytes of the upload the server holds (``fallback`` when it cannot say now)."""
        reply = self._send("GET", f"/uploads/{upload_id}")
        if reply.status != 200:
            return fallback
        return int(json.loads(reply.body.decode())["offset"])

    def result(self, job_id: str) -> dict:
        """What a finished remote job changed: its windows' boxes and provenance records."""
        return self._request("GET", f"/jobs/{job_id}/result")

    def download(self, job_id: str, index: int, dest: Path) -> int:
        """Window ``index`` of a finished remote job into ``dest``; returns its size."""
        reply = self._call("GET", f"/jobs/{job_id}/result/{index}")
        Path(dest).write_bytes(reply.body)
        return os.path.getsize(dest)

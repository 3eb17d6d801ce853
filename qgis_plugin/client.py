"""HTTP client for the rs-geo-edit service (standard library only), and the local backend starter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from typing import Optional


class BackendError(Exception):
    """The backend is down or answered with an error; the message is the backend's own."""


class BackendClient:
    def __init__(self, url: str, token: str, timeout: float = 10.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token.strip(), timeout

    def _request(self, method: str, path: str, body: Optional[dict] = None) -> dict:
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
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"backend at {self.url} is not reachable ({reason}): start it with "
                               "'rs-geo-edit serve' or enable 'start the local backend'") from None

    def health(self) -> dict:
        return self._request("GET", "/health")

    def submit(self, request: dict) -> dict:
        return self._request("POST", "/jobs", request)

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{job_id}")

    def jobs(self) -> list:
        return self._request("GET", "/jobs")

    def cancel(self, job_id: str) -> dict:
        return self._request("DELETE", f"/jobs/{job_id}")


class LocalBackend:
    """Starts ``rs-geo-edit serve`` and stops it again (only if this object started it)."""

    def __init__(self, executable: str, port: int = 8765):
        self.executable, self.port = executable, port
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self) -> str:
        out = subprocess.run([self._exe(), "serve", "--print-token"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise BackendError(f"'{self.executable} serve --print-token' failed: {out.stderr.strip()[-300:]}")
        return out.stdout.strip().splitlines()[-1]

    def _exe(self) -> str:
        exe = shutil.which(self.executable) or self.executable
        if not os.path.isfile(exe):
            raise BackendError(f"rs-geo-edit executable {self.executable!r} not found: set its path in the "
                               "plugin's backend settings")
        return exe

    def start(self, wait: float = 60.0) -> str:
        """Start the service (if nothing answers on the port yet) and return its token."""
        token = self.token()
        client = BackendClient(self.url, token, timeout=2)
        try:
            client.health()
            return token  # already running (started elsewhere): use it, do not own it
        except BackendError:
            pass
        self.process = subprocess.Popen([self._exe(), "serve", "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise BackendError(f"'rs-geo-edit serve' exited with code {self.process.returncode}")
            try:
                if client.health().get("device") != "starting":
                    return token
            except BackendError:
                pass
            time.sleep(0.3)
        raise BackendError(f"'rs-geo-edit serve' did not answer within {wait:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

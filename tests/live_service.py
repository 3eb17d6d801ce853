"""A real ``rs-geo-edit serve`` on 127.0.0.1 in a subprocess, with its own data, config and cache
folders: shared by the service tests and scripts/bench/faults.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import httpx

TINY = {"steps": 40, "width": 16, "crop": 32, "batch": 2, "threads": 1}
LONG = {"steps": 4000, "width": 16, "crop": 32, "batch": 2, "threads": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, tmp: Path, workers: int = 1):
        self.tmp, self.workers = tmp, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def args(self, *extra):
        return [sys.executable, "-m", "rs_geo_edit.cli", "serve", "--port", str(self.port), "--data-dir",
                str(self.tmp / "data"), "--config-dir", str(self.tmp / "config"), *extra]

    def start(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_CACHE": str(self.tmp / "cache"),
               "HF_HOME": str(self.tmp / "hf"), "HF_HUB_OFFLINE": "1"}
        env.pop("RS_GEO_EDIT_WEIGHTS", None)
        self.log = open(self.tmp / f"service-{time.time()}.log", "w")
        self.proc = subprocess.Popen(self.args("--workers", str(self.workers)), env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                health = httpx.get(self.url + "/health", timeout=2).json()
                if health["device"] != "starting":
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (self.tmp / "data").as_posix()
            time.sleep(0.3)
        else:
            raise AssertionError("service did not come up")
        self.token = (self.tmp / "config" / "token").read_text().strip()
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        return self

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def wait(self, job_id, states=("done", "failed", "cancelled"), timeout=240):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            job = self.client.get(f"/jobs/{job_id}").json()
            seen.append(job["progress"])
            if job["state"] in states:
                return job, seen
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} stuck in {job['state']}")


def submit(svc, scene, aoi, out, options, **kw):
    body = {"scene": str(scene), "aoi": str(aoi) if not isinstance(aoi, dict) else aoi, "output": str(out),
            "options": options, **kw}
    resp = svc.client.post("/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def health(svc) -> dict:
    return httpx.get(svc.url + "/health", timeout=10).json()


def wait_for(predicate, timeout: float, every: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; (value, seconds waited) or AssertionError."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value, time.monotonic() - t0
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def state_of(svc, job_id: str, states) -> Callable[[], Optional[dict]]:
    """A predicate for :func:`wait_for`: the job once it is in one of ``states``."""
    def check():
        job = svc.client.get(f"/jobs/{job_id}").json()
        return job if job["state"] in states else None
    return check


def training(svc, job_id: str) -> Callable[[], Optional[dict]]:
    """A predicate: the job once it reports a training step."""
    def check():
        job = svc.client.get(f"/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        return job if job["state"] == "running" and job["stage"] == "train" else None
    return check

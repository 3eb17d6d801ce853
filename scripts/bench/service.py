"""Service benchmark: status-poll latency while a job is training.

Starts `rs-geo-edit serve` on 127.0.0.1 (a free port, a temporary data folder), submits a
training job on a generated scene, waits until it is training, then sends 200 GET /jobs/{id}
from 20 concurrent clients (10 each) and prints p50/p99 latency. Target: p99 < 50 ms.
Traffic goes to loopback only; the request count is fixed.

Usage: .venv/bin/python scripts/bench/service.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import pixel_box, write_aoi, write_scene  # noqa: E402


def burst(url: str, headers: dict, job_id: str) -> np.ndarray:
    """200 GETs from 20 concurrent clients (keep-alive connections, the standard library's light
    http.client, so that the load generator's own CPU use distorts little); latencies in ms."""
    import http.client
    from urllib.parse import urlparse

    host, port = urlparse(url).hostname, urlparse(url).port
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.connect()
        start.wait()
        for _ in range(10):
            t0 = time.perf_counter()
            conn.request("GET", f"/jobs/{job_id}", headers=headers)
            response = conn.getresponse()
            response.read()
            dt = time.perf_counter() - t0
            assert response.status == 200
            with lock:
                latencies.append(dt)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(latencies) * 1000


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rs-geo-edit-svc-bench-"))
    scene = write_scene(tmp / "scene.tif", width=256, height=256)
    aoi = write_aoi(tmp / "aoi.geojson", [pixel_box(scene, 100, 100, 160, 160)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_CACHE": str(tmp / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "rs_geo_edit.cli", "serve", "--port", str(port), "--data-dir",
                             str(tmp / "data"), "--config-dir", str(tmp / "config")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/health", timeout=2).json().get("device") not in (None, "starting"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        token = (tmp / "config" / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        job = httpx.post(url + "/jobs", headers=headers, json={
            "scene": str(scene), "aoi": str(aoi), "output": str(tmp / "out.tif"), "options": {"steps": 100000, "threads": 1}}).json()
        # the same load before the job trains (idle baseline: what this 2-core machine does with the
        # clients themselves sharing the CPU) and while it trains
        baseline = burst(url, headers, job["id"])
        while httpx.get(f"{url}/jobs/{job['id']}", headers=headers).json()["stage"] != "train":
            time.sleep(0.2)
        loaded = burst(url, headers, job["id"])
        state = httpx.get(f"{url}/jobs/{job['id']}", headers=headers).json()
        print(f"200 GET /jobs/{{id}} from 20 clients (10 each); job: '{state['stage']}' ({state['message']})")
        for label, ms in (("queued (idle)", baseline), ("training", loaded)):
            print(f"  {label:<14} p50 {np.percentile(ms, 50):6.1f} ms  p99 {np.percentile(ms, 99):6.1f} ms  "
                  f"max {ms.max():6.1f} ms")
        print(f"  p99 training / idle: {np.percentile(loaded, 99) / np.percentile(baseline, 99):.2f}  "
              "(target p99 < 50 ms while training)")
        httpx.delete(f"{url}/jobs/{job['id']}", headers=headers)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()

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
            "scene": str(scene), "aoi": str(aoi), "output": str(tmp / "out.tif"),
            "options": {"steps": 100000, "threads": 1}}).json()
        while httpx.get(f"{url}/jobs/{job['id']}", headers=headers).json()["stage"] != "train":
            time.sleep(0.2)
        latencies: list[float] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=url, headers=headers) as c:
                for _ in range(10):
                    t0 = time.perf_counter()
                    r = c.get(f"/jobs/{job['id']}")
                    dt = time.perf_counter() - t0
                    assert r.status_code == 200
                    with lock:
                        latencies.append(dt)

        threads = [threading.Thread(target=client) for _ in range(20)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        state = httpx.get(f"{url}/jobs/{job['id']}", headers=headers).json()
        ms = np.array(latencies) * 1000
        print(f"{len(ms)} GET /jobs/{{id}} from 20 clients in {wall:.2f} s while the job was "
              f"'{state['stage']}' ({state['message']})")
        print(f"p50 {np.percentile(ms, 50):.1f} ms  p99 {np.percentile(ms, 99):.1f} ms  max {ms.max():.1f} ms  "
              f"(target p99 < 50 ms)")
        httpx.delete(f"{url}/jobs/{job['id']}", headers=headers)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()

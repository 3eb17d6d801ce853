"""Remote edits against a real service on 127.0.0.1 that cannot see the client's files: only the
windows travel, uploads resume, bad uploads are refused, the output is a local edit's bytes."""

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio

from conftest import pixel_box, write_aoi, write_scene
from test_service import Service

TINY = ["--steps", "40", "--width", "16", "--crop", "32", "--batch", "2"]


class HiddenService(Service):
    """A service in its own mount namespace where ``hidden`` is an empty tmpfs: it cannot read
    the client's files even by path."""

    def __init__(self, tmp: Path, hidden: Path, *extra: str):
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp)
        self.hidden, self.extra = hidden, extra

    def args(self, *extra):
        inner = super().args(*self.extra, *extra)
        if "--print-token" in extra:
            return inner
        return ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(self.hidden), *inner]


def cli(*args, env=None, **kw):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "rs_geo_edit.cli", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=300, **kw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def client_dir(tmp_path):
    folder = tmp_path / "client"
    folder.mkdir()
    return folder


@pytest.fixture
def hidden_service(tmp_path, client_dir):
    svc = HiddenService(tmp_path / "server", client_dir, "--upload-quota-mb", "2", "--retention-hours", "0").start()
    yield svc
    svc.stop()


def test_remote_edit_is_the_local_edit_and_only_windows_travel(tmp_path, client_dir, hidden_service):
    scene = write_scene(client_dir / "scene.tif", width=2048, height=2048, blocksize=256)
    # Two ROIs far apart: two windows, and one scene model trained on both, here and on the server.
    aoi = write_aoi(client_dir / "aoi.geojson", [pixel_box(scene, 1000, 1000, 1064, 1064),
                                                 pixel_box(scene, 300, 1700, 364, 1764)])
    # The service really cannot read the client's folder: a job naming the scene by path is refused.
    resp = hidden_service.client.post("/jobs", json={"scene": str(scene), "aoi": str(aoi)})
    assert resp.status_code == 422 and "does not exist" in resp.text

    local = cli("edit", scene, "--aoi", aoi, "-o", client_dir / "local.tif", *TINY, "--model-scope", "scene",
                "--threads", "1", "-q", env={"RS_GEO_EDIT_CACHE": str(tmp_path / "client-cache")})
    assert local.returncode == 0, local.stderr
    local_models = json.loads((client_dir / "local.json").read_text())["editor"]["models"]
    assert [(m["scope"], m["windows"]) for m in local_models] == [("scene", [0, 1])]
    remote = cli("edit", scene, "--aoi", aoi, "-o", client_dir / "remote.tif", *TINY, "--model-scope", "scene", "-q",
                 "--backend", hidden_service.url, env={"RS_GEO_EDIT_TOKEN": hidden_service.token})
    assert remote.returncode == 0, remote.stderr
    assert sha256(client_dir / "remote.tif") == sha256(client_dir / "local.tif")
    with rasterio.open(scene) as src, rasterio.open(client_dir / "remote.tif") as dst:
        assert not np.array_equal(src.read(window=((1000, 1064), (1000, 1064))),
                                  dst.read(window=((1000, 1064), (1000, 1064))))

    (job,) = hidden_service.client.get("/jobs").json()
    assert job["state"] == "done" and job["request"]["scene"] == "scene.tif"
    uploads = sorted((tmp_path / "server" / "data" / "uploads").glob("*.tif"))
    assert len(uploads) == 2
    for upload in uploads:
        with rasterio.open(upload) as window:
            assert (window.width, window.height) == (192, 192)  # the ROI and its 64 px margins, not the scene
    transfer = job["transfer"]
    assert transfer["uploaded_bytes"] == sum(upload.stat().st_size for upload in uploads)
    assert transfer["uploaded_bytes"] * 25 < scene.stat().st_size
    assert 0 < transfer["downloaded_bytes"] < transfer["uploaded_bytes"]
    provenance = json.loads((client_dir / "remote.json").read_text())
    assert provenance["backend"]["job"] == job["id"] and provenance["windows"][0]["roi_pixels"] == 64 * 64
    assert not list((tmp_path / "server").rglob("scene*"))


def _window_tif(client_dir: Path, **kw) -> bytes:
    path = write_scene(client_dir / "w.tif", width=64, height=64, blocksize=32, **kw)
    data = path.read_bytes()
    path.unlink()
    return data


def test_interrupted_upload_resumes_from_the_servers_offset(client_dir, hidden_service):
    data = _window_tif(client_dir)
    up = hidden_service.client.post("/uploads", json={"size": len(data)}).json()
    half = len(data) // 2
    # A connection that drops mid-chunk: the bytes that arrived are kept.
    with socket.create_connection(("127.0.0.1", hidden_service.port)) as sock:
        sock.sendall((f"PATCH /uploads/{up['id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {hidden_service.token}\r\nUpload-Offset: 0\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode()
                     + data[:half])
        time.sleep(0.5)
    deadline = time.time() + 10
    while (state := hidden_service.client.get(f"/uploads/{up['id']}").json())["offset"] < half:
        assert time.time() < deadline, state
        time.sleep(0.1)
    assert state == {"id": up["id"], "size": len(data), "offset": half, "complete": False}
    stale = hidden_service.client.patch(f"/uploads/{up['id']}", content=data, headers={"Upload-Offset": "0"})
    assert stale.status_code == 409 and stale.headers["Upload-Offset"] == str(half)
    done = hidden_service.client.patch(f"/uploads/{up['id']}", content=data[half:],
                                       headers={"Upload-Offset": str(half)})
    assert done.status_code == 200 and done.json()["complete"] is True
    stored = Path(hidden_service.tmp) / "data" / "uploads" / f"{up['id']}.tif"
    assert stored.read_bytes() == data


def test_bad_uploads_are_refused_and_finished_jobs_files_expire(client_dir, hidden_service):
    c = hidden_service.client

    def upload(data: bytes):
        up = c.post("/uploads", json={"size": len(data)}).json()
        return up["id"], c.patch(f"/uploads/{up['id']}", content=data, headers={"Upload-Offset": "0"})

    upload_id, resp = upload(b"not a raster at all\n" * 10)
    assert resp.status_code == 422 and "not a GeoTIFF" in resp.text
    assert c.get(f"/uploads/{upload_id}").status_code == 404
    upload_id, resp = upload(_window_tif(client_dir, crs=None))
    assert resp.status_code == 422 and "no CRS" in resp.text
    assert c.post("/uploads", json={"size": 3 << 20}).status_code == 413  # the quota is 2 MB
    up = c.post("/uploads", json={"size": 10}).json()
    assert c.patch(f"/uploads/{up['id']}", content=b"x" * 11, headers={"Upload-Offset": "0"}).status_code == 413
    assert c.patch(f"/uploads/{up['id']}", content=b"x", headers={}).status_code == 400

    window = _window_tif(client_dir)
    upload_id, resp = upload(window)
    assert resp.status_code == 200 and resp.json()["complete"]
    box = pixel_box(hidden_service.tmp / "data" / "uploads" / f"{upload_id}.tif", 20, 20, 40, 40)
    features = [{"type": "Feature", "geometry": box.__geo_interface__, "properties": {"window": 0}}]
    body = {"scene": "scene.tif", "aoi": {"type": "FeatureCollection", "features": features},
            "windows": [{"upload": upload_id, "index": 0, "col_off": 0, "row_off": 0}]}
    mismatch = {**body, "windows": [{"upload": upload_id, "index": 1, "col_off": 0, "row_off": 0}]}
    assert c.post("/jobs", json=mismatch).status_code == 422
    assert c.post("/jobs", json={**body, "windows": [{**body["windows"][0], "upload": up["id"]}]}).status_code == 409
    # Text mode without weights fails at once in the worker: a finished job.
    job = c.post("/jobs", json={**body, "mode": "text", "prompt": "forest"}).json()
    assert job["transfer"] == {"uploaded_bytes": len(window), "downloaded_bytes": 0}
    assert c.post("/jobs", json=body).status_code == 409  # the upload belongs to that job now
    job, _ = hidden_service.wait(job["id"])
    assert job["state"] == "failed"
    assert c.get(f"/jobs/{job['id']}/result").status_code == 409
    job_dir = hidden_service.tmp / "data" / "jobs" / job["id"]
    assert job_dir.is_dir()
    time.sleep(0.1)
    c.post("/uploads", json={"size": 1})  # retention 0: the next upload sweeps finished jobs' files
    assert not job_dir.exists()
    assert not (hidden_service.tmp / "data" / "uploads" / f"{upload_id}.tif").exists()
    assert c.get(f"/jobs/{job['id']}").json()["state"] == "failed"  # the record stays


def test_failed_auth_is_rate_limited_per_client(hidden_service):
    url = hidden_service.url + "/jobs"
    codes = [httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    assert hidden_service.client.get("/jobs").status_code == 429  # even with the right token, for a while
    assert httpx.get(hidden_service.url + "/health").status_code == 200


def test_ctrl_c_cancels_the_remote_job(tmp_path, client_dir, hidden_service):
    scene = write_scene(client_dir / "scene.tif", width=160, height=160, blocksize=32)
    aoi = write_aoi(client_dir / "aoi.geojson", [pixel_box(scene, 60, 60, 100, 100)])
    out = client_dir / "out.tif"
    earlier = {job["id"] for job in hidden_service.client.get("/jobs").json()}

    def as_from_a_terminal():   # Ctrl-C neither blocked nor ignored, whatever the test runner's state
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "rs_geo_edit.cli", "edit", str(scene), "--aoi", str(aoi), "-o",
                             str(out), "--steps", "4000", "--width", "16", "--crop", "32", "--batch", "2", "-q",
                             "--backend", hidden_service.url],
                            env={**os.environ, "RS_GEO_EDIT_TOKEN": hidden_service.token, "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)
    deadline, mine = time.time() + 120, []
    while time.time() < deadline:   # this CLI's own job, not one an earlier test left behind
        mine = [job for job in hidden_service.client.get("/jobs").json() if job["id"] not in earlier]
        if mine and mine[0]["state"] == "running" and mine[0]["progress"] > 0.02:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    assert mine, "the CLI never submitted its job"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        signals = "\n".join(line for line in status.splitlines() if line.startswith(("Sig", "ShdPnd")))
        proc.send_signal(signal.SIGABRT)   # the fault handler prints where every thread is stuck
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the CLI did not exit within 30 s of its Ctrl-C; its signal state:\n{signals}\n"
                    f"its threads:\n{err[-6000:]}")
    assert proc.returncode == 130, err
    job, _ = hidden_service.wait(mine[0]["id"], timeout=30)
    assert job["state"] == "cancelled"
    assert not out.exists() and not list(client_dir.glob(".out*"))


def test_serving_beyond_loopback_needs_tls_or_an_acknowledgement(tmp_path):
    svc = Service(tmp_path)
    proc = subprocess.run(svc.args("--host", "0.0.0.0", "--allow-remote"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--tls-cert" in proc.stderr and "--insecure-http" in proc.stderr
    proc = subprocess.run(svc.args("--host", "0.0.0.0", "--allow-remote", "--tls-cert", str(tmp_path / "c.pem")),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "go together" in proc.stderr


def test_tls_service_on_loopback(tmp_path):
    if not Path("/usr/bin/openssl").exists():
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    svc = Service(tmp_path)
    proc = subprocess.Popen(svc.args("--tls-cert", str(cert), "--tls-key", str(key)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RS_GEO_EDIT_CACHE": str(tmp_path / "cache")})
    try:
        url = f"https://127.0.0.1:{svc.port}/health"
        deadline = time.time() + 60
        while True:
            try:
                assert httpx.get(url, verify=ssl.create_default_context(cafile=str(cert)), timeout=2).json()["status"] == "ok"
                break
            except httpx.HTTPError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.3)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{svc.port}/health", timeout=2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)


def test_batch_with_backend_edits_each_scene_remotely_and_resumes(tmp_path, client_dir, hidden_service):
    for n in range(2):  # two tiles on the same grid: the one ROI falls on both
        scene = write_scene(client_dir / f"tile{n}.tif", width=128, height=128, blocksize=64, seed=n)
    aoi = write_aoi(client_dir / "rois.geojson", [pixel_box(scene, 40, 40, 70, 70)])
    args = ["batch", "--scenes", str(client_dir / "tile*.tif"), "--aoi", aoi, "--out-dir", client_dir / "out",
            "--steps", "20", "--width", "16", "--crop", "32", "--batch", "2", "-q", "--backend", hidden_service.url]
    first = cli(*args, env={"RS_GEO_EDIT_TOKEN": hidden_service.token})
    assert first.returncode == 0, first.stderr + first.stdout
    summary = json.loads((client_dir / "out" / "summary.json").read_text())["scenes"]
    assert sorted(row["status"] for row in summary) == ["done", "done"]
    jobs = hidden_service.client.get("/jobs").json()
    assert len(jobs) == 2 and all(j["state"] == "done" and j["transfer"]["uploaded_bytes"] for j in jobs)
    again = cli(*args, env={"RS_GEO_EDIT_TOKEN": hidden_service.token})
    assert again.returncode == 0 and "2 complete" in again.stdout
    assert len(hidden_service.client.get("/jobs").json()) == 2


class DroppingProxy:
    """A TCP proxy to the service that drops the connection once ``cut`` bytes went up (in the
    middle of the first upload chunk), and counts the bytes it forwarded from client to server."""

    def __init__(self, target_port: int, cut: int):
        import threading

        self.target_port, self.cut, self.forwarded, self.dropped = target_port, cut, 0, False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            conn, _ = self.server.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, False), daemon=True).start()

    def _pipe(self, src, dst, upward):
        try:
            while data := src.recv(65536):
                if upward and not self.dropped and self.forwarded + len(data) > self.cut:
                    dst.sendall(data[:self.cut - self.forwarded])
                    self.forwarded, self.dropped = self.cut, True
                    break
                dst.sendall(data)
                if upward:
                    self.forwarded += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_client_upload_resumes_after_a_dropped_connection(client_dir, hidden_service):
    from rs_geo_edit.jobs.client import Backend

    path = write_scene(client_dir / "w.tif", width=512, height=512, blocksize=128, compress=None)
    size = path.stat().st_size
    proxy = DroppingProxy(hidden_service.port, cut=size // 2)
    backend = Backend(f"http://127.0.0.1:{proxy.port}", hidden_service.token, chunk=2 * size)
    seen = []
    upload_id = backend.upload(path, seen.append)
    assert proxy.dropped and seen[-1] == size
    stored = hidden_service.tmp / "data" / "uploads" / f"{upload_id}.tif"
    assert stored.read_bytes() == path.read_bytes()
    assert proxy.forwarded < size * 1.05  # the second half only, not the whole file again


def test_plan_of_a_grid_is_the_local_plan(client_dir, hidden_service):
    """A client that can send only its scene's grid (the QGIS plugin) gets the windows and ROIs a
    local edit plans; an unusable grid, AOI or mode is a 422 naming it."""
    from shapely.geometry import box, mapping

    from rs_geo_edit.options import EditOptions
    from rs_geo_edit.pipeline import plan_scene

    scene = write_scene(client_dir / "scene.tif", width=1024, height=768, crs="EPSG:32633")
    rois = [pixel_box(scene, 100, 120, 180, 200), pixel_box(scene, 700, 500, 900, 560)]
    aoi = write_aoi(client_dir / "aoi.gpkg", rois, properties={"prompt": ["forest", "lake"]})
    local = plan_scene(scene, aoi, EditOptions.from_dict({"margin": 40}).to_config())
    with rasterio.open(scene) as src:
        grid = {"width": src.width, "height": src.height, "crs": src.crs.to_wkt(), "transform": list(src.transform)[:6]}
    features = [{"type": "Feature", "geometry": mapping(g), "properties": {"prompt": p}}
                for g, p in zip(rois, ["forest", "lake"])]
    body = {"grid": grid, "aoi": {"type": "FeatureCollection", "features": features,
                                  "crs": {"type": "name", "properties": {"name": "EPSG:32633"}}},
            "options": {"margin": 40}}
    resp = hidden_service.client.post("/plan", json=body)
    assert resp.status_code == 200, resp.text
    plan = resp.json()
    assert [(w["col_off"], w["row_off"], w["width"], w["height"]) for w in plan["windows"]] == \
        [(int(w.window.col_off), int(w.window.row_off), w.shape[1], w.shape[0]) for w in local.windows]
    assert [f["properties"] for f in plan["aoi"]["features"]] == [{"prompt": "forest", "window": 0},
                                                                   {"prompt": "lake", "window": 1}]
    assert box(*rois[1].bounds).equals(box(*shape_bounds(plan["aoi"]["features"][1]["geometry"])))

    for change, words in (({"grid": {**grid, "transform": [0, 0, 0, 0, 0, 0]}}, "degenerate"),
                          ({"grid": {**grid, "crs": "EPSG:999999"}}, "grid.crs"),
                          ({"mode": "copy"}, "copy mode"),
                          ({"aoi": {"type": "FeatureCollection", "features": []}}, "aoi")):
        resp = hidden_service.client.post("/plan", json={**body, **change})
        assert resp.status_code == 422 and words in resp.json()["detail"], (change, resp.text)
    far = {"type": "Feature", "geometry": mapping(box(0, 0, 1, 1)), "properties": {}}
    resp = hidden_service.client.post("/plan", json={**body, "aoi": {"type": "FeatureCollection", "features": [far]}})
    detail = resp.json()["detail"]
    assert resp.status_code == 422 and detail.startswith("no ROI of the inline aoi intersects the scene"), detail


def shape_bounds(geometry: dict) -> tuple:
    from shapely.geometry import shape

    return shape(geometry).bounds

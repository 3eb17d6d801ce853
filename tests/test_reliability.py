"""Faults against a real service on 127.0.0.1 (issue 17): refusals at the door, a cancel that
lands within 2 s whatever the stage, dead and stuck workers replaced, 50 jobs under polling."""

import json
import os
import signal
import threading
import time

import httpx
import pytest

from conftest import pixel_box, write_aoi, write_scene
from live_service import TINY, Service, health, state_of, submit, training, wait_for

HUGE = {"steps": 200_000, "width": 16, "crop": 32, "batch": 2, "threads": 1}
CANCEL_LIMIT_S = 2.0
DEAD_WORKER_LIMIT_S = 5.0


def documented(spec: dict, method: str, route: str, status: int) -> bool:
    return str(status) in spec["paths"][route][method]["responses"]


def test_refusals_at_the_door_are_4xx_with_a_reason(service, scene, tmp_path):
    path, aoi = scene
    spec = httpx.get(service.url + "/openapi.json").json()
    body = {"scene": str(path), "aoi": str(aoi), "output": str(tmp_path / "out.tif")}
    seen = []

    def post(expect: int, needle: str, **kw):
        resp = service.client.post("/jobs", **kw)
        assert resp.status_code == expect, resp.text
        assert needle.lower() in resp.json()["detail"].lower(), resp.json()["detail"]
        assert "\n" not in resp.json()["detail"]
        seen.append(resp.status_code)
        return resp

    # 3: DNS rebinding: a foreign Host is refused even with the token; loopback names pass
    for route in ("/health", "/jobs"):
        resp = service.client.get(route, headers={"Host": "evil.example"})
        assert resp.status_code == 400 and "evil.example" in resp.json()["detail"]
        assert documented(spec, "get", route, 400)
    post(400, "not allowed", json=body, headers={"Host": f"evil.example:{service.port}"})
    for host in (f"localhost:{service.port}", f"127.0.0.1:{service.port}", "[::1]"):
        assert service.client.get("/jobs", headers={"Host": host}).status_code == 200
    assert httpx.get(service.url + "/jobs", headers={"Host": "localhost"}).status_code == 401

    # malformed bodies, wrong types, unknown fields: 422 naming the field
    post(422, "not valid JSON", content=b'{"scene": ', headers={"Content-Type": "application/json"})
    post(422, "body", json=[1, 2])
    post(422, "options.steps", json={**body, "options": {"steps": "many"}})
    post(422, "seed", json={**body, "seed": "x"})
    post(422, "colour: unknown field", json={**body, "colour": "red"})
    post(422, "options.stepz: unknown field", json={**body, "options": {"stepz": 3}})
    post(422, "scene", json={"aoi": str(aoi)})
    # 4: absurd options: 422 naming the option and its bound (the bounds of the options schema)
    from rs_geo_edit.options import SPEC_BY_NAME

    top = SPEC_BY_NAME["steps"].maximum
    resp = post(422, "options.steps", json={**body, "options": {"steps": 1_000_000_000}})
    assert f"{top}" in resp.json()["detail"].replace(",", "").replace("_", ""), resp.json()["detail"]
    post(422, "options.feather", json={**body, "options": {"feather": -1}})
    # missing and unusable files
    post(422, str(tmp_path / "nowhere.tif"), json={**body, "scene": str(tmp_path / "nowhere.tif")})
    post(422, "not a usable path", json={**body, "scene": "scene\x00.tif"})
    post(422, "directory", json={**body, "scene": str(tmp_path)})
    (tmp_path / "notes.txt").write_text("not a raster")
    post(422, "not a readable raster", json={**body, "scene": str(tmp_path / "notes.txt")})
    # 5: a truncated GeoTIFF is refused at submit, with the reason
    broken = write_scene(tmp_path / "broken.tif", width=96, height=96, blocksize=32)
    os.truncate(broken, int(broken.stat().st_size * 0.6))
    post(422, "truncated", json={**body, "scene": str(broken)})
    no_crs = write_scene(tmp_path / "nocrs.tif", width=64, height=64, crs=None, transform=None)
    post(422, "no CRS", json={**body, "scene": str(no_crs)})
    far = write_aoi(tmp_path / "far.geojson", [pixel_box(path, 500, 500, 520, 520)])
    post(422, "intersects", json={**body, "aoi": str(far)})
    (tmp_path / "garbage.geojson").write_text("{ nope")
    post(422, "not a readable vector", json={**body, "aoi": str(tmp_path / "garbage.geojson")})
    post(422, "FeatureCollection", json={**body, "aoi": {"type": "Point", "coordinates": [0, 0]}})
    inline = json.loads(far.read_text())
    post(422, "intersects", json={**body, "aoi": inline})
    # outputs: never over the user's file unless asked
    (tmp_path / "out.tif").write_text("the user's")
    post(422, "already exists", json=body)
    (tmp_path / "side.json").write_text('{"the user\'s": "notes"}')
    post(422, "provenance", json={**body, "output": str(tmp_path / "side.tif")})
    # body size: by Content-Length and chunked
    big = {**body, "aoi": {"type": "FeatureCollection", "features": [], "pad": "x" * (5 << 20)}}
    post(413, "request body", json=big)

    def chunks():
        for _ in range(6):
            yield b" " * (1 << 20)

    resp = service.client.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    for status in set(seen):
        assert documented(spec, "post", "/jobs", status), status
    assert service.client.get("/jobs").json() == []
    assert (tmp_path / "out.tif").read_text() == "the user's" and "notes" in (tmp_path / "side.json").read_text()
    assert health(service)["status"] == "ok"


def test_cancel_lands_within_2s_in_training_and_keeps_the_checkpoint(service, scene, tmp_path):
    path, aoi = scene
    out = tmp_path / "huge.tif"
    job_id = submit(service, path, aoi, out, HUGE)
    wait_for(training(service, job_id), 120)
    t0 = time.monotonic()
    assert service.client.delete(f"/jobs/{job_id}").status_code == 200
    job, waited = wait_for(state_of(service, job_id, ("cancelled", "failed", "done")), 10)
    latency = time.monotonic() - t0
    assert job["state"] == "cancelled" and latency <= CANCEL_LIMIT_S, (job["state"], latency)
    assert not out.exists() and not list(tmp_path.glob(".huge*"))
    checkpoints = list((tmp_path / "cache").rglob("checkpoint.pt"))
    assert len(checkpoints) == 1, "the training checkpoint is kept so that a resubmit resumes"
    assert health(service)["worker_restarts"] == 0, "the worker stopped by itself, it was not killed"


def test_cancel_lands_within_2s_while_sampling(service, scene, tmp_path):
    path, aoi = scene
    out = tmp_path / "sampled.tif"
    job_id = submit(service, path, aoi, out, {**TINY, "steps": 10, "timesteps": 4000, "sample_stride": 1,
                                                         "net_scales": 0})   # the net samples every scale
    wait_for(lambda: (j := service.client.get(f"/jobs/{job_id}").json())["stage"] == "sample" and j, 120)
    t0 = time.monotonic()
    service.client.delete(f"/jobs/{job_id}")
    job, _ = wait_for(state_of(service, job_id, ("cancelled", "failed", "done")), 10)
    latency = time.monotonic() - t0
    assert job["state"] == "cancelled" and latency <= CANCEL_LIMIT_S, (job["state"], latency)
    assert not out.exists() and not list(tmp_path.glob(".sampled*"))


def test_stuck_worker_is_killed_on_cancel_and_replaced(service, scene, tmp_path):
    path, aoi = scene
    job_id = submit(service, path, aoi, tmp_path / "stuck.tif", HUGE)
    wait_for(training(service, job_id), 120)
    [pid] = health(service)["worker_pids"]
    os.kill(pid, signal.SIGSTOP)  # a worker that can neither poll nor step: only the supervisor can end it
    t0 = time.monotonic()
    service.client.delete(f"/jobs/{job_id}")
    job, _ = wait_for(state_of(service, job_id, ("cancelled", "failed", "done")), 10)
    latency = time.monotonic() - t0
    assert job["state"] == "cancelled" and latency <= CANCEL_LIMIT_S, (job["state"], latency)
    new, _ = wait_for(lambda: (h := health(service))["workers_alive"] == 1 and pid not in h["worker_pids"] and h, 10)
    assert new["worker_restarts"] == 1
    nxt = submit(service, path, aoi, tmp_path / "next.tif", TINY)
    job, _ = wait_for(state_of(service, nxt, ("done", "failed", "cancelled")), 240, every=0.3)
    assert job["state"] == "done", job["error"]


def test_killed_worker_requeues_once_then_fails_and_is_replaced(service, scene, tmp_path):
    path, aoi = scene
    doomed = submit(service, path, aoi, tmp_path / "doomed.tif", HUGE)
    after = submit(service, path, aoi, tmp_path / "after.tif", TINY)
    for attempt in (1, 2):
        job, _ = wait_for(training(service, doomed), 120)
        assert job["attempts"] == attempt
        [pid] = health(service)["worker_pids"]
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()

        def handled(j=None):
            j = service.client.get(f"/jobs/{doomed}").json()
            moved = j["state"] == "queued" or j["attempts"] > attempt if attempt == 1 else j["state"] == "failed"
            return j if moved else None

        job, _ = wait_for(handled, 10)
        noticed = time.monotonic() - t0
        assert noticed <= DEAD_WORKER_LIMIT_S, noticed
        if attempt == 1 and job["state"] == "queued":
            assert "SIGKILL" in job["message"] and "attempt 2 of 2" in job["message"], job["message"]
    assert "SIGKILL" in job["error"] and "2 attempts" in job["error"]
    assert not list(tmp_path.glob(".doomed*"))
    job, _ = wait_for(state_of(service, after, ("done", "failed", "cancelled")), 240, every=0.3)
    assert job["state"] == "done", job["error"]
    h = health(service)
    assert h["worker_restarts"] == 2 and h["workers_alive"] == 1 and h["status"] == "ok"
    assert h["last_worker_loss"]["job"] == doomed and h["last_worker_loss"]["state"] == "failed"


def test_fifty_jobs_from_four_clients_under_polling(service, tmp_path):
    path = write_scene(tmp_path / "small.tif", width=48, height=48, blocksize=16)
    aoi = write_aoi(tmp_path / "small.geojson", [pixel_box(path, 16, 16, 28, 28)])
    options = {"steps": 5, "width": 8, "crop": 16, "batch": 1, "timesteps": 8, "threads": 1}
    ids: list[tuple[float, str]] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=service.url, headers=service.client.headers, timeout=30) as c:
            for k in range(n * 13, min(50, n * 13 + 13)):
                resp = c.post("/jobs", json={"scene": str(path), "aoi": str(aoi), "seed": k,
                                             "output": str(tmp_path / f"out-{k}.tif"), "options": options})
                with lock:
                    statuses.append(resp.status_code)
                    if resp.status_code == 201:
                        ids.append((resp.json()["created"], resp.json()["id"]))

    def poller() -> None:
        with httpx.Client(base_url=service.url, headers=service.client.headers, timeout=30) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                target = f"/jobs/{ids[-1][1]}" if ids else "/jobs"
                for url in (target, "/health"):
                    with lock:
                        statuses.append(c.get(url).status_code)
                time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))  # 2 requests per 0.2 s: 10 req/s

    poll = threading.Thread(target=poller)
    poll.start()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        assert len(ids) == 50
        last = sorted(ids)[-1][1]
        job, _ = wait_for(state_of(service, last, ("done", "failed", "cancelled")), 900, every=0.5)
    finally:
        stop.set()
        poll.join()
    assert set(statuses) == {200, 201}, sorted(set(statuses))
    jobs = service.client.get("/jobs", params={"limit": 100}).json()
    assert len(jobs) == 50 and all(j["state"] == "done" for j in jobs), [j["error"] for j in jobs if j["error"]]
    by_created = sorted(jobs, key=lambda j: j["created"])
    assert [j["started"] for j in by_created] == sorted(j["started"] for j in jobs), "run in submission order"
    assert all((tmp_path / f"out-{k}.tif").is_file() for k in range(50))

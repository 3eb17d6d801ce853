"""The job service on a real uvicorn server on 127.0.0.1: jobs, progress, cancel, restarts, auth."""

import json
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio

from conftest import pixel_box, write_aoi, write_scene
from live_service import LONG, TINY, Service, submit


def test_job_runs_to_done_with_monotonic_progress(service, scene, tmp_path):
    path, aoi = scene
    inline = json.loads(Path(aoi).read_text())
    job_id = submit(service, path, inline, tmp_path / "out.tif", TINY, seed=3)
    job, seen = service.wait(job_id)
    assert job["state"] == "done", job["error"]
    assert seen == sorted(seen) and job["progress"] == 1.0
    assert job["result"]["output"] == str(tmp_path / "out.tif")
    with rasterio.open(path) as src, rasterio.open(tmp_path / "out.tif") as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert not np.array_equal(src.read(), dst.read())
    listed = service.client.get("/jobs").json()
    assert [j["id"] for j in listed] == [job_id]
    events = service.client.get(f"/jobs/{job_id}/events").text
    assert "event: progress" in events and '"state": "done"' in events
    health = httpx.get(service.url + "/health").json()
    assert health["version"] and health["device"] == "cpu" and health["queue_length"] == 0
    assert health["clip_weights"] == [] and "text" in health["modes"]


def test_cancel_running_job_leaves_no_output(service, scene, tmp_path):
    path, aoi = scene
    out = tmp_path / "cancelled.tif"
    job_id = submit(service, path, aoi, out, LONG)
    job, _ = service.wait(job_id, states=("running",))
    deadline = time.time() + 60
    while service.client.get(f"/jobs/{job_id}").json()["progress"] < 0.05 and time.time() < deadline:
        time.sleep(0.2)
    t0 = time.time()
    assert service.client.delete(f"/jobs/{job_id}").status_code == 200
    job, _ = service.wait(job_id, timeout=30)
    assert job["state"] == "cancelled" and time.time() - t0 < 10
    assert not out.exists() and not list(tmp_path.glob(".cancelled*"))


def test_kill9_restart_finishes_running_and_queued(tmp_path, scene):
    path, aoi = scene
    svc = Service(tmp_path).start()
    first = submit(svc, path, aoi, tmp_path / "first.tif", {**TINY, "steps": 1500})
    second = submit(svc, path, aoi, tmp_path / "second.tif", TINY, seed=1)
    svc.wait(first, states=("running",))
    deadline = time.time() + 60
    while svc.client.get(f"/jobs/{first}").json()["progress"] < 0.05 and time.time() < deadline:
        time.sleep(0.2)
    assert svc.client.get(f"/jobs/{second}").json()["state"] == "queued"
    svc.kill9()
    restarted = Service(tmp_path)
    restarted.port, restarted.url = svc.port, svc.url
    restarted.start()
    try:
        for job_id, name in ((first, "first.tif"), (second, "second.tif")):
            job, _ = restarted.wait(job_id)
            assert job["state"] == "done", job["error"]
            assert (tmp_path / name).exists()
        assert restarted.client.get(f"/jobs/{first}").json()["interrupted"] is True
        assert not list(tmp_path.glob(".first*"))
    finally:
        restarted.stop()


def test_auth_validation_and_limits(service, scene, tmp_path):
    path, aoi = scene
    body = {"scene": str(path), "aoi": str(aoi)}
    assert httpx.post(service.url + "/jobs", json=body).status_code == 401
    assert httpx.post(service.url + "/jobs", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(service.url + "/jobs").status_code == 401
    # the token as the password of HTTP Basic (how a QGIS authentication configuration carries it)
    assert httpx.get(service.url + "/jobs", auth=("anyone", service.token)).status_code == 200
    assert httpx.get(service.url + "/jobs", auth=(service.token, "wrong")).status_code == 401
    missing = str(tmp_path / "nowhere" / "x.tif")
    resp = service.client.post("/jobs", json={"scene": missing, "aoi": str(aoi)})
    assert resp.status_code == 422 and missing in resp.json()["detail"]
    resp = service.client.post("/jobs", json={**body, "output": str(path)})
    assert resp.status_code == 422 and "also an input" in resp.json()["detail"]
    resp = service.client.post("/jobs", json={**body, "colour": "red"})
    assert resp.status_code == 422 and "colour" in resp.text
    big = {**body, "aoi": {"type": "FeatureCollection", "features": [], "pad": "x" * (5 << 20)}}
    assert service.client.post("/jobs", json=big).status_code == 413
    assert service.client.get("/jobs/unknown").status_code == 404
    token_file = tmp_path / "config" / "token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    printed = subprocess.run(service.args("--print-token"), capture_output=True, text=True)
    assert printed.stdout.strip() == service.token


def test_remote_bind_refused_without_flag(tmp_path):
    svc = Service(tmp_path)
    proc = subprocess.run(svc.args("--host", "0.0.0.0"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--allow-remote" in proc.stderr


def test_options_schema_at_the_door_and_text_when_a_prompt_is_given(service, scene, tmp_path):
    path, aoi = scene
    body = {"scene": str(path), "aoi": str(aoi), "output": str(tmp_path / "o.tif")}
    resp = service.client.post("/jobs", json={**body, "options": {"steps": 1_000_000_000}})
    assert resp.status_code == 422 and "steps" in resp.text and "1000000" in resp.text
    resp = service.client.post("/jobs", json={**body, "options": {"width": 15}})
    assert resp.status_code == 422 and "width" in resp.text and "multiple of 2" in resp.text
    steps = service.client.get("/openapi.json").json()["components"]["schemas"]["JobOptions"]["properties"]["steps"]
    assert {"minimum": 1, "maximum": 1_000_000} in [{k: v for k, v in a.items() if k in ("minimum", "maximum")}
                                                     for a in steps["anyOf"]]
    # A prompt and no mode runs text: the worker loads the CLIP the options name, and says which option is wrong.
    job_id = submit(service, path, aoi, tmp_path / "o.tif", {**TINY, "margin": 8, "clip": "no-such-clip"},
                    prompt="dense forest")
    job, _ = service.wait(job_id)
    assert job["state"] == "failed" and job["error"].startswith("options.clip 'no-such-clip'"), job["error"]
    assert job["request"]["options"]["margin"] == 8 and job["request"]["mode"] is None
    assert not (tmp_path / "o.tif").exists()

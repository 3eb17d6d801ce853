"""Batch editing: scenes in several CRSs with one AOI, a corrupt scene, resume after a kill, Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import box

from conftest import write_aoi, write_scene

CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
TINY = ["--steps", "20", "--width", "8", "--crop", "16", "--batch", "1", "--threads", "1", "--quiet"]
LON, LAT = 12.50, 46.00
CRSS = {"utm33": ("EPSG:32633", 10.0), "merc": ("EPSG:3857", 14.0), "geo": ("EPSG:4326", 0.00012),
        "utm32": ("EPSG:32632", 10.0)}


def scenes_around_one_place(folder: Path, names=tuple(CRSS)) -> list[Path]:
    """Scenes of 96 x 96 px centred on the same place, each in its own CRS."""
    paths = []
    for k, name in enumerate(names):
        crs, pixel = CRSS[name]
        x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(LON, LAT)
        transform = from_origin(x - 48 * pixel, y + 48 * pixel, pixel, pixel)
        paths.append(write_scene(folder / f"{name}.tif", width=96, height=96, blocksize=32, crs=crs,
                                 transform=transform, seed=k))
    return paths


def shared_aoi(folder: Path) -> Path:
    d = 0.0002  # ~20 m around the common centre, in EPSG:4326
    return write_aoi(folder / "aoi.geojson", [box(LON - d, LAT - d, LON + d, LAT + d)], crs="EPSG:4326")


def run(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def test_glob_batch_across_crss_with_a_corrupt_scene(tmp_path):
    scenes_around_one_place(tmp_path)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + os.urandom(500))
    write_scene(tmp_path / "far.tif", width=64, height=64, blocksize=32, crs="EPSG:32633")  # elsewhere
    aoi = shared_aoi(tmp_path)
    out = tmp_path / "out"
    proc = run("batch", "--scenes", tmp_path / "*.tif", "--aoi", aoi, "--out-dir", out,
               "--cache-dir", tmp_path / "cache", *TINY)
    assert proc.returncode == 1, proc.stderr          # one failure -> non-zero exit, the rest still done
    summary = json.loads((out / "summary.json").read_text())["scenes"]
    status = {Path(r["scene"]).name: r for r in summary}
    assert {n: r["status"] for n, r in status.items()} == {
        "broken.tif": "failed", "far.tif": "skipped", "geo.tif": "done", "merc.tif": "done", "utm32.tif": "done",
        "utm33.tif": "done"}
    assert "intersects the scene" in status["far.tif"]["error"]
    assert "not a readable raster" in status["broken.tif"]["error"]
    assert sorted(p.name for p in out.glob("*.tif")) == ["geo_edited.tif", "merc_edited.tif", "utm32_edited.tif",
                                                        "utm33_edited.tif"]
    csv_text = (out / "summary.csv").read_text()
    assert csv_text.splitlines()[0] == "scene,aoi,output,status,seconds,windows,error" and "broken.tif" in csv_text


def test_interrupted_batch_resumes(tmp_path):
    scenes_around_one_place(tmp_path, ("utm33", "merc", "geo"))
    aoi = shared_aoi(tmp_path)
    out = tmp_path / "out"
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("scene,aoi,seed\n" + "".join(f"{n}.tif,aoi.geojson,{k}\n" for k, n in
                                                     enumerate(("utm33", "merc", "geo"))))
    args = ["batch", "--manifest", manifest, "--out-dir", out, "--cache-dir", tmp_path / "cache",
            "--steps", "300", "--width", "8", "--crop", "16", "--batch", "1", "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(CLI + [str(a) for a in args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*_edited.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in out.glob("*_edited.json"))
    assert 1 <= len(finished) < 3
    assert not (out / "summary.json").exists()
    first_bytes = {p.name: p.read_bytes() for p in out.glob("*_edited.tif") if p.with_suffix(".json").exists()}
    again = run(*args)
    assert again.returncode == 0, again.stderr
    rows = {Path(r["scene"]).stem: r["status"] for r in json.loads((out / "summary.json").read_text())["scenes"]}
    assert sorted(s for s, st in rows.items() if st == "complete") == [n.replace("_edited", "") for n in finished]
    assert all(st in ("complete", "done") for st in rows.values()) and len(rows) == 3
    for name, data in first_bytes.items():
        assert (out / name).read_bytes() == data          # complete outputs were not redone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    forced = run(*args, "--force")
    assert forced.returncode == 0
    assert {r["status"] for r in json.loads((out / "summary.json").read_text())["scenes"]} == {"done"}


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_executor_matches_local_byte_for_byte(tmp_path, ray_local):
    from rs_geo_edit.batch import items_from_glob, run_batch
    from rs_geo_edit.config import make_config
    from rs_geo_edit.executors import make_executor

    scenes_around_one_place(tmp_path, ("utm33", "merc"))
    aoi = shared_aoi(tmp_path)
    results = {}
    for name in ("local", "ray"):
        # separate model caches: each executor trains its own models
        config = make_config("fast", model_overrides={"steps": 20, "width": 8, "crop": 16, "batch": 1}, threads=1,
                             cache_dir=tmp_path / f"cache-{name}")
        out = tmp_path / name
        items = items_from_glob(str(tmp_path / "*.tif"), aoi, out)
        rows = run_batch(items, config, out, make_executor(name, address="auto"))
        assert {r["status"] for r in rows} == {"done"}, rows
        results[name] = {p.name: p.read_bytes() for p in sorted(out.glob("*.tif"))}
    assert results["local"].keys() == results["ray"].keys() and len(results["local"]) == 2
    for name in results["local"]:
        assert results["local"][name] == results["ray"][name], name


def test_bad_batch_inputs_one_line_exit_2(tmp_path):
    bad_rows = tmp_path / "bad.csv"
    bad_rows.write_text("scene,aoi\nx.tif,\n")
    not_json = tmp_path / "bad.jsonl"
    not_json.write_text("{not json}\n")
    cases = [
        (["--manifest", tmp_path / "missing.csv"], "does not exist"),
        (["--manifest", bad_rows], "needs 'scene' and 'aoi'"),
        (["--manifest", not_json], "line 1 is not JSON"),
        (["--scenes", tmp_path / "*.tif"], "--scenes needs --aoi"),
        (["--scenes", tmp_path / "none*.tif", "--aoi", tmp_path / "a.geojson"], "matches no file"),
        ([], "either --manifest"),
        (["--manifest", bad_rows, "--executor", "spark"], "unknown executor"),
    ]
    for args, expected in cases:
        proc = run("batch", "--out-dir", tmp_path / "out", *args)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], (args, proc.stderr)
        assert not (tmp_path / "out" / "summary.csv").exists()

"""Batch editing: scenes in several CRSs with one AOI, a corrupt scene, resume after a kill, Ray, and
a scene split into one task per window (same bytes as one edit, on a process pool and on Ray)."""

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

from conftest import pixel_box, write_aoi, write_scene

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
        (["--manifest", bad_rows, "--split-windows", "--pairs"], "--split-windows edits each scene here"),
    ]
    for args, expected in cases:
        proc = run("batch", "--out-dir", tmp_path / "out", *args)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], (args, proc.stderr)
        assert not (tmp_path / "out" / "summary.csv").exists()


# --------------------------------------------------------------------- one task per window

BOXES = [(30, 30, 70, 70), (300, 40, 340, 80), (160, 290, 200, 330)]   # col0, row0, col1, row1: three windows
SMALL = {"steps": 40, "width": 16, "crop": 32, "batch": 2, "threads": 1, "model_scope": "scene"}
SMALL_ARGS = [a for k, v in SMALL.items() for a in (f"--{k.replace('_', '-')}", v)] + ["--quiet"]


@pytest.fixture(scope="module")
def three_windows(tmp_path_factory):
    """A scene with three ROI windows, edited as one scene with one scene model by the CLI:
    (scene, AOI, the edited GeoTIFF, its provenance record, the model cache)."""
    folder = tmp_path_factory.mktemp("three-windows")
    scene = write_scene(folder / "scene.tif", height=384, width=384)
    aoi = write_aoi(folder / "aoi.geojson", [pixel_box(scene, *b) for b in BOXES])
    (folder / "edit").mkdir()
    output = folder / "edit" / "scene_edited.tif"
    proc = run(scene, "--aoi", aoi, "-o", output, "--cache-dir", folder / "cache", *SMALL_ARGS)
    assert proc.returncode == 0, proc.stderr
    return scene, aoi, output, json.loads(output.with_suffix(".json").read_text()), folder / "cache"


def assert_same_edit(out_dir: Path, reference: Path, reference_record: dict) -> None:
    """The split batch's output is the plain edit's bytes, with one scene model trained once."""
    output = out_dir / "scene_edited.tif"
    assert output.read_bytes() == reference.read_bytes()
    record = json.loads(output.with_suffix(".json").read_text())
    models = record["editor"]["models"]
    assert len(models) == 1, models
    assert models[0]["scope"] == "scene" and models[0]["trained"] is True and models[0]["windows"] == [0, 1, 2]
    assert [w["cache_key"] for w in record["editor"]["windows"]] == [models[0]["cache_key"]] * 3
    assert models[0]["cache_key"] == reference_record["editor"]["models"][0]["cache_key"]

    def facts(windows):
        return [{k: v for k, v in w.items() if k != "seconds"} for w in windows]

    assert facts(record["windows"]) == facts(reference_record["windows"])
    assert len(record["windows"]) == 3 and all(w["changed_pixels"] > 0 for w in record["windows"])


def test_split_windows_on_a_process_pool_gives_the_edit_bytes(three_windows, tmp_path):
    scene, aoi, reference, reference_record, _ = three_windows
    out = tmp_path / "out"
    args = ["batch", "--scenes", scene, "--aoi", aoi, "--out-dir", out, "--cache-dir", tmp_path / "cache",
            "--split-windows", "--workers", "2", *SMALL_ARGS]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert_same_edit(out, reference, reference_record)
    [row] = json.loads((out / "summary.json").read_text())["scenes"]
    assert row["status"] == "done" and row["windows"] == 3 and row["seconds"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["scene_edited.json", "scene_edited.tif", "summary.csv",
                                                    "summary.json"]
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in json.loads((out / "summary.json").read_text())["scenes"]] == ["complete"]


def test_split_windows_on_ray_gives_the_edit_bytes(three_windows, tmp_path, ray_local):
    from rs_geo_edit.batch import items_from_glob, run_batch
    from rs_geo_edit.executors import make_executor
    from rs_geo_edit.options import EditOptions

    scene, aoi, reference, reference_record, _ = three_windows
    out = tmp_path / "out"
    rows = run_batch(items_from_glob(str(scene), aoi, out), EditOptions(**SMALL, cache_dir=str(tmp_path / "cache")),
                     out, make_executor("ray", address="auto"), split_windows=True)
    assert [(r["status"], r["windows"]) for r in rows] == [("done", 3)], rows
    assert_same_edit(out, reference, reference_record)


def test_a_failed_window_fails_its_scene_and_writes_nothing(three_windows, tmp_path):
    """Window tasks load the scene model from the cache; one that cannot (a cache folder the
    workers do not see, here emptied after the model was trained) fails the scene, naming the fix."""
    import shutil

    from rs_geo_edit.batch import items_from_glob, run_batch
    from rs_geo_edit.executors import make_executor
    from rs_geo_edit.options import EditOptions

    scene, aoi, _, reference_record, cache = three_windows
    key = reference_record["editor"]["models"][0]["cache_key"]
    out = tmp_path / "out"

    def lose_the_model(event):
        if event.message.endswith("window task(s)"):
            shutil.rmtree(cache / "rs-geo-edit-cache" / key)

    rows = run_batch(items_from_glob(str(scene), aoi, out), EditOptions(**SMALL, cache_dir=str(cache)), out,
                     make_executor("local", workers=1), split_windows=True, progress=lose_the_model)
    [row] = rows
    assert row["status"] == "failed", row
    assert row["error"].startswith("window 0: the scene model")
    assert "give cache_dir a folder every worker sees" in row["error"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "summary.json"]

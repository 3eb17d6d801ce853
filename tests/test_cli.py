"""The command line: help, plan, and every bad input as one line, exit 2, no output left."""

import json
import os
import subprocess
import sys

import pytest
from shapely.geometry import Point, box

from conftest import SAMPLE, pixel_box, write_aoi, write_scene

CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
TINY = ["--steps", "5", "--width", "8", "--crop", "16", "--batch", "1", "--threads", "1", "--quiet"]


def run(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_help_lists_commands_and_examples():
    proc = run("--help")
    assert proc.returncode == 0
    for word in ("plan", "edit", "demo", "Examples", "rs-geo-edit scene.tif --aoi"):
        assert word in proc.stdout
    edit_help = run("edit", "--help").stdout
    for option in ("--aoi", "--mode", "--preset", "--seed", "--overwrite", "--cog", "--device", "--steps"):
        assert option in edit_help


def test_plan_prints_windows_and_writes_preview(tmp_path):
    aoi = SAMPLE.with_name("aerial_aoi.geojson")
    proc = run("plan", SAMPLE, "--aoi", aoi, "--json", "--preview", tmp_path / "plan.png")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["crs"] == "EPSG:3857" and len(plan["windows"]) == 1
    w = plan["windows"][0]
    assert (w["col_off"], w["row_off"], w["width"], w["height"]) == (576, 576, 256, 256)
    assert (tmp_path / "plan.png").stat().st_size > 1000
    reduced = run("plan", SAMPLE, "--aoi", aoi, "--max-side", "128")
    assert "reduced resolution" in reduced.stdout


@pytest.fixture
def setup(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", width=96, height=96, blocksize=32)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 30, 30, 60, 60)])
    return tmp_path, scene, aoi


def _cases(tmp_path, scene, aoi):
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(200))
    (tmp_path / "notes.txt").write_text("not a raster")
    (tmp_path / "empty.geojson").write_text("")
    (tmp_path / "garbage.gpkg").write_bytes(os.urandom(300))
    write_aoi(tmp_path / "nocrs.shp", [pixel_box(scene, 30, 30, 60, 60)], crs=None)
    c = pixel_box(scene, 30, 30, 60, 60).centroid
    write_aoi(tmp_path / "points.gpkg", [Point(c.x, c.y)])
    write_aoi(tmp_path / "far.gpkg", [box(0, 0, 50, 50)])
    (tmp_path / "exists.tif").write_bytes(b"keep")
    (tmp_path / "blocker").write_text("a file, not a directory")
    nd = write_scene(tmp_path / "nodata.tif", width=96, height=96, nodata=0, nodata_border=90, blocksize=32)
    return [
        ([tmp_path / "missing.tif", "--aoi", aoi], "does not exist"),
        ([tmp_path / "corrupt.tif", "--aoi", aoi], "not a readable raster"),
        ([tmp_path / "notes.txt", "--aoi", aoi], "not a readable raster"),
        ([scene, "--aoi", tmp_path / "missing.geojson"], "does not exist"),
        ([scene, "--aoi", tmp_path / "empty.geojson"], "is empty"),
        ([scene, "--aoi", tmp_path / "garbage.gpkg"], "not a readable vector"),
        ([scene, "--aoi", tmp_path / "nocrs.shp"], "has no CRS"),
        ([scene, "--aoi", tmp_path / "points.gpkg"], "only points or lines"),
        ([scene, "--aoi", tmp_path / "far.gpkg"], "intersects the scene"),
        ([scene, "--aoi", aoi, "-o", scene], "also an input"),
        ([scene, "--aoi", aoi, "-o", tmp_path / "blocker" / "out.tif"], "not writable"),
        ([scene, "--aoi", aoi, "-o", tmp_path / "exists.tif"], "--overwrite"),
        ([nd, "--aoi", aoi], "nodata"),
        ([scene, "--aoi", aoi, "--mode", "dance"], "--mode 'dance' is not one of regenerate, copy, text"),
        ([scene, "--aoi", aoi, "--device", "cuda:7"], "CUDA"),
    ]


def test_bad_inputs_one_line_exit_2_nothing_written(setup):
    tmp_path, scene, aoi = setup
    for args, expected in _cases(tmp_path, scene, aoi):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        proc = run(*args, "--cache-dir", tmp_path / "cache", *TINY)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(errors) == 1 and expected in errors[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        after = sorted(p.name for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "cache"))
        assert after == [n for n in before if n != "cache"], (args, set(after) ^ set(before))
    assert (tmp_path / "exists.tif").read_bytes() == b"keep"


def test_default_output_beside_scene(setup):
    tmp_path, scene, aoi = setup
    proc = run(scene, "--aoi", aoi, "--cache-dir", tmp_path / "cache", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "scene_edited.tif").exists() and (tmp_path / "scene_edited.json").exists()
    again = run(scene, "--aoi", aoi, "--cache-dir", tmp_path / "cache", *TINY)
    assert again.returncode == 2 and "--overwrite" in again.stderr

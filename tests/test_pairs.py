"""Training pairs: chips centred on ROIs, pre/post/mask GeoTIFFs, pairs.jsonl, resume, refusal
of foreign folders, and the README's loading example run as written."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import ROOT, pixel_box, write_aoi, write_scene
from rs_geo_edit.config import BlendConfig, GuidanceConfig, InstructConfig, make_config
from rs_geo_edit.errors import JobCancelled, OutputError
from rs_geo_edit.pairs import chip_window, make_pairs, read_records

CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
TINY = ["--steps", "5", "--width", "8", "--crop", "16", "--batch", "1", "--threads", "1", "--quiet"]


def _tiny_config(**fields):
    fields.setdefault("mode", "regenerate")
    return make_config("fast", model_overrides={"steps": 5, "width": 8, "crop": 16, "batch": 1}, threads=1,
                       device="cpu", **fields)


def _run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def scene_and_aoi(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", height=160, width=160, descriptions=["red", "green", "blue"],
                        tags={"SENSOR": "test-cam"})
    # One ROI in the middle, one against the top-left corner (its chip is moved inside the scene).
    geoms = [pixel_box(scene, 70, 80, 90, 96), pixel_box(scene, 2, 4, 20, 18)]
    aoi = write_aoi(tmp_path / "aoi.geojson", geoms, properties={"prompt": ["flooded fields", "burnt forest"],
                                                                 "caption": ["fields under water", None]})
    return scene, aoi


def test_chip_window_is_centred_and_clamped():
    w = chip_window((100, 200, 120, 240), 64, 1000, 1000)
    assert (w.row_off, w.col_off, w.height, w.width) == (78, 188, 64, 64)
    w = chip_window((0, 990, 10, 1000), 64, 1000, 1000)
    assert (w.row_off, w.col_off) == (0, 936)
    w = chip_window((5, 5, 10, 10), 512, 100, 300)
    assert (w.row_off, w.col_off, w.height, w.width) == (0, 0, 100, 300)


def test_cli_pairs_layout_records_and_resume(tmp_path, scene_and_aoi):
    scene, aoi = scene_and_aoi
    out = tmp_path / "pairs"
    proc = _run("pairs", scene, "--aoi", aoi, "--out-dir", out, "--chip", "64", "--variants", "2", "--seed", "5",
                "--feather", "4", "--previews", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "4 pair(s): 4 done" in proc.stdout
    records = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["scene-f0-s5", "scene-f0-s6", "scene-f1-s5", "scene-f1-s6"]
    with rasterio.open(scene) as src:
        source, transform, crs = src.read(), src.transform, src.crs
    for record in records:
        folder = out / record["id"]
        assert sorted(p.name for p in folder.iterdir()) == ["mask.tif", "post.tif", "pre.tif", "preview.png",
                                                            "roi.geojson"]
        w = record["window"]
        assert (w["width"], w["height"]) == (64, 64) and record["crs"] == crs.to_string()
        rows, cols = slice(w["row_off"], w["row_off"] + 64), slice(w["col_off"], w["col_off"] + 64)
        with rasterio.open(folder / "pre.tif") as pre, rasterio.open(folder / "post.tif") as post, \
                rasterio.open(folder / "mask.tif") as mask_src:
            assert np.array_equal(pre.read(), source[:, rows, cols]), "pre.tif is the scene's chip"
            assert pre.transform == transform * rasterio.Affine.translation(w["col_off"], w["row_off"])
            assert list(pre.transform)[:6] == record["transform"]
            for ds in (pre, post, mask_src):
                assert ds.crs == crs and ds.transform == pre.transform and (ds.width, ds.height) == (64, 64)
            assert post.dtypes[0] == "uint8" and list(post.descriptions) == ["red", "green", "blue"]
            assert post.tags()["SENSOR"] == "test-cam"
            before, after, mask = pre.read(), post.read(), mask_src.read(1)
            assert mask_src.dtypes[0] == "uint8"
        same = np.all(before == after, axis=0)
        assert same[mask == 0].all() and not same[mask == 2].any()
        assert (mask == 1).sum() == record["metrics"]["roi_pixels"] > 100
        assert (~same[mask == 1]).mean() > 0.5
        assert record["metrics"]["changed_pixels"] == int((~same).sum())
        assert set(record["metrics"]["realism"]) == {"luminance", "colour", "seam"}
        assert record["files"]["pre"] == f"{record['id']}/pre.tif" and record["engine"] == "sinddm"
        assert record["parameters"]["seed"] == record["seed"] and record["scene"] == str(scene.resolve())
    centred = next(r for r in records if r["id"] == "scene-f0-s5")
    assert (centred["window"]["col_off"], centred["window"]["row_off"]) == (48, 56)
    corner = next(r for r in records if r["id"] == "scene-f1-s5")
    assert (corner["window"]["col_off"], corner["window"]["row_off"]) == (0, 0)
    # a regenerate edit reads no prompt: no instruction; the caption is the feature's, where it has one
    assert all(r["instruction"] is None and "prompt" not in r for r in records)
    assert centred["caption"] == "fields under water" and corner["caption"] is None
    assert not centred["roi_clipped"] and not corner["roi_clipped"]
    a, b = (rasterio.open(out / f"scene-f0-s{s}/post.tif").read() for s in (5, 6))
    assert not np.array_equal(a, b), "variants differ by seed"

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = _run("pairs", scene, "--aoi", aoi, "--out-dir", out, "--chip", "64", "--variants", "2", "--seed", "5",
                 "--feather", "4", "--previews", *TINY)
    assert again.returncode == 0, again.stderr
    assert "4 pair(s): 4 complete" in again.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}, "a rerun rewrites nothing"


def test_foreign_folders_and_changed_parameters_are_refused(tmp_path, scene_and_aoi):
    scene, aoi = scene_and_aoi
    out = tmp_path / "pairs"
    foreign = out / "scene-f1-s0"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("the user's")
    proc = _run("pairs", scene, "--aoi", aoi, "--out-dir", out, "--chip", "48", *TINY)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not a finished pair listed in pairs.jsonl" in proc.stderr
    assert "--overwrite" in proc.stderr and not (out / "pairs.jsonl").exists()
    assert (foreign / "notes.txt").read_text() == "the user's" and not (out / "scene-f0-s0").exists()

    proc = _run("pairs", scene, "--aoi", aoi, "--out-dir", out, "--chip", "48", "--overwrite", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert not (foreign / "notes.txt").exists() and (foreign / "post.tif").is_file()

    changed = _run("pairs", scene, "--aoi", aoi, "--out-dir", out, "--chip", "56", *TINY)
    assert changed.returncode == 2 and "was made from other inputs or parameters" in changed.stderr


def test_interrupted_run_keeps_finished_pairs_and_resumes(tmp_path, scene_and_aoi):
    scene, aoi = scene_and_aoi
    out = tmp_path / "pairs"
    config = _tiny_config()
    seen = []

    def cancel_in_second_pair(event):
        seen.append(event.done)
        if event.done >= 1:
            raise JobCancelled("stopped")

    with pytest.raises(JobCancelled):
        make_pairs(scene, aoi, out, config, chip=48, variants=2, progress=cancel_in_second_pair)
    assert list(read_records(out)) == ["scene-f0-s0"]
    assert sorted(p.name for p in out.iterdir()) == ["pairs.jsonl", "scene-f0-s0"], "no partial folder is left"
    rows = make_pairs(scene, aoi, out, config, chip=48, variants=2)
    assert [r["status"] for r in rows] == ["complete", "done", "done", "done"]
    assert len(read_records(out)) == 4


def test_readme_loading_example_runs(tmp_path, scene_and_aoi, monkeypatch):
    scene, aoi = scene_and_aoi
    rows = make_pairs(scene, aoi, tmp_path / "pairs", _tiny_config(), chip=48)
    assert [r["roi_clipped"] for r in rows] == [False, False]
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- pairs-loading-example[^>]*-->\s*```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 14
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert len(lines) == len(rows) == 2
    for line, row in zip(lines, rows):
        pixels = row["metrics"]["roi_pixels"]
        assert line == f"{row['id']} {row['instruction']} {row['caption']} (3, 48, 48) uint8 {pixels}"


def test_instruct_engine_pairs(tmp_path, scene_and_aoi, tiny_instruct):
    scene, aoi = scene_and_aoi
    config = make_config(engine="instruct", mode="text", threads=1, device="cpu",
                         instruct=InstructConfig(model=str(tiny_instruct), steps=2))
    rows = make_pairs(scene, aoi, tmp_path / "pairs", config, chip=64, variants=2)
    assert [r["status"] for r in rows] == ["done"] * 4
    record = rows[0]
    assert record["engine"] == "instruct" and record["editor"]["pipeline"] == "StableDiffusionInstructPix2PixPipeline"
    # the prompt is what was asked; the caption is the feature's (an instruction describes no target)
    assert [(r["instruction"], r["caption"]) for r in rows] == [("flooded fields", "fields under water")] * 2 + \
        [("burnt forest", None)] * 2
    folder = tmp_path / "pairs" / record["id"]
    with rasterio.open(folder / "pre.tif") as pre, rasterio.open(folder / "post.tif") as post, \
            rasterio.open(folder / "mask.tif") as mask:
        same = np.all(pre.read() == post.read(), axis=0)
        m = mask.read(1)
    assert same[m == 0].all() and (~same[m == 1]).mean() > 0.9


def test_text_pairs_record_the_prompt_as_instruction_and_caption(tmp_path):
    """A text edit guided by CLIP is asked its prompt, which also describes its target; a
    feature's own caption takes precedence as the description."""
    scene = write_scene(tmp_path / "scene.tif", height=96, width=96)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 10, 10, 30, 30), pixel_box(scene, 60, 60, 80, 80)],
                    properties={"prompt": ["open water", "dense forest"], "caption": [None, "a spruce stand"]})
    config = _tiny_config(mode="text", guidance=GuidanceConfig(clip="rsge-landcover"))
    rows = make_pairs(scene, aoi, tmp_path / "pairs", config, chip=40)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert [(r["instruction"], r["caption"]) for r in read_records(tmp_path / "pairs").values()] == [
        ("open water", "open water"), ("dense forest", "a spruce stand")]
    assert all(r["editor"]["clip"]["name"] == "rsge-landcover" and "prompt" not in r for r in rows)


def test_batch_pairs_with_the_instruct_engine(tmp_path, tiny_instruct):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for name, seed in (("north", 1), ("south", 2)):
        write_scene(scenes / f"{name}.tif", height=96, width=96, seed=seed)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scenes / "north.tif", 30, 30, 50, 50)],
                    properties={"prompt": ["flooded fields"]})
    out = tmp_path / "out"
    args = ("batch", "--scenes", scenes / "*.tif", "--aoi", aoi, "--out-dir", out, "--pairs", "--chip", "48",
            "--variants", "2", "--engine", "instruct", "--engine-model", tiny_instruct, "--engine-steps", "2",
            "--threads", "1", "--quiet")
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())["scenes"]
    assert [(Path(r["scene"]).name, r["status"], r["windows"]) for r in summary] == [("north.tif", "done", 2),
                                                                                     ("south.tif", "done", 2)]
    for name in ("north", "south"):
        records = read_records(out / name)
        assert sorted(records) == [f"{name}-f0-s0", f"{name}-f0-s1"]
        assert {r["engine"] for r in records.values()} == {"instruct"}
        assert all((out / name / pid / "post.tif").is_file() for pid in records)


def test_roi_larger_than_the_chip_is_edited_where_the_chip_holds_it(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", height=96, width=96)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 10, 10, 86, 86)])
    (row,) = make_pairs(scene, aoi, tmp_path / "pairs", _tiny_config(blend=BlendConfig(band_px=4)), chip=40)
    assert row["roi_clipped"] and row["window"] == {"col_off": 28, "row_off": 28, "width": 40, "height": 40}
    with rasterio.open(tmp_path / "pairs" / row["id"] / "mask.tif") as mask:
        assert (mask.read(1) == 1).all(), "the whole chip lies inside the ROI"
    assert row["metrics"]["roi_pixels"] == 40 * 40

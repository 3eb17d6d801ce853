"""The instruct engine with a tiny randomly initialised InstructPix2Pix pipeline built offline:
ROI-only change, determinism, tiling, the RGB mapping of a uint16 4-band scene, missing weights."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from conftest import pixel_box, write_aoi, write_scene
from rs_geo_edit.config import BlendConfig, InstructConfig, WindowConfig, make_config
from rs_geo_edit.errors import IncompatibleOptions, WeightsNotFound
from rs_geo_edit.imaging import distance_to
from rs_geo_edit.pipeline import edit_scene, make_editor

CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
PROMPT = "flood the fields"


def _config(model, **fields):
    fields.setdefault("blend", BlendConfig(band_px=6))
    return make_config(engine="instruct", mode="text", prompt=PROMPT, threads=1, device="cpu",
                       instruct=InstructConfig(model=str(model), steps=2), **fields)


def _roi(scene, geoms):
    from rasterio.features import geometry_mask

    with rasterio.open(scene) as src:
        return geometry_mask(geoms, out_shape=(src.height, src.width), transform=src.transform, invert=True,
                             all_touched=True)


def _read(path):
    with rasterio.open(path) as src:
        return src.read()


def test_cli_edit_changes_only_the_roi(tmp_path, tiny_instruct):
    scene = write_scene(tmp_path / "scene.tif", height=96, width=96)
    geoms = [pixel_box(scene, 30, 34, 58, 60)]
    aoi = write_aoi(tmp_path / "aoi.geojson", geoms)
    out = tmp_path / "out.tif"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(CLI + [str(scene), "--aoi", str(aoi), "--engine", "instruct", "--engine-model",
                                 str(tiny_instruct), "--engine-steps", "2", "--prompt", PROMPT, "--feather", "6",
                                 "--margin", "8", "--threads", "1", "--quiet", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "tile run(s)" in proc.stdout
    a, b = _read(scene), _read(out)
    roi = _roi(scene, geoms)
    same = np.all(a == b, axis=0)
    assert same[distance_to(roi) > 6].all(), "outside ROI + blend band must be bit-identical"
    assert (~same[roi]).mean() > 0.9, "the ROI must be edited"
    record = json.loads(out.with_suffix(".json").read_text())
    editor = record["editor"]
    assert editor["name"] == "instruct" and editor["pipeline"] == "StableDiffusionInstructPix2PixPipeline"
    assert editor["weights"] == str(tiny_instruct) and editor["dtype"] == "torch.float32"
    assert record["parameters"]["engine"] == "instruct" and record["parameters"]["instruct"]["steps"] == 2


def test_same_seed_same_pixels_other_seed_other_pixels(tmp_path, tiny_instruct):
    scene = write_scene(tmp_path / "scene.tif", height=80, width=80)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 24, 24, 52, 50)])
    outputs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        config = _config(tiny_instruct, seed=seed, windows=WindowConfig(margin_px=8))
        edit_scene(scene, aoi, tmp_path / f"{name}.tif", config=config, editor=make_editor(config))
        outputs[name] = _read(tmp_path / f"{name}.tif")
    assert np.array_equal(outputs["a"], outputs["b"])
    assert not np.array_equal(outputs["a"], outputs["c"])


class CallRecorder:
    """Wraps the loaded pipeline and records the image size of every call."""

    def __init__(self, pipe):
        self.pipe, self.sizes = pipe, []

    def __call__(self, **kwargs):
        self.sizes.append(tuple(kwargs["image"].shape[-2:]))
        return self.pipe(**kwargs)


def test_window_larger_than_the_model_is_tiled_at_native_size(tmp_path, tiny_instruct):
    from rs_geo_edit.editors.instruct import ramp, tile_starts

    scene = write_scene(tmp_path / "scene.tif", height=128, width=128)
    geoms = [pixel_box(scene, 20, 30, 100, 90)]
    aoi = write_aoi(tmp_path / "aoi.geojson", geoms)
    config = _config(tiny_instruct, windows=WindowConfig(margin_px=4, margin_frac=0.0))
    editor = make_editor(config)
    assert editor.native == 32 and editor.overlap == 8
    editor.pipe = recorder = CallRecorder(editor.pipe)
    try:
        result = edit_scene(scene, aoi, tmp_path / "out.tif", config=config, editor=editor)
    finally:
        editor.pipe = recorder.pipe
    window = result.record["windows"][0]
    h, w = window["height"], window["width"]
    assert h > 32 and w > 32
    expected = len(tile_starts(h, 32, 8)) * len(tile_starts(w, 32, 8))
    assert result.record["editor"]["windows"][0]["tiles"] == expected > 4
    assert recorder.sizes and set(recorder.sizes) == {(32, 32)}, "every tile runs at the model's native size"
    a, b = _read(scene), _read(tmp_path / "out.tif")
    roi = _roi(scene, geoms)
    assert np.all(a == b, axis=0)[distance_to(roi) > 6].all()
    assert (a != b).any(axis=0)[roi].mean() > 0.9
    # Tiles cover every pixel, overlap by at least the overlap, and merge with weights that rise
    # from the tile edges (a seam would be a weight jump).
    starts = tile_starts(h, 32, 8)
    assert starts[0] == 0 and starts[-1] + 32 == h and all(b - a <= 24 for a, b in zip(starts, starts[1:]))
    weights = ramp(32, 8)
    assert weights[0] < weights[4] < weights[8] == 1.0 and np.array_equal(weights, weights[::-1])


def test_small_window_is_resampled_to_the_native_size(tmp_path, tiny_instruct):
    scene = write_scene(tmp_path / "scene.tif", height=64, width=64)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 28, 28, 36, 34)])
    config = _config(tiny_instruct, windows=WindowConfig(margin_px=4, margin_frac=0.0))
    editor = make_editor(config)
    editor.pipe = recorder = CallRecorder(editor.pipe)
    try:
        edit_scene(scene, aoi, tmp_path / "out.tif", config=config, editor=editor)
    finally:
        editor.pipe = recorder.pipe
    # A window of 14 rows x 16 columns runs once, grown to 32 px on its longer side (sides divisible by 4).
    assert recorder.sizes == [(28, 32)]


def test_uint16_four_band_scene_through_the_rgb_mapping(tmp_path, tiny_instruct):
    colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    scene = write_scene(tmp_path / "scene.tif", dtype="uint16", bands=4, nodata=0, nodata_border=6, height=96,
                        width=96, colorinterp=colorinterp, descriptions=["blue", "green", "red", "nir"])
    geoms = [pixel_box(scene, 30, 30, 60, 62)]
    aoi = write_aoi(tmp_path / "aoi.geojson", geoms)
    config = _config(tiny_instruct, windows=WindowConfig(margin_px=8))
    editor = make_editor(config)
    seen = []
    original = editor._run
    editor._run = lambda tile, *args: seen.append(tile.copy()) or original(tile, *args)
    result = edit_scene(scene, aoi, tmp_path / "out.tif", config=config, editor=editor)
    with rasterio.open(scene) as src, rasterio.open(tmp_path / "out.tif") as dst:
        a, b = src.read(), dst.read()
        assert dst.dtypes[0] == "uint16" and dst.nodata == 0 and list(dst.descriptions) == ["blue", "green", "red", "nir"]
        valid = src.dataset_mask() > 0
    roi = _roi(scene, geoms) & valid
    assert result.record["plan"]["rgb_bands"] == [3, 2, 1]
    assert np.array_equal(a[3], b[3]), "the near-infrared band keeps its source values"
    for band in range(3):
        assert (a[band] != b[band])[roi].mean() > 0.8, f"band {band + 1} goes through the model"
    assert np.all(a == b, axis=0)[distance_to(_roi(scene, geoms)) > 6].all()
    assert np.all(b[:, ~valid] == 0), "nodata stays nodata"
    # The model saw the red band first: RGB order from the colour interpretation, in [0, 1].
    tile = seen[0]
    assert tile.shape[0] == 3 and 0.0 <= tile.min() and tile.max() <= 1.0


def test_missing_weights_offline_is_one_line_and_writes_nothing(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", height=64, width=64)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 20, 20, 40, 40)])
    out = tmp_path / "out.tif"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("RS_GEO_EDIT_INSTRUCT_MODEL", None)
    proc = subprocess.run(CLI + [str(scene), "--aoi", str(aoi), "--engine", "instruct", "--prompt", PROMPT,
                                 "--quiet", "-o", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    message = lines[0]
    for needle in ("instruct weights 'timbrooks/instruct-pix2pix' not found", "--engine-model PATH",
                   "RS_GEO_EDIT_INSTRUCT_MODEL", "model_index.json"):
        assert needle in message, message
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_weights_folder_errors_name_the_folder(tmp_path, monkeypatch):
    from rs_geo_edit.editors.instruct import resolve_model

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFound, match="has no model_index.json"):
        resolve_model(str(empty))
    with pytest.raises(WeightsNotFound, match="neither a diffusers pipeline folder nor a Hugging Face repo id"):
        resolve_model(str(tmp_path / "missing" / "folder"))
    assert resolve_model("owner/model") == ("owner/model", False)
    assert resolve_model(None) == ("timbrooks/instruct-pix2pix", False)
    monkeypatch.setenv("RS_GEO_EDIT_INSTRUCT_MODEL", str(empty))
    assert InstructConfig().model == str(empty)


def test_instruct_needs_a_prompt_and_refuses_copy_mode(tmp_path, tiny_instruct):
    with pytest.raises(IncompatibleOptions, match="mode copy needs engine sinddm"):
        make_config(engine="instruct", mode="copy")
    with pytest.raises(IncompatibleOptions, match="engine 'pix2pix' is not one of"):
        make_config(engine="pix2pix")
    scene = write_scene(tmp_path / "scene.tif", height=64, width=64)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 20, 20, 40, 40)])
    config = make_config(engine="instruct", mode="regenerate", threads=1, device="cpu",
                         instruct=InstructConfig(model=str(tiny_instruct), steps=2))
    with pytest.raises(IncompatibleOptions, match="has no prompt"):
        edit_scene(scene, aoi, tmp_path / "out.tif", config=config, editor=make_editor(config))
    assert not (tmp_path / "out.tif").exists()


def test_cli_import_loads_no_diffusers():
    code = "import sys, rs_geo_edit.cli; print(sorted(m for m in ('diffusers', 'transformers', 'torch') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_service_jobs_choose_the_engine(tmp_path, tiny_instruct):
    from test_service import Service, submit

    scene = write_scene(tmp_path / "scene.tif", height=72, width=72)
    geoms = [pixel_box(scene, 24, 24, 48, 48)]
    aoi = write_aoi(tmp_path / "aoi.geojson", geoms)
    service = Service(tmp_path).start()
    try:
        health = service.client.get("/health").json()
        assert health["engines"] == ["sinddm", "instruct"]
        bad = service.client.post("/jobs", json={"scene": str(scene), "aoi": str(aoi),
                                                 "options": {"engine": "instruct", "engine_steps": 0}})
        assert bad.status_code == 422 and "engine_steps" in bad.text
        options = {"engine": "instruct", "engine_model": str(tiny_instruct), "engine_steps": 2, "threads": 1,
                   "feather": 6}
        job_id = submit(service, scene, aoi, tmp_path / "out.tif", options, prompt=PROMPT, mode="text")
        missing = submit(service, scene, aoi, tmp_path / "never.tif",
                         {"engine": "instruct", "engine_model": "nobody/nothing"}, prompt=PROMPT)
        job, _ = service.wait(job_id)
        failed, _ = service.wait(missing)
    finally:
        service.stop()
    assert job["state"] == "done", job["error"]
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["editor"]["name"] == "instruct" and record["parameters"]["instruct"]["steps"] == 2
    a, b = _read(scene), _read(tmp_path / "out.tif")
    roi = _roi(scene, geoms)
    assert np.all(a == b, axis=0)[distance_to(roi) > 6].all() and (a != b).any(axis=0)[roi].mean() > 0.9
    assert failed["state"] == "failed" and "instruct weights 'nobody/nothing' not found" in failed["error"]
    assert not (tmp_path / "never.tif").exists()


def test_eval_compares_engines_on_the_same_rois(tmp_path, tiny_instruct):
    scene = write_scene(tmp_path / "scene.tif", height=80, width=80)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 24, 24, 50, 52)], properties={"prompt": [PROMPT]})
    windows = WindowConfig(margin_px=8)
    sinddm = make_config("fast", model_overrides={"steps": 5, "width": 8, "crop": 16, "batch": 1}, mode="regenerate",
                         threads=1, device="cpu", windows=windows, blend=BlendConfig(band_px=6))
    edit_scene(scene, aoi, tmp_path / "sinddm.tif", config=sinddm, editor=make_editor(sinddm))
    instruct = _config(tiny_instruct, windows=windows)
    edit_scene(scene, aoi, tmp_path / "instruct.tif", config=instruct, editor=make_editor(instruct))
    proc = subprocess.run(CLI + ["eval", str(tmp_path / "sinddm.tif"), str(tmp_path / "instruct.tif"), "--source",
                                 str(scene), "--aoi", str(aoi), "--judge", "none", "--feather", "6", "--json",
                                 str(tmp_path / "cmp.json")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "sinddm.tif" in proc.stdout and "instruct.tif" in proc.stdout
    reports = json.loads((tmp_path / "cmp.json").read_text())["outputs"]
    assert [r["engine"] for r in reports] == ["sinddm", "instruct"]
    for report in reports:
        (row,) = report["rois"]
        assert row["outside_fidelity"] == 1.0 and row["prompt"] == PROMPT and row["roi_pixels"] > 500
        assert np.isfinite(row["seam_gradient_ratio"]) and {"luminance_detail", "colour_detail", "seam_ratio"} <= set(row)

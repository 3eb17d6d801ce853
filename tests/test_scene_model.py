"""One model per scene: trained once on all the scene's windows, it serves every ROI.

Checked on real GeoTIFFs through the CLI: three windows train one model (the provenance says which
model served which window), a re-edit loads it from the cache, window scope trains three; pixels
change inside the ROIs only; the same seed gives the same bytes. The common scale ladder aligns
the finest scales of windows of different sizes.
"""

import json
import subprocess
import sys

import numpy as np
import rasterio

from conftest import pixel_box, write_aoi, write_scene
from rs_geo_edit.model.pyramid import build_pyramid
from rs_geo_edit.model.trainer import scale_offsets

BOXES = [(30, 30, 70, 70), (300, 40, 340, 80), (160, 290, 200, 330)]   # col0, row0, col1, row1
SMALL = ["--steps", "40", "--width", "16", "--crop", "32", "--batch", "2", "--threads", "1", "--quiet"]


def _edit(scene, aoi, out, cache, *extra):
    proc = subprocess.run([sys.executable, "-m", "rs_geo_edit.cli", str(scene), "--aoi", str(aoi), "-o", str(out),
                           "--cache-dir", str(cache), *SMALL, *extra], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.with_suffix(".json").read_text())


def test_three_windows_train_one_scene_model(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", height=384, width=384)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, *b) for b in BOXES])
    cache = tmp_path / "cache"
    record = _edit(scene, aoi, tmp_path / "scene.tif.out.tif", cache, "--model-scope", "scene")
    editor = record["editor"]
    assert len(record["windows"]) == 3
    assert len(editor["models"]) == 1
    model = editor["models"][0]
    assert model["scope"] == "scene" and model["trained"] is True and model["windows"] == [0, 1, 2]
    assert model["steps"] == 80   # twice a window model's
    assert [w["cache_key"] for w in editor["windows"]] == [model["cache_key"]] * 3
    assert all(w["model_scope"] == "scene" for w in editor["windows"])

    src = rasterio.open(scene).read().astype(int)
    out = rasterio.open(tmp_path / "scene.tif.out.tif").read().astype(int)
    changed = np.any(out != src, axis=0)
    band = 24   # the blend band around each ROI (fast preset)
    near = np.zeros(changed.shape, bool)
    for c0, r0, c1, r1 in BOXES:
        assert changed[r0:r1, c0:c1].mean() > 0.5
        near[max(0, r0 - band):r1 + band, max(0, c0 - band):c1 + band] = True
    assert not changed[~near].any()

    # Another seed: the scene model comes from the cache; the same seed again: the same bytes.
    again = _edit(scene, aoi, tmp_path / "seed2.tif", cache, "--model-scope", "scene", "--seed", "2")
    assert [m["trained"] for m in again["editor"]["models"]] == [False]
    fresh = _edit(scene, aoi, tmp_path / "fresh.tif", tmp_path / "cache2", "--model-scope", "scene")
    assert fresh["editor"]["models"][0]["trained"] is True
    assert np.array_equal(rasterio.open(tmp_path / "fresh.tif").read().astype(int), out)

    # Window scope: a model per window.
    per_window = _edit(scene, aoi, tmp_path / "window.tif", cache, "--model-scope", "window")
    models = per_window["editor"]["models"]
    assert [m["scope"] for m in models] == ["window"] * 3 and all(m["trained"] for m in models)
    assert [m["steps"] for m in models] == [40] * 3
    assert len({m["cache_key"] for m in models} | {model["cache_key"]}) == 4


def test_scale_ladder_aligns_the_finest_scales():
    rng = np.random.default_rng(0)
    small = build_pyramid(rng.uniform(-1, 1, (3, 96, 96)).astype(np.float32), np.ones((96, 96), bool))
    large = build_pyramid(rng.uniform(-1, 1, (3, 300, 200)).astype(np.float32), np.ones((300, 200), bool))
    offsets = scale_offsets([small, large])
    assert large.spec.n_scales > small.spec.n_scales
    assert offsets == [large.spec.n_scales - small.spec.n_scales, 0]
    # the finest scale of each is the same net scale
    assert small.spec.n_scales - 1 + offsets[0] == large.spec.n_scales - 1 + offsets[1]

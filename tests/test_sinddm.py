"""SinDDM: pyramid formulas, training, sample quality, cache, resume, modes, determinism."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from conftest import SAMPLE, pixel_box, write_aoi, write_scene
from rs_geo_edit.config import ModelConfig
from rs_geo_edit.imaging import distance_to
from rs_geo_edit.eval import patch_swd
from rs_geo_edit.geo.raster import Normaliser
from rs_geo_edit.model.sampler import Sampler
from rs_geo_edit.model.schedule import Schedule
from rs_geo_edit.model.net import SinDDMNet, parameter_count
from rs_geo_edit.model.pyramid import build_pyramid, pyramid_spec
from rs_geo_edit.model.trainer import TrainState, train

torch.set_num_threads(1)
CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
TINY = ["--steps", "60", "--width", "16", "--crop", "32", "--batch", "2", "--threads", "1", "--quiet"]


@pytest.mark.parametrize("shape", [(256, 256), (260, 256), (100, 400), (1024, 700), (600, 90), (40, 40)])
def test_pyramid_sizes_match_formulas(shape):
    h, w = shape
    spec = pyramid_spec(h, w)
    short, long = min(h, w), max(h, w)
    coarse = min(max(math.sqrt(3110 * short / long), 42), 55)
    if short <= coarse:
        assert spec.sizes == ((h, w),)
        return
    n = round(math.log(short / coarse) / math.log(1.411)) + 1
    assert spec.n_scales == n
    assert spec.sizes[-1] == (h, w)                       # finest = native resolution
    assert abs(min(spec.sizes[0]) - coarse) <= 1           # coarsest short side
    factor = (short / coarse) ** (1 / (n - 1))
    assert spec.factor == pytest.approx(factor)
    for s in range(n):
        shrink = factor ** (n - 1 - s)
        assert spec.sizes[s] == (round(h / shrink), round(w / shrink)) or s == n - 1


def test_reference_width_has_about_1_1m_parameters():
    assert 1.0e6 < parameter_count(SinDDMNet(3, 160)) < 1.2e6


def test_recon_error_in_float_without_wraparound():
    img = np.full((3, 120, 120), -1.0, np.float32)
    img[:, :, 60:] = 1.0  # a hard edge: blur error is large, and would wrap in uint8
    pyr = build_pyramid(img, np.ones((120, 120), bool))
    assert all(0 < e < 1 for e in pyr.recon_error[1:])


def _aerial_crop(size=96, col=640, row=640):
    with rasterio.open(SAMPLE) as src:
        raw = src.read(window=Window(col, row, size, size))
    return Normaliser.fit(raw, np.ones(raw.shape[1:], bool)).forward(raw)


def test_training_loss_falls_and_samples_have_source_statistics():
    image = _aerial_crop(96, col=560, row=420)   # snow, road edge and forest: strong structure
    valid = np.ones(image.shape[1:], bool)
    pyr = build_pyramid(image, valid)
    assert pyr.spec.n_scales >= 2
    sched = Schedule.build(100, pyr.recon_error, 10.0)
    assert all(t >= 10 for t in sched.t_start[1:]), sched.t_start   # finer scales generate detail
    torch.manual_seed(0)
    net = SinDDMNet(3, 32)
    import copy

    ema = copy.deepcopy(net)
    state = train(net, ema, pyr, sched, steps=900, batch=4, crop=32, lr=2e-3, lr_decay_every=600, lr_gamma=0.5,
                  ema_decay=0.99, device=torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    first, last = np.mean(state.losses[:40]), np.mean(state.losses[-40:])
    assert last < 0.8 * first, (first, last)
    out = Sampler(ema, sched, list(pyr.spec.sizes), 3, device=torch.device("cpu"), stride=2).run(
        torch.Generator().manual_seed(0))[0].numpy()
    assert out.shape == image.shape
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(image.shape) * image.std(axis=(1, 2), keepdims=True)
             + image.mean(axis=(1, 2), keepdims=True)).astype(np.float32)
    swd_sample, swd_noise = patch_swd(out, image), patch_swd(noise, image)
    assert swd_sample < 0.6 * swd_noise, (swd_sample, swd_noise)


def test_training_is_deterministic_and_resumable_in_process():
    image = _aerial_crop(64)
    pyr = build_pyramid(image, np.ones((64, 64), bool))
    sched = Schedule.build(100, pyr.recon_error)

    def run(stop_at=None, resume=None):
        import copy

        torch.manual_seed(0)
        net = SinDDMNet(3, 16)
        ema = copy.deepcopy(net)
        gen = torch.Generator().manual_seed(5)
        kept = {}
        state, opt = TrainState(), None
        if resume:
            net.load_state_dict(resume["net"])
            ema.load_state_dict(resume["ema"])
            gen.set_state(resume["gen"])
            state, opt = TrainState(resume["step"], list(resume["losses"])), resume["opt"]

        def on_step(st, o):
            if stop_at and st.step == stop_at:
                kept.update(net=copy.deepcopy(net.state_dict()), ema=copy.deepcopy(ema.state_dict()),
                            gen=gen.get_state(), step=st.step, losses=list(st.losses), opt=copy.deepcopy(o))
                raise KeyboardInterrupt

        try:
            train(net, ema, pyr, sched, steps=40, batch=2, crop=32, lr=1e-3, lr_decay_every=15, lr_gamma=0.5,
                  ema_decay=0.9, device=torch.device("cpu"), generator=gen, state=state, optimizer_state=opt,
                  on_step=on_step)
        except KeyboardInterrupt:
            return kept
        return ema.state_dict()

    full = run()
    checkpoint = run(stop_at=17)
    resumed = run(resume=checkpoint)
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def _small_scene(tmp_path, **kw):
    scene = write_scene(tmp_path / "scene.tif", width=128, height=128, blocksize=64, **kw)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 44, 40, 84, 80)],
                    crs=rasterio.open(scene).crs.to_string())
    return scene, aoi


def _run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def test_regenerate_end_to_end_cache_and_determinism(tmp_path):
    scene, aoi = _small_scene(tmp_path)
    cache = tmp_path / "cache"
    outs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.tif"
        t0 = time.perf_counter()
        proc = _run_cli(scene, "--aoi", aoi, "-o", out, "--seed", seed, "--cache-dir", cache, *TINY)
        assert proc.returncode == 0, proc.stderr
        outs[name] = (rasterio.open(out).read(), json.loads(out.with_suffix(".json").read_text()),
                      time.perf_counter() - t0)
    src = rasterio.open(scene).read()
    first, rec_a, _ = outs["a"]
    # trained once; then the cache is hit for another run and another seed
    assert rec_a["editor"]["windows"][0]["trained"] is True
    assert outs["b"][1]["editor"]["windows"][0]["trained"] is False
    assert outs["c"][1]["editor"]["windows"][0]["trained"] is False
    assert len([p for p in (cache / "rs-geo-edit-cache").iterdir() if p.is_dir()]) == 1
    # same seed -> identical; another seed -> different content inside the ROI
    assert np.array_equal(first, outs["b"][0])
    assert not np.array_equal(first, outs["c"][0])
    # the ROI changed; outside ROI + feather band bit-identical
    from rasterio.features import geometry_mask
    import geopandas as gpd

    with rasterio.open(scene) as s:
        roi = geometry_mask(list(gpd.read_file(aoi).to_crs(s.crs).geometry), out_shape=(128, 128),
                            transform=s.transform, invert=True, all_touched=True)
    far = distance_to(roi) > 16
    assert np.array_equal(first[:, far], src[:, far])
    assert np.abs(first[:, roi].astype(int) - src[:, roi].astype(int)).mean() > 2


def test_uint16_four_bands_with_nodata(tmp_path):
    scene = write_scene(tmp_path / "u16.tif", dtype="uint16", bands=4, nodata=0, nodata_border=50, width=128,
                        height=128, blocksize=64)
    aoi = write_aoi(tmp_path / "aoi.gpkg", [pixel_box(scene, 30, 30, 90, 90)])  # half on nodata
    out = tmp_path / "out.tif"
    proc = _run_cli(scene, "--aoi", aoi, "-o", out, "--cache-dir", tmp_path / "cache", *TINY)
    assert proc.returncode == 0, proc.stderr
    a, b = rasterio.open(scene).read(), rasterio.open(out).read()
    nodata = np.all(a == 0, axis=0)
    assert nodata.sum() > 0 and np.array_equal(a[:, nodata], b[:, nodata])
    assert (b[:, 55:85, 55:85] != a[:, 55:85, 55:85]).any()
    assert not np.all(b[:, ~nodata] == 0, axis=0).any()     # no new holes


def test_copy_mode_pastes_source_content(tmp_path):
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    data = np.zeros((3, 128, 128), np.uint8)
    data[:, :, :64] = 200 + rng.integers(0, 30, (3, 128, 64))     # bright left half
    data[:, :, 64:] = 30 + rng.integers(0, 30, (3, 128, 64))      # dark right half
    scene = tmp_path / "two.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5100000, 10, 10)) as dst:
        dst.write(data)
    aoi = write_aoi(tmp_path / "aoi.gpkg", [pixel_box(scene, 10, 40, 40, 70), pixel_box(scene, 84, 40, 114, 70)],
                    properties={"role": ["source", None]})
    for net_scales in (1, 0):   # fast: real patches of scene and donor at the finer scales; the net at every scale
        out = tmp_path / f"copy{net_scales}.tif"
        proc = _run_cli(scene, "--aoi", aoi, "-o", out, "--mode", "copy", "--net-scales", net_scales,
                        "--cache-dir", tmp_path / "c", *TINY)
        assert proc.returncode == 0, proc.stderr
        edited = rasterio.open(out).read()[:, 45:65, 89:109].astype(float)
        assert edited.mean() > 110, f"the bright source content should dominate the target ROI ({net_scales})"
        assert edited.std() > 4, f"the donor's grain is gone ({net_scales})"   # the source's noise: std 8.6
    grain = json.loads((tmp_path / "copy0.json").read_text())["editor"]["windows"][0]["copy_grain"]
    assert len(grain) == 4 and all(1.0 <= g <= 1.5 for g in grain)
    proc = _run_cli(scene, "--aoi", tmp_path / "aoi.gpkg", "-o", tmp_path / "x.tif", "--mode", "copy",
                    "--copy-from", tmp_path / "nothing.gpkg", *TINY)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.slow
def test_training_resumes_after_kill(tmp_path):
    scene, aoi = _small_scene(tmp_path)
    cache = tmp_path / "cache"
    args = [scene, "--aoi", aoi, "--cache-dir", cache, "--steps", "400", "--width", "16", "--crop", "32",
            "--batch", "2", "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(CLI + [str(a) for a in args] + ["-o", str(tmp_path / "killed.tif")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(cache.glob("rs-geo-edit-cache/*/checkpoint.pt")):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(cache.glob("rs-geo-edit-cache/*/checkpoint.pt")), "a checkpoint should exist before the kill"
    assert not (tmp_path / "killed.tif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".killed")]
    resumed = _run_cli(*args, "-o", tmp_path / "resumed.tif")
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((tmp_path / "resumed.json").read_text())
    assert record["editor"]["windows"][0]["resumed_from"] >= 250
    # the resumed model is the model an uninterrupted run trains
    fresh = _run_cli(*[a if a != cache else tmp_path / "cache2" for a in args], "-o", tmp_path / "fresh.tif")
    assert fresh.returncode == 0, fresh.stderr
    assert np.array_equal(rasterio.open(tmp_path / "resumed.tif").read(), rasterio.open(tmp_path / "fresh.tif").read())


def test_cache_evicts_least_recently_used(tmp_path):
    from rs_geo_edit.model.cache import ModelCache

    cache = ModelCache(tmp_path, max_bytes=10**9)
    state = SinDDMNet(3, 16).state_dict()
    for key in ("old", "mid", "new"):
        cache.save(key, state, {"k": key})
        time.sleep(0.05)
    cache.load("old")  # now the most recent
    size = sum(e[2] for e in cache.entries()) // 3
    cache.max_bytes = 2 * size + size // 2
    assert cache.evict() == ["mid"]
    assert cache.load("old") is not None and cache.load("new") is not None


def test_sampling_starts_move_finer_scales_only():
    trained = Schedule.build(100, [0.0, 0.05, 0.04, 0.03], detail_factor=10.0)
    started = trained.started_at(0.3, 0.5)
    assert started.t_start[0] == trained.t_start[0]
    assert started.t_start[1:3] == [max(1, round(t * 0.3)) for t in trained.t_start[1:3]]
    assert started.t_start[3] == max(1, round(trained.t_start[3] * 0.5))
    assert all(1 <= s < t for s, t in zip(started.t_start[1:], trained.t_start[1:]))
    assert trained.started_at(1.0, 1.0).t_start == trained.t_start
    assert torch.equal(started.gammas, trained.gammas)


def test_copy_paste_starts_inside_the_roi_and_fades_in():
    from rs_geo_edit.editors.copy import copy_ramp

    target = np.zeros((200, 200), bool)
    target[20:180, 20:180] = True            # 160 px: deep enough for the whole inset and ramp
    ramp = copy_ramp(target, 16, 32)
    assert ramp[~target].max() == 0
    assert ramp[20:36, 100].max() == 0       # the rim a band deep is left to the model
    assert 0 < ramp[37, 100] < 0.1 and ramp[51, 100] == pytest.approx(0.5, abs=0.05)
    assert ramp[100, 100] == 1 and ramp[67, 100] == 1
    small = np.zeros((64, 64), bool)
    small[24:40, 24:40] = True               # 16 px: inset and ramp shrink, a core stays
    assert copy_ramp(small, 16, 32).max() == 1
    assert copy_ramp(small, 16, 32)[24, 31] == 0
    assert not copy_ramp(np.zeros((8, 8), bool), 16, 32).any()


def test_copy_hold_keeps_the_original_where_the_paste_is_not_whole_at_coarse_scales():
    from types import SimpleNamespace

    from rs_geo_edit.editors.copy import CopyPaste

    roi = np.zeros((96, 96), bool)
    roi[8:88, 8:88] = True                   # 80 px, band 8: inset 8, ramp 16, a pasted core 24 px deep
    image = np.full((3, 96, 96), -0.5, np.float32)
    request = SimpleNamespace(roi=roi, copy_mask=np.ones_like(roi), image=image, seed=0,
                              copy_source=np.full((3, 96, 96), 0.5, np.float32))
    sizes = [(48, 48), (96, 96)]
    x0 = torch.zeros(1, 3, 48, 48)
    held = CopyPaste.build(request, sizes, 0.8, 8, "cpu", hold=0.3)(x0, 0, 10)[0, 0]
    free = CopyPaste.build(request, sizes, 0.8, 8, "cpu")(x0, 0, 10)[0, 0]
    # the coarse scale's rim (just inside the outline) is pulled to the original, the core to the
    # donor alone, and the ramp between them to both
    assert held[5, 24] == pytest.approx(0.3 * -0.5, abs=0.01) and free[5, 24] == pytest.approx(0, abs=0.01)
    assert held[24, 24] == pytest.approx(0.8 * 0.5, abs=0.01) and free[24, 24] == pytest.approx(0.4, abs=0.01)
    assert held[8, 24] < free[8, 24] and free[8, 24] > 0
    # outside the ROI neither touches the model's prediction, and the finest scale is the model's own
    assert held[1, 1] == 0 and free[1, 1] == 0
    fine = torch.zeros(1, 3, 96, 96)
    assert torch.equal(CopyPaste.build(request, sizes, 0.8, 8, "cpu", hold=0.3)(fine, 1, 10), fine)


def test_copy_paste_outline_wanders_inwards_by_seed():
    from rs_geo_edit.editors.copy import copy_ramp

    target = np.zeros((400, 400), bool)
    target[50:350, 50:350] = True            # 300 px: depth 150, the paste starts 16-47 px in
    straight = copy_ramp(target, 16, 32)
    a, b = copy_ramp(target, 16, 32, 0.3, seed=1), copy_ramp(target, 16, 32, 0.3, seed=2)
    assert np.array_equal(a, copy_ramp(target, 16, 32, 0.3, seed=1))   # the same seed, the same paste
    assert not np.array_equal(a, b)
    assert (a <= straight).all() and a[~target].max() == 0           # only ever further in
    # along one side of the square the paste's first row varies: its outline is not a straight line
    first = [int(np.argmax(a[:, col] > 0)) for col in range(120, 280)]
    assert max(first) - min(first) >= 10
    assert a[200, 200] == 1                  # the middle stays whole


def test_large_middle_scales_start_later_and_only_where_nothing_is_pasted():
    from types import SimpleNamespace

    from rs_geo_edit.config import make_config
    from rs_geo_edit.editors.sinddm import SinDDMEditor
    from rs_geo_edit.model.schedule import large_scales

    small, large = pyramid_spec(256, 256).sizes, pyramid_spec(600, 600).sizes
    assert not any(large_scales(small, 300))
    flags = large_scales(large, 300)
    assert flags == [min(size) >= 300 for size in large[:-1]] + [False] and sum(flags) == 2
    assert not flags[0] and not any(large_scales(large, 0))
    assert large_scales(large, 1) == [False] + [True] * (len(large) - 2) + [False]   # every middle scale
    trained = Schedule.build(100, [0.0] + [0.04] * (len(large) - 1), detail_factor=10.0)
    started = trained.started_at(0.3, 0.5, flags, 0.6)
    for s, (t, flag) in enumerate(zip(trained.t_start[1:-1], flags[1:-1]), start=1):
        assert started.t_start[s] == max(1, round(t * (0.6 if flag else 0.3)))
    assert started.t_start[-1] == max(1, round(trained.t_start[-1] * 0.5))
    # the editor flags them for regenerate, never where content is pasted, and not in `paper`
    request = SimpleNamespace(copy_source=None)
    assert sum(SinDDMEditor(make_config("fast", mode="regenerate"))._large_scales(request, large)) == 2
    assert not any(SinDDMEditor(make_config("fast", mode="copy"))._large_scales(request, large))
    assert not any(SinDDMEditor(make_config("paper", mode="regenerate"))._large_scales(request, large))


def test_rim_hold_keeps_the_original_on_the_rim_of_every_scale_but_the_finest():
    from rs_geo_edit.editors.keep import keep_pyramid

    roi = np.zeros((200, 200), bool)
    roi[40:160, 30:170] = True
    sizes = [(50, 50), (100, 100), (200, 200)]
    held, final = keep_pyramid(roi, 8, sizes, rim_hold=0.3)
    free, free_final = keep_pyramid(roi, 8, sizes)
    assert np.array_equal(final, free_final) and np.array_equal(held[-1], free[-1])   # the finest: as without
    mid = held[1]                                # 100 px: window rows 40-48 are the rim, 48-72 its fade
    assert mid[21, 50] == pytest.approx(0.3) and 0 < mid[27, 50] < 0.3 and mid[40, 50] == 0
    assert free[1][21, 50] == 0 and mid[50, 50] == 0                       # the core stays free
    outside = np.ones((100, 100), bool)
    outside[20:80, 15:85] = False
    assert np.array_equal(mid[outside], free[1][outside])                  # the band outside: as without
    assert held[0][11, 25] == pytest.approx(0.3) and free[0][11, 25] == 0      # the coarsest scale too
    assert all(np.array_equal(a, b) for a, b in zip(keep_pyramid(roi, 8, sizes, 0.0)[0], free))

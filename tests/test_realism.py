"""Realism of SinDDM edits: the sampler harmonises a band that every blend mode then finishes
differently, and colour speckle stays out of a real-scene edit."""

import json

import numpy as np
import pytest
import rasterio

from conftest import SAMPLE, aoi_mask, pixel_box, run_cli, write_aoi, write_scene
from rs_geo_edit.imaging import distance_to

TINY = ["--steps", "60", "--width", "16", "--crop", "32", "--batch", "2", "--threads", "1", "--quiet"]


def test_sampler_band_gives_every_blend_mode_work_to_do(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", width=128, height=128, blocksize=64)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 44, 40, 84, 80)],
                    crs=rasterio.open(scene).crs.to_string())
    outs = {}
    for blend in ("feather", "laplacian", "poisson"):
        out = tmp_path / f"{blend}.tif"
        proc = run_cli(scene, "--aoi", aoi, "-o", out, "--blend", blend, "--net-scales", 0,
                       "--cache-dir", tmp_path / "cache", *TINY)
        assert proc.returncode == 0, proc.stderr
        outs[blend] = rasterio.open(out).read()
    src = rasterio.open(scene).read()
    roi = aoi_mask(scene, aoi)
    dist = distance_to(roi)
    band = (dist > 0) & (dist <= 16)
    for name, data in outs.items():
        assert np.array_equal(data[:, dist > 16], src[:, dist > 16]), name      # exact beyond the band
        assert (data[:, band] != src[:, band]).any(), name                      # the band was generated
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            differ = np.abs(outs[a][:, band].astype(int) - outs[b][:, band].astype(int))
            assert differ.mean() > 0.2, f"{a} and {b} write (nearly) the same band"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_colour_speckle_is_removed_on_a_real_scene(tmp_path):
    """A 64 px forest ROI of the bundled scene, shortened training (an under-trained model speckles
    most), the net drawing every scale: the same model and seed with and without chroma smoothing. The
    smoothing must take most of the colour detail away and leave luminance alone."""
    aoi = write_aoi(tmp_path / "aoi.gpkg", [pixel_box(SAMPLE, 208, 788, 272, 852)], crs="EPSG:3857")
    figures = {}
    for radius in (0, 2):
        out = tmp_path / f"out{radius}.tif"
        proc = run_cli(SAMPLE, "--aoi", aoi, "-o", out, "--steps", "200", "--threads", "1", "--seed", "5",
                        "--chroma-radius", radius, "--net-scales", "0", "--cache-dir", tmp_path / "cache", "--quiet",
                        timeout=1500)
        assert proc.returncode == 0, proc.stderr
        figures[radius] = json.loads(out.with_suffix(".json").read_text())["windows"][0]["realism"]
    assert figures[2]["colour"] < 0.5 * figures[0]["colour"], figures
    assert figures[2]["luminance"] == pytest.approx(figures[0]["luminance"], rel=0.25), figures


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_fast_preset_draws_no_fog_on_a_real_scene(tmp_path):
    """A 64 px forest ROI of the bundled scene with shortened training (200 steps): the fast
    preset's generated pixels have the luminance detail of real content (0.6-1.6 of the ring's;
    the scene itself is 1.0); the same edit blurred by 1.5 px, fog, scores below 0.3, and the
    same training with the net drawing every scale, without the post-processes, gives speckle
    (5.3), so the figure catches both. Nothing rescales fast's pixels: these are raw figures."""
    from scipy.ndimage import gaussian_filter

    from rs_geo_edit.eval.metrics import realism

    aoi = write_aoi(tmp_path / "aoi.gpkg", [pixel_box(SAMPLE, 208, 788, 272, 852)], crs="EPSG:3857")
    outs = {}
    for name, extra in (("fast", []), ("net", ["--net-scales", "0", "--chroma-radius", "0", "--no-detail-match"])):
        out = tmp_path / f"{name}.tif"
        proc = run_cli(SAMPLE, "--aoi", aoi, "-o", out, "--steps", "200", "--threads", "1", "--seed", "5",
                        "--cache-dir", tmp_path / "cache", "--quiet", *extra, timeout=1500)
        assert proc.returncode == 0, proc.stderr
        outs[name] = rasterio.open(out).read(window=((700, 940), (120, 360))).astype(np.float64)
    before = rasterio.open(SAMPLE).read(window=((700, 940), (120, 360))).astype(np.float64)
    roi = np.zeros(before.shape[1:], bool)
    roi[88:152, 88:152] = True
    fast = realism(outs["fast"], before, roi)["luminance"]
    assert 0.6 <= fast <= 1.6, fast
    assert realism(outs["net"], before, roi)["luminance"] > 2.0
    fog = outs["fast"].copy()
    fog[:, roi] = gaussian_filter(outs["fast"], (0, 1.5, 1.5))[:, roi]
    assert realism(fog, before, roi)["luminance"] < 0.3

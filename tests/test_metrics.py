"""Texture-realism metrics on constructed cases cut from the bundled aerial scene."""

import numpy as np
import pytest

from conftest import SAMPLE
from rs_geo_edit.eval.metrics import detail_ratios, realism

SIDE, LO, HI = 192, 48, 144   # a 96 px ROI in the middle of a 192 px window


@pytest.fixture(scope="module")
def scene():
    import rasterio

    with rasterio.open(SAMPLE) as src:
        return src.read().astype(np.float64)


def _window(scene, row, col):
    return scene[:, row:row + SIDE, col:col + SIDE].copy()


def _roi():
    roi = np.zeros((SIDE, SIDE), bool)
    roi[LO:HI, LO:HI] = True
    return roi


# forest pasted into forest: the same land cover from another part of the scene
@pytest.mark.parametrize("target, donor", [((760, 0), (820, 60)), ((700, 100), (830, 320)),
                                           ((640, 0), (830, 320)), ((830, 320), (820, 200))])
def test_real_content_pasted_from_elsewhere_scores_in_range(scene, target, donor):
    window = _window(scene, *target)
    edited = window.copy()
    edited[:, LO:HI, LO:HI] = _window(scene, *donor)[:, LO:HI, LO:HI]
    figures = detail_ratios(edited, window, _roi())
    assert 0.8 <= figures["luminance"] <= 1.2
    assert 0.65 <= figures["colour"] <= 0.95


def test_noise_scores_high_and_colour_speckle_highest(scene):
    window = _window(scene, 820, 200)
    edited = window.copy()
    roi = _roi()
    edited[:, roi] += np.random.default_rng(0).normal(0, 6, (3, int(roi.sum())))
    figures = detail_ratios(edited, window, roi)
    assert figures["luminance"] > 1.3
    assert figures["colour"] > 5


def test_blur_scores_low(scene):
    from scipy.ndimage import gaussian_filter

    window = _window(scene, 820, 200)
    edited = window.copy()
    edited[:, LO:HI, LO:HI] = gaussian_filter(window, (0, 1.5, 1.5))[:, LO:HI, LO:HI]
    figures = detail_ratios(edited, window, _roi())
    assert figures["luminance"] < 0.5 and figures["colour"] < 0.5


def test_independent_of_radiometric_range_and_ignores_nodata(scene):
    window = _window(scene, 700, 100)
    edited = window.copy()
    edited[:, LO:HI, LO:HI] = _window(scene, 830, 320)[:, LO:HI, LO:HI]
    base = detail_ratios(edited, window, _roi())
    as_uint16 = detail_ratios(edited * 257 + 1000, window * 257 + 1000, _roi())
    assert as_uint16 == pytest.approx(base, rel=1e-9)
    # a nodata stripe of garbage across ROI and ring: masked, the figures barely move
    valid = np.ones((SIDE, SIDE), bool)
    valid[:, 90:100] = False
    garbage = np.random.default_rng(1).integers(0, 255, (3, SIDE, SIDE)).astype(np.float64)
    spoiled_src = np.where(valid, window, garbage)
    spoiled_out = np.where(valid, edited, garbage)
    masked = detail_ratios(spoiled_out, spoiled_src, _roi(), valid)
    unmasked = detail_ratios(spoiled_out, spoiled_src, _roi())
    assert masked["luminance"] == pytest.approx(base["luminance"], rel=0.15)
    assert unmasked["luminance"] > masked["luminance"] * 1.5


def test_realism_reports_seam_ratio_and_no_colour_for_one_band(scene):
    window = _window(scene, 820, 200)
    flat = window.copy()
    flat[:, LO:HI, LO:HI] = window[:, LO:HI, LO:HI].mean(axis=(1, 2))[:, None, None] + 60
    figures = realism(flat, window, _roi())
    assert figures["seam"] > 2            # a bright flat square: a plain seam
    assert realism(window, window, _roi())["seam"] == pytest.approx(1.0)
    single = detail_ratios(window[:1], window[:1], _roi())
    assert np.isnan(single["colour"]) and np.isfinite(single["luminance"])

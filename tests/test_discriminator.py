"""The discriminator figure on constructed cases cut from the bundled aerial scene: fog and
speckle are told apart from real content, a real paste much less, and its calibration regions
are real places of the ROI's shape."""

import numpy as np
import pytest

from conftest import SAMPLE
from rs_geo_edit.eval.discriminator import MARGIN_PX, PATCH, moved_regions, region_auc, roc_auc, separability
from rs_geo_edit.eval.metrics import percentile_scale

SIDE, LO, HI = 192, 64, 128   # a 64 px ROI in the middle of a 192 px window


@pytest.fixture(scope="module")
def scene():
    import rasterio

    with rasterio.open(SAMPLE) as src:
        return src.read().astype(np.float64)


def _roi(side=SIDE, lo=LO, hi=HI):
    roi = np.zeros((side, side), bool)
    roi[lo:hi, lo:hi] = True
    return roi


def _scaled(window, image):
    offset, span = percentile_scale(window)
    return ((image - offset) / span).astype(np.float32)


def test_roc_auc_counts_pairs_and_ties():
    assert roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert roc_auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert roc_auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


def test_fog_and_speckle_are_told_apart_and_a_real_paste_much_less(scene):
    from scipy.ndimage import gaussian_filter

    window = scene[:, 760:760 + SIDE, 0:SIDE].copy()
    roi, valid = _roi(), np.ones((SIDE, SIDE), bool)
    fog = window.copy()
    fog[:, roi] = gaussian_filter(window, (0, 1.5, 1.5))[:, roi]
    speckle = window.copy()
    speckle[:, roi] += np.random.default_rng(0).normal(0, 6, (3, int(roi.sum())))
    paste = window.copy()   # forest from another part of the scene (a pair of tests/test_metrics.py)
    paste[:, LO:HI, LO:HI] = scene[:, 820 + LO:820 + HI, 60 + LO:60 + HI]
    figures = {name: region_auc(_scaled(window, image), roi, valid, seed=3)
               for name, image in (("fog", fog), ("speckle", speckle), ("paste", paste))}
    assert figures["fog"] > 0.95 and figures["speckle"] > 0.95, figures
    assert figures["paste"] < 0.93, figures
    assert figures["paste"] < min(figures["fog"], figures["speckle"]) - 0.05, figures


def test_same_seed_same_figure_and_nodata_never_counts(scene):
    window = scene[:, 700:700 + SIDE, 100:100 + SIDE].copy()
    roi = _roi()
    valid = np.ones((SIDE, SIDE), bool)
    valid[:, :40] = False      # a nodata border: its garbage must not make the ROI separable
    window[:, ~valid] = np.random.default_rng(1).integers(0, 255, (3, int((~valid).sum())))
    image = _scaled(window, window)
    first = region_auc(image, roi, valid, seed=5)
    assert first == region_auc(image, roi, valid, seed=5)
    assert np.isfinite(first) and first < 0.95


def test_calibration_regions_are_real_places_of_the_rois_shape():
    side = 400
    roi = np.zeros((side, side), bool)
    rr, cc = np.mgrid[:side, :side]
    roi[(rr - 200) ** 2 + (cc - 200) ** 2 < 40 ** 2] = True      # a disc: its shape must travel
    valid = np.ones((side, side), bool)
    valid[:, 360:] = False
    regions = moved_regions(roi, valid, 4, np.random.default_rng(0))
    assert len(regions) == 4
    from scipy.ndimage import binary_dilation

    near_roi = binary_dilation(roi, np.ones((2 * (MARGIN_PX + PATCH) + 1,) * 2, bool))
    for k, region in enumerate(regions):
        assert region.sum() == roi.sum()
        rows, cols = np.nonzero(region)
        top, left = rows.min(), cols.min()
        assert np.array_equal(region[top:top + 79, left:left + 79], roi[161:240, 161:240])
        assert not (region & near_roi).any() and valid[region].all()
        assert all(not (region & other).any() for other in regions[k + 1:])
    # no room: a ROI that fills the window has nowhere to move
    assert moved_regions(_roi(96, 4, 92), np.ones((96, 96), bool), 4, np.random.default_rng(0)) == []


def test_separability_scores_the_edit_its_place_and_real_windows_elsewhere(scene):
    before = scene[:, 820:820 + SIDE, 200:200 + SIDE].copy()
    after = before.copy()
    roi = _roi()
    after[:, roi] = before[:, roi].mean(axis=1, keepdims=True)       # a flat grey square
    other = scene[:, 100:100 + SIDE, 600:600 + SIDE].copy()
    result = separability(before, after, roi, seed=2, elsewhere=[(other, np.ones((SIDE, SIDE), bool))])
    assert len(result.moved) == 1       # the window has no room of its own for a 64 px ROI
    assert result.edit > 0.95
    assert result.edit > result.real_high == max(result.place, result.moved[0])
    offset, span = percentile_scale(before)
    assert result.place == region_auc(((before - offset) / span).astype(np.float32), roi,
                                      np.ones((SIDE, SIDE), bool), seed=2)

"""Window planning: margins, clamping, merging, reduced resolution, ROI rasterisation."""

import numpy as np
from affine import Affine
from shapely.geometry import box

from rs_geo_edit.geo.aoi import ROI
from rs_geo_edit.geo.windows import plan_windows, roi_labels

T = Affine(2.0, 0, 1000.0, 0, -2.0, 5000.0)  # 2 m pixels, origin (1000, 5000)


def roi(col0, row0, col1, row1, feature=0):
    x0, y0 = T @ (col0, row0)
    x1, y1 = T @ (col1, row1)
    return ROI(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), None, feature)


def test_margin_is_max_of_minimum_and_half_extent():
    small, = plan_windows([roi(200, 200, 220, 230)], T, 1000, 1000)
    assert (small.window.col_off, small.window.row_off) == (136, 136)
    assert (small.window.width, small.window.height) == (20 + 128, 30 + 128)
    big, = plan_windows([roi(300, 300, 600, 400)], T, 2000, 2000)
    # x extent 300 -> margin 150; y extent 100 -> margin 64
    assert (big.window.col_off, big.window.row_off, big.window.width, big.window.height) == (150, 236, 600, 228)


def test_the_fraction_margin_is_capped_by_margin_max():
    rois = [roi(3000, 3000, 7096, 5048)]       # 4096 x 2048 px
    capped, = plan_windows(rois, T, 10000, 10000, margin_max_px=512)
    assert (capped.window.col_off, capped.window.row_off) == (2488, 2488)
    assert (capped.window.width, capped.window.height) == (4096 + 1024, 2048 + 1024)
    free, = plan_windows(rois, T, 10000, 10000, margin_max_px=0)
    assert (free.window.width, free.window.height) == (2 * 4096, 2 * 2048)
    small, = plan_windows([roi(200, 200, 220, 230)], T, 1000, 1000, margin_px=64, margin_max_px=10)
    assert small.window.width == 20 + 128    # the smallest margin still holds


def test_margin_max_defaults_to_512_px_and_0_lifts_it():
    from rs_geo_edit.config import make_config
    from rs_geo_edit.options import EditOptions

    assert make_config().windows.margin_max_px == 512
    assert EditOptions().to_config().windows.margin_max_px == 512
    assert EditOptions(margin_max=0).to_config().windows.margin_max_px == 0


def test_clamped_to_scene_whole_pixels():
    w, = plan_windows([roi(-5.5, 3.2, 40.7, 50.1)], T, 80, 100)
    assert (w.window.col_off, w.window.row_off) == (0, 0)
    assert w.window.width == 100 and w.window.height == 80
    assert all(float(v).is_integer() for v in (w.window.col_off, w.window.row_off, w.window.width, w.window.height))


def test_overlapping_windows_merge_transitively():
    rois = [roi(100, 100, 120, 120, 0), roi(230, 100, 250, 120, 1), roi(360, 100, 380, 120, 2),
            roi(100, 800, 120, 820, 3)]
    plan = plan_windows(rois, T, 1000, 1000)
    assert len(plan) == 2
    assert sorted(r.feature for r in plan[0].rois) == [0, 1, 2]
    assert [r.feature for r in plan[1].rois] == [3]
    assert not plan_windows(rois, T, 1000, 1000, merge=False)[0].rois[1:]


def test_reduced_resolution_factor():
    w, = plan_windows([roi(0, 0, 3000, 1000)], T, 4000, 4000, max_side=1024)
    assert w.reduced
    assert w.work_shape[1] == 1024
    assert abs(w.scale - 1024 / w.shape[1]) < 1e-12


def test_roi_labels_in_window_pixels():
    plan = plan_windows([roi(100, 100, 110, 105, 0), roi(130, 100, 140, 110, 1)], T, 1000, 1000)
    ew, = plan
    labels = roi_labels(ew, T)
    r0, c0 = int(ew.window.row_off), int(ew.window.col_off)
    assert labels.shape == ew.shape
    assert (labels[100 - r0:105 - r0, 100 - c0:110 - c0] == 1).all()
    assert (labels[100 - r0:110 - r0, 130 - c0:140 - c0] == 2).all()
    assert int((labels > 0).sum()) == 10 * 5 + 10 * 10

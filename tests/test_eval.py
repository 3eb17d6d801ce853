"""Seam metrics behave as defined."""

import numpy as np

from rs_geo_edit.eval import boundary_step, outside_fidelity, seam_gradient_ratio


def test_sgr_near_one_for_untouched_and_large_for_step():
    from conftest import texture

    img = texture(np.random.default_rng(3), 3, 160, 160)
    roi = np.zeros((160, 160), bool)
    roi[50:110, 50:110] = True
    assert 0.6 < seam_gradient_ratio(img, roi) < 1.6
    stepped = img + 0.5 * roi[None]
    assert seam_gradient_ratio(stepped, roi) > 3
    assert abs(boundary_step(stepped, roi) - 0.5) < 0.1


def test_outside_fidelity():
    a = np.zeros((2, 10, 10), np.uint16)
    b = a.copy()
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    b[0, 2, 2] = 7          # inside the mask: ignored
    assert outside_fidelity(b, a, mask) == 1.0
    b[1, 8, 8] = 7
    assert outside_fidelity(b, a, mask) == 1 - 1 / 50
    f = np.full((1, 4, 4), np.nan, np.float32)
    assert outside_fidelity(f, f.copy(), np.zeros((4, 4), bool)) == 1.0

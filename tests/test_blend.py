"""Blending: exactness outside ROI + band, seam quality of each mode, colour matching."""

import numpy as np
import pytest

from rs_geo_edit.blend import blend_window, feather_alpha, poisson_blend
from rs_geo_edit.config import BlendConfig
from rs_geo_edit.eval import boundary_step, seam_gradient_ratio


def _scene(seed=0, bands=3, size=128):
    from conftest import texture

    return (texture(np.random.default_rng(seed), bands, size, size) * 1.6 - 0.8).astype(np.float32)


def _roi(size=128):
    roi = np.zeros((size, size), bool)
    roi[40:88, 44:84] = True
    return roi


def test_feather_alpha_ramp():
    roi = _roi()
    alpha = feather_alpha(roi, 8)
    assert (alpha[roi] == 1).all()
    assert alpha[40, 43] > alpha[40, 40] > 0  # decreasing away from the ROI
    assert alpha[40, 35] == 0                   # 9 px away: outside the band
    valid = np.ones_like(roi)
    valid[40, 42] = False
    assert feather_alpha(roi, 8, valid)[40, 42] == 0


@pytest.mark.parametrize("mode", ["feather", "laplacian", "poisson"])
def test_exact_outside_band_and_seams_smaller_than_hard_paste(mode):
    source = _scene(0)
    # an edit whose content differs strongly in level: a hard paste leaves a visible seam
    edited = np.clip(_scene(1) * 0.5 + 0.4, -1, 1)
    roi, valid = _roi(), np.ones((128, 128), bool)
    out, alpha, _ = blend_window(source, edited, roi, valid, BlendConfig(mode=mode, band_px=12))
    from rs_geo_edit.imaging import distance_to

    far = distance_to(roi) > 12
    assert (alpha[far] == 0).all()
    assert np.array_equal(out[:, far], source[:, far])
    hard = np.where(roi[None], edited, source)
    assert boundary_step(out, roi) < 0.5 * boundary_step(hard, roi)
    assert seam_gradient_ratio(out, roi) < seam_gradient_ratio(hard, roi)


def test_poisson_keeps_gradients_and_any_band_count():
    source = _scene(0, bands=5)
    edited = source + 0.3  # same gradients, offset: Poisson must remove the offset entirely
    region = np.zeros((128, 128), bool)
    region[30:90, 30:90] = True
    out = poisson_blend(source, edited, region, np.ones_like(region))
    assert out.shape == source.shape
    assert np.abs(out - source).max() < 1e-3


def test_nodata_pixels_get_alpha_zero():
    source, edited = _scene(0), _scene(1)
    roi = _roi()
    valid = np.ones_like(roi)
    valid[50:60, 50:60] = False
    for mode in ("feather", "laplacian", "poisson"):
        out, alpha, _ = blend_window(source, edited, roi, valid, BlendConfig(mode=mode))
        assert (alpha[~valid] == 0).all()


def test_color_match_gives_the_roi_the_statistics_of_its_surroundings():
    from rs_geo_edit.imaging import distance_to

    source = _scene(0)
    edited = np.clip(source * 0.8 + 0.25, -1, 1)  # washed out and brighter
    roi = _roi()
    cfg = BlendConfig(mode="feather", band_px=8, color_match=True, detail_match=False)
    out, _, info = blend_window(source, edited, roi, np.ones_like(roi), cfg)
    plain, _, _ = blend_window(source, edited, roi, np.ones_like(roi),
                               BlendConfig(mode="feather", band_px=8, detail_match=False))
    dist = distance_to(roi)
    ring = (dist > 8) & (dist <= 8 + cfg.ring_px)
    for b in range(3):
        assert out[b][roi].mean() == pytest.approx(source[b][ring].mean(), abs=1e-3)
        target = source[b][ring].std()
        assert abs(out[b][roi].std() - target) < 0.5 * abs(edited[b][roi].std() - target)
    assert all(1.0 < g <= 2.0 for g, _ in info["color_match"])
    assert not np.array_equal(out, plain)


def test_detail_match_calms_a_busier_texture_and_leaves_a_calmer_one_alone():
    """Grain matching: an ROI whose texture is busier than its ring (speckle on top of the
    scene's texture) comes out with less fine detail, closer to the ring's; an ROI calmer than
    its ring is written exactly as without matching; pixels beyond ROI + band are the source."""
    from rs_geo_edit.eval.metrics import detail_ratios
    from rs_geo_edit.imaging import distance_to

    source, roi = _scene(0, size=160), np.zeros((160, 160), bool)
    roi[50:110, 50:110] = True
    valid = np.ones_like(roi)
    rng = np.random.default_rng(3)
    busy = source.copy()
    busy[:, roi] += rng.normal(0, 0.12, (3, int(roi.sum()))).astype(np.float32)
    busy = np.clip(busy, -1, 1)
    matched = BlendConfig(band_px=12)
    plain = BlendConfig(band_px=12, detail_match=False)
    out, alpha, info = blend_window(source, busy, roi, valid, matched)
    raw, _, raw_info = blend_window(source, busy, roi, valid, plain)
    before = detail_ratios(raw, source, roi, valid)["luminance"]
    after = detail_ratios(out, source, roi, valid)["luminance"]
    assert before > 1.5 and after < 0.8 * before and abs(after - 1.0) < abs(before - 1.0)
    assert info["detail_gains"][0] < 1.0 and "detail_gains" not in raw_info
    far = distance_to(roi) > 12
    assert np.array_equal(out[:, far], source[:, far])
    from scipy.ndimage import gaussian_filter

    calm = source.copy()
    calm[:, roi] = gaussian_filter(source, (0, 2, 2))[:, roi]     # smoother than the ring
    out, _, info = blend_window(source, calm, roi, valid, matched)
    assert info["detail_gains"] == [1.0] * 4
    assert np.array_equal(out, blend_window(source, calm, roi, valid, plain)[0])


def test_restore_grain_raises_a_calmer_paste_to_the_donors_detail_and_no_further():
    """Copy mode's grain: a paste that came out smoother than its donor gets its detail back
    where the paste shows, up to the gain limit; where the paste weight is 0 nothing changes;
    a paste as busy as its donor or busier is returned as it is."""
    from scipy.ndimage import gaussian_filter

    from rs_geo_edit.blend import octave_energy
    from rs_geo_edit.editors.copy import copy_ramp, restore_grain

    donor = _scene(5, size=160)
    target = np.zeros((160, 160), bool)
    target[30:130, 30:130] = True
    weight = copy_ramp(target, 8, 16)
    calm = gaussian_filter(donor, (0, 1.0, 1.0)).astype(np.float32)
    out, gains = restore_grain(calm, donor, weight, 1.5)
    core = weight >= 0.5
    before, after, wanted = (octave_energy(a.mean(axis=0), core) for a in (calm, out, donor))
    assert gains[0] > 1.2 and all(1.0 <= g <= 1.5 for g in gains)
    assert after[0] > before[0] * 1.15 and after[0] <= wanted[0] * 1.05
    assert np.array_equal(out[:, weight == 0], calm[:, weight == 0])
    limited, low = restore_grain(calm, donor, weight, 1.1)
    assert max(low) == 1.1 and octave_energy(limited.mean(axis=0), core)[0] < after[0]
    same, ones = restore_grain(donor, calm, weight, 1.5)       # busier than its "donor"
    assert ones == [1.0] * 4 and same is donor
    off, ones = restore_grain(calm, donor, weight, 1.0)         # switched off
    assert ones == [1.0] * 4 and off is calm


def test_distances_and_chroma_smoothing_in_strips_equal_the_whole_image(monkeypatch):
    """The strip-wise paths that bound a large window's memory give the whole-image values:
    distances exactly up to their limit (and above it beyond), chroma smoothing bit for bit."""
    from scipy.ndimage import distance_transform_edt

    import rs_geo_edit.imaging as imaging

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:300, :200]
    mask = ((yy - 150) ** 2 / 90 ** 2 + (xx - 100) ** 2 / 60 ** 2) < 1
    mask[20:24, 10:14] = True
    image = np.clip(rng.normal(0, 0.4, (3, 300, 200)), -1, 1).astype(np.float32)
    whole_chroma = imaging.smooth_chroma(image, 2)
    monkeypatch.setattr(imaging, "STRIP_ROWS", 32)
    whole = distance_transform_edt(~mask)
    for limit in (1, 16, 48):
        strips = imaging.distance_to(mask, limit)
        near = whole <= limit
        assert np.array_equal(strips[near], whole[near])
        assert (strips[~near] > limit).all()
    assert np.isinf(imaging.distance_to(np.zeros((40, 40), bool), 5)).all()
    assert np.array_equal(imaging.smooth_chroma(image, 2), whole_chroma)


@pytest.mark.parametrize("blend", [BlendConfig(mode="feather", band_px=12, detail_match=False),
                                   BlendConfig(mode="poisson", band_px=12),
                                   BlendConfig(mode="feather", band_px=12, color_match=True, ring_px=10)])
def test_the_blend_box_gives_the_whole_windows_blend(blend):
    """The edit blends only the box around the ROIs that the blend and the figures read
    (``blend_box``): there it writes what a blend of the whole window writes, nodata included."""
    from rs_geo_edit.pipeline.window import blend_box

    size = 200
    source, edited = _scene(0, size=size), np.clip(_scene(1, size=size) * 0.5 + 0.4, -1, 1)
    roi = np.zeros((size, size), bool)
    roi[70:110, 90:130] = True
    valid = np.ones((size, size), bool)
    valid[60:75, 80:95] = False          # nodata inside the box
    valid[:, 190:] = False               # and a nodata border beyond it
    box = blend_box(roi, blend)
    assert (box[0].start, box[0].stop) != (0, size)     # a box, not the window
    whole, whole_alpha, whole_info = blend_window(source, edited, roi, valid, blend)
    part, part_alpha, part_info = blend_window(np.ascontiguousarray(source[(slice(None),) + box]),
                                               np.ascontiguousarray(edited[(slice(None),) + box]), roi[box],
                                               valid[box], blend)
    assert np.array_equal(part_alpha, whole_alpha[box])
    assert part_info == whole_info
    changed = part_alpha > 0
    assert changed.any() and not (whole_alpha > 0)[~np.pad(np.ones(changed.shape, bool), (
        (box[0].start, size - box[0].stop), (box[1].start, size - box[1].stop)))].any()
    assert np.abs(part[:, changed] - whole[(slice(None),) + box][:, changed]).max() < 1e-6
    assert blend_box(roi, BlendConfig(mode="laplacian")) == (slice(0, size), slice(0, size))

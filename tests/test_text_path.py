"""The whole text path, falsifiably: the bundled scene's ROI edited with the controlled encoder
``rsge-landcover`` (meaning known by construction) and, with the same seed, without guidance;
each prompt must move the ROI the way it says, measured on the written GeoTIFFs with pixel
statistics computed here (not the encoder's), and nothing outside the ROI and blend band."""

import numpy as np
import pytest
import rasterio

from conftest import SAMPLE, SAMPLE_AOI, TEXT_MODEL, aoi_mask, sample_aoi_with_prompt
from rs_geo_edit.config import TEXT_PRESETS, BlendConfig, GuidanceConfig, WindowConfig, make_config
from rs_geo_edit.imaging import distance_to
from rs_geo_edit.pipeline import edit_scene, make_editor

BAND = BlendConfig().band_px
EDITS = {"unguided": (None, 0.3), "snow": ("snow-covered field", 0.3), "forest": ("dense forest", 0.3),
         "water": ("open water", 0.3), "snow-strong": ("snow-covered field", 0.6)}


def _config(prompt, strength, cache):
    # the unguided edit is the text edit's own settings without guidance (as eval makes it)
    model = TEXT_MODEL if prompt else {**TEXT_PRESETS["fast"], **TEXT_MODEL}
    return make_config("fast", model_overrides=model, mode="text" if prompt else "regenerate", seed=3,
                       threads=1, device="cpu", cache_dir=cache, windows=WindowConfig(max_side=96),
                       guidance=GuidanceConfig(clip="rsge-landcover", strength=strength))


@pytest.fixture(scope="module")
def edits(tmp_path_factory, model_cache):
    """name -> (pixels of the output, the editor that made it); one training, from the cache."""
    folder = tmp_path_factory.mktemp("text-path")
    made = {}
    for name, (prompt, strength) in EDITS.items():
        aoi = sample_aoi_with_prompt(folder / f"{name}.geojson", prompt) if prompt else SAMPLE_AOI
        config = _config(prompt, strength, model_cache)
        editor = make_editor(config)
        edit_scene(SAMPLE, aoi, folder / f"{name}.tif", config, editor=editor)
        with rasterio.open(folder / f"{name}.tif") as out:
            made[name] = (out.read(), editor)
    return made


@pytest.fixture(scope="module")
def roi():
    return aoi_mask(SAMPLE, SAMPLE_AOI)


def figures(pixels: np.ndarray, roi: np.ndarray) -> dict:
    """Brightness, whiteness (the mean of the smallest band: high only where every band is
    high), roughness (mean |4-neighbour Laplacian| of luminance) and greenness of the ROI."""
    x = pixels.astype(np.float64) / 255
    lum = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    lap = np.zeros_like(lum)
    lap[1:-1, 1:-1] = np.abs(4 * lum[1:-1, 1:-1] - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2] - lum[1:-1, 2:])
    inner = roi & (distance_to(~roi) > 1)
    return {"brightness": lum[roi].mean(), "whiteness": x.min(axis=0)[roi].mean(), "roughness": lap[inner].mean(),
            "greenness": (x[1] - (x[0] + x[2]) / 2)[roi].mean()}


def _compare(edits, roi, name):
    guided, plain = figures(edits[name][0], roi), figures(edits["unguided"][0], roi)
    print(name, {k: (round(plain[k], 4), round(guided[k], 4)) for k in guided})
    return guided, plain


def test_snow_prompt_makes_the_roi_whiter_and_smoother(edits, roi):
    guided, plain = _compare(edits, roi, "snow")
    assert guided["whiteness"] > plain["whiteness"] + 0.05
    assert guided["roughness"] < 0.85 * plain["roughness"]


def test_forest_prompt_makes_the_roi_darker_and_greener(edits, roi):
    guided, plain = _compare(edits, roi, "forest")
    assert guided["brightness"] < plain["brightness"] - 0.05
    assert guided["greenness"] > plain["greenness"] + 0.03


def test_water_prompt_makes_the_roi_flatter_and_darker(edits, roi):
    guided, plain = _compare(edits, roi, "water")
    assert guided["brightness"] < plain["brightness"] - 0.05
    assert guided["roughness"] < 0.85 * plain["roughness"]


def test_a_larger_strength_moves_the_roi_further(edits, roi):
    plain, default, strong = (figures(edits[name][0], roi)["whiteness"] for name in ("unguided", "snow", "snow-strong"))
    print("whiteness: unguided", plain, "strength 0.3", default, "strength 0.6", strong)
    assert strong > default + 0.05 > plain + 0.05


def test_outside_the_roi_and_band_every_pixel_is_the_source(edits, roi):
    with rasterio.open(SAMPLE) as src:
        source = src.read()
    far = distance_to(roi) > BAND
    for name, (pixels, editor) in edits.items():
        assert np.array_equal(pixels[:, far], source[:, far]), name
        assert not np.array_equal(pixels[:, roi], source[:, roi]), name
        if editor.last_guidance is None:
            continue
        stats = editor.last_guidance.stats
        assert stats.steps >= 4 and stats.max_outside_update == 0.0, name   # the update is zero outside the ROI
        for sums in stats.mask_sums.values():                               # and the mask fixed within a scale
            assert len(set(sums)) == 1 and sums[0] > 0

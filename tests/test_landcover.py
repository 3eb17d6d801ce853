"""The constructed encoders ``rsge-landcover`` (the guide) and ``rsge-judge``: loaded like any
CLIP, differentiable, reading the land cover of the bundled scene's places as built to, and
refusing words outside their vocabulary before any work."""

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from conftest import SAMPLE, run_cli, sample_aoi_with_prompt
from rs_geo_edit.errors import IncompatibleOptions
from rs_geo_edit.guidance.clip import load_clip, parse_spec

PROMPTS = ["snow", "open water", "dense forest", "a paved road"]
# places of the bundled scene (centre row, col, half side, pixels): what a viewer sees there
PLACES = {"snow": (200, 460, 32), "dense forest": (820, 240, 64), "a paved road": (400, 560, 20)}


def _crop(row, col, half):
    with rasterio.open(SAMPLE) as src:
        pixels = src.read(window=((row - half, row + half), (col - half, col + half)))
    return torch.from_numpy(pixels.astype(np.float32) / 255)[None]


def _best_prompt(clip, image):
    x = F.interpolate(image, size=(clip.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
    cosines = (clip.encode_image(x) @ clip.encode_text(PROMPTS).T)[0]
    return PROMPTS[int(cosines.argmax())], cosines


@pytest.mark.parametrize("name", ["rsge-landcover", "rsge-judge"])
def test_loads_through_the_clip_loader_with_the_open_clip_interface(name):
    clip = load_clip(name)
    assert load_clip(name) is clip and parse_spec(name.upper()).arch == name   # once per process; any case
    assert parse_spec(name).constructed and clip.describe()["constructed"] and clip.describe()["weights"] is None
    tokens = clip.tokenizer(["snow-covered field", "dense forest"])
    assert tokens.dtype == torch.long and tokens.shape[0] == 2
    text = clip.encode_text(["snow-covered field", "a satellite image of dense forest"])
    assert torch.allclose(text.norm(dim=-1), torch.ones(2))
    assert torch.allclose(text[1], clip.encode_text(["forest"])[0])            # template words are neutral
    image = torch.rand(2, 3, clip.image_size, clip.image_size, requires_grad=True)
    score = (clip.encode_image(image) @ text.T).trace()
    grad, = torch.autograd.grad(score, image)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0                 # differentiable in the pixels


@pytest.mark.parametrize("name", ["rsge-landcover", "rsge-judge"])
def test_reads_the_land_cover_of_the_bundled_scene(name):
    clip = load_clip(name)
    places = PLACES if name == "rsge-landcover" else {k: v for k, v in PLACES.items() if k != "a paved road"}
    for prompt, place in places.items():
        best, cosines = _best_prompt(clip, _crop(*place))
        assert best == prompt, (prompt, cosines)
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    flat_dark_blue = torch.tensor([0.08, 0.15, 0.25]).view(1, 3, 1, 1) + 0.004 * noise
    assert _best_prompt(clip, flat_dark_blue)[0] == "open water"


def test_words_outside_the_vocabulary_are_refused_naming_it():
    clip = load_clip("rsge-landcover")
    with pytest.raises(IncompatibleOptions, match=r"knows no word 'bridge'.*snow: snow, snowy.*forest: forest"):
        clip.encode_text(["a bridge over the river"])
    with pytest.raises(IncompatibleOptions, match="names no land cover"):
        clip.encode_text(["a top-down view"])


def test_a_prompt_it_cannot_read_stops_the_edit_before_training(tmp_path):
    aoi = sample_aoi_with_prompt(tmp_path / "aoi.geojson", "a bridge over the river")
    proc = run_cli(SAMPLE, "--aoi", aoi, "--mode", "text", "--clip", "rsge-landcover", "--steps", "5000",
                   "--cache-dir", tmp_path / "cache", "--quiet", "-o", tmp_path / "out.tif", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "knows no word 'bridge'" in proc.stderr
    assert "water: water, lake" in proc.stderr
    assert not (tmp_path / "out.tif").exists() and not list((tmp_path / "cache").rglob("*.pt"))

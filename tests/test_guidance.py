"""Text guidance: loading, ensembling and the ROI-masked stage. Real open_clip architectures come
as small randomly initialised models built here (no downloads): they prove loading and plumbing,
never meaning; what guidance does to an ROI is measured with the controlled encoder
``rsge-landcover`` (here on a trained window, in test_text_path.py on the bundled scene)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import rasterio
import torch

from conftest import pixel_box, write_aoi, write_scene
from rs_geo_edit.errors import WeightsNotFound
from rs_geo_edit.guidance.clip import load_clip, parse_spec, register_config, resolve_weights
from rs_geo_edit.guidance.prompts import ensemble_embedding, llm_phrasings, template_phrasings
from rs_geo_edit.guidance.roi import ClipGuidance

torch.set_num_threads(1)
TINY = {"embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    register_config("rsge-tiny", TINY, tmp_path_factory.mktemp("clipcfg"))
    torch.manual_seed(0)
    return load_clip("rsge-tiny:random")


def test_ensemble_is_normalised_mean(tiny_clip):
    phrasings = template_phrasings("dense forest", {"dense forest": ["woodland"]})
    assert "a satellite image of dense forest" in phrasings and "an aerial photograph showing woodland" in phrasings
    assert len(phrasings) == len(set(phrasings)) >= 5
    emb = ensemble_embedding(tiny_clip, phrasings)
    each = tiny_clip.encode_text(phrasings)
    manual = each.mean(0, keepdim=True)
    assert torch.allclose(emb, manual / manual.norm(), atol=1e-6)
    assert abs(float(emb.norm()) - 1) < 1e-6


def test_saved_state_dict_loads_through_the_real_loader(tiny_clip, tmp_path):
    path = tmp_path / "tiny-weights.pt"
    state = {k: v + 0.01 for k, v in tiny_clip.model.state_dict().items()}
    torch.save(state, path)
    loaded = load_clip(f"rsge-tiny:{path}")
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    assert (tmp_path / "tiny-weights.pt.sha256").read_text().split()[0] == __import__("hashlib").sha256(
        path.read_bytes()).hexdigest()
    assert load_clip(f"rsge-tiny:{path}") is loaded   # once per process


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFound, match=r"RemoteCLIP-ViT-B-32\.pt.*RS_GEO_EDIT_WEIGHTS|weights fetch"):
        resolve_weights(parse_spec("remoteclip-vit-b-32"), None, offline=True)
    with pytest.raises(WeightsNotFound, match=str(tmp_path / "RemoteCLIP-RN50.pt").replace(".", r"\.")):
        resolve_weights(parse_spec("remoteclip-rn50"), tmp_path, offline=True)
    (tmp_path / "RemoteCLIP-RN50.pt").write_bytes(b"x")
    assert resolve_weights(parse_spec("remoteclip-rn50"), tmp_path, offline=True) == str(tmp_path / "RemoteCLIP-RN50.pt")
    with pytest.raises(WeightsNotFound, match="do not exist"):
        resolve_weights(parse_spec("ViT-B-32:/nowhere/w.pt"))


def _trained_window():
    from conftest import texture
    from rs_geo_edit.model.schedule import Schedule
    from rs_geo_edit.model.trainer import train
    from rs_geo_edit.model.net import SinDDMNet
    from rs_geo_edit.model.pyramid import build_pyramid
    import copy

    image = (texture(np.random.default_rng(2), 3, 80, 80) * 1.6 - 0.8).astype(np.float32)
    pyr = build_pyramid(image, np.ones((80, 80), bool))
    sched = Schedule.build(100, pyr.recon_error, 10.0)
    torch.manual_seed(0)
    net = SinDDMNet(3, 16)
    ema = copy.deepcopy(net)
    train(net, ema, pyr, sched, steps=60, batch=2, crop=32, lr=2e-3, lr_decay_every=100, lr_gamma=0.5, ema_decay=0.9,
          device=torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    return ema, pyr, sched


def test_guidance_moves_the_roi_towards_the_prompt_and_nothing_else():
    """The stage alone, on a trained window: towards "dense forest" with the controlled encoder,
    the ROI gets darker and greener (measured here on the pixels) than the same seed unguided;
    the update is exactly zero outside the ROI (an L, so that its bounding box, which CLIP sees
    and whose every pixel has a gradient, holds pixels outside it), whose mask stays fixed
    within a scale."""
    from rs_geo_edit.model.sampler import KeepOriginal, Sampler
    from rs_geo_edit.model.pyramid import mask_pyramid

    landcover = load_clip("rsge-landcover")
    net, pyr, sched = _trained_window()
    sizes = list(pyr.spec.sizes)
    roi = np.zeros((80, 80), bool)
    roi[20:60, 24:64] = True
    roi[20:40, 44:64] = False      # an L: its bounding box holds pixels outside it, which CLIP sees
    masks = mask_pyramid(roi, sizes)
    text = ensemble_embedding(landcover, template_phrasings("dense forest"))
    constraint = KeepOriginal(keep=[torch.from_numpy((~m).astype(np.float32))[None, None] for m in masks],
                              originals=[torch.from_numpy(i)[None] for i in pyr.images])

    def run(hook):
        return Sampler(net, sched, sizes, 3, device=torch.device("cpu"), stride=2).run(
            torch.Generator().manual_seed(4), constraint, [hook] if hook is not None else [])

    def brightness(x):
        return float(((x[0][:, torch.from_numpy(roi)] + 1) / 2).mean())

    def greenness(x):
        r, g, b = (x[0][:, torch.from_numpy(roi)] + 1) / 2
        return float((g - (r + b) / 2).mean())

    guide = ClipGuidance(landcover, [masks], [text], [0, 1, 2], t_start_finest=sched.t_start[-1], strength=0.5,
                         views=3, momentum=0.5, seed=0)
    plain, guided = run(None), run(guide)
    print("brightness", brightness(plain), brightness(guided), "greenness", greenness(plain), greenness(guided))
    assert brightness(guided) < brightness(plain) - 0.03 and greenness(guided) > greenness(plain) + 0.03
    assert guide.stats.steps >= 2
    assert guide.stats.max_outside_update == 0.0          # the update is exactly zero outside the ROI
    for scale, sums in guide.stats.mask_sums.items():     # the mask never changes within a scale
        assert len(set(sums)) == 1 and sums[0] == float(masks[scale].sum())
    outside = ~roi
    assert torch.equal(guided[0][:, torch.from_numpy(outside)], plain[0][:, torch.from_numpy(outside)])


def test_an_open_clip_model_guides_through_the_pipeline(tiny_clip, tmp_path):
    """A real open_clip architecture (random weights) is loaded, guides, and is recorded; the
    pixels beyond the ROI and blend band are the source's."""
    from rs_geo_edit.config import GuidanceConfig, make_config
    from rs_geo_edit.imaging import distance_to
    from rs_geo_edit.pipeline import edit_scene, make_editor

    scene = write_scene(tmp_path / "s.tif", width=96, height=96, blocksize=32)
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(scene, 30, 30, 62, 62)], properties={"prompt": ["a lake"]})
    config = make_config("fast", model_overrides={"steps": 30, "width": 16, "crop": 32, "batch": 2}, mode="text",
                         cache_dir=tmp_path / "cache", guidance=GuidanceConfig(clip="rsge-tiny:random", views=2))
    editor = make_editor(config)
    result = edit_scene(scene, aoi, tmp_path / "o.tif", config, editor=editor)
    a, b = rasterio.open(scene).read(), rasterio.open(tmp_path / "o.tif").read()
    roi = np.zeros((96, 96), bool)
    roi[30:62, 30:62] = True
    far = distance_to(roi) > 16
    assert np.array_equal(a[:, far], b[:, far]) and not np.array_equal(a[:, roi], b[:, roi])
    window = result.record["editor"]["windows"][0]
    assert window["guidance"]["steps"] > 0
    assert result.record["editor"]["clip"]["arch"] == "rsge-tiny"


class _Chat(BaseHTTPRequestHandler):
    calls = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Chat.calls.append((self.path, body))
        answer = {"choices": [{"message": {"content": 'Sure: ["woodland seen from above", "tree canopy"]'}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_paraphrases_from_a_local_server_are_cached(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Chat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        first = llm_phrasings("forest", url, tmp_path, model="m", count=2)
        second = llm_phrasings("forest", url, tmp_path, model="m", count=2)
    finally:
        server.shutdown()
    assert first == second == ["woodland seen from above", "tree canopy"]
    assert len(_Chat.calls) == 1 and _Chat.calls[0][0] == "/v1/chat/completions"
    assert _Chat.calls[0][1]["model"] == "m" and "forest" in _Chat.calls[0][1]["messages"][-1]["content"]


def test_text_mode_with_a_copy_source_pastes_at_coarse_scales(tiny_clip, tmp_path):
    from rasterio.transform import from_origin

    from rs_geo_edit.config import GuidanceConfig, make_config
    from rs_geo_edit.pipeline import edit_scene, make_editor

    rng = np.random.default_rng(0)
    data = np.zeros((3, 128, 128), np.uint8)
    data[:, :, :64] = 200 + rng.integers(0, 30, (3, 128, 64))
    data[:, :, 64:] = 30 + rng.integers(0, 30, (3, 128, 64))
    scene = tmp_path / "two.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5100000, 10, 10)) as dst:
        dst.write(data)
    aoi = write_aoi(tmp_path / "a.gpkg", [pixel_box(scene, 10, 40, 40, 70), pixel_box(scene, 84, 40, 114, 70)],
                    properties={"role": ["source", None], "prompt": [None, "snow"]})
    config = make_config("fast", model_overrides={"steps": 30, "width": 16, "crop": 32, "batch": 2}, mode="text",
                         cache_dir=tmp_path / "cache", guidance=GuidanceConfig(clip="rsge-tiny:random", views=2))
    edit_scene(scene, aoi, tmp_path / "o.tif", config, editor=make_editor(config))
    edited = rasterio.open(tmp_path / "o.tif").read()[:, 45:65, 89:109].astype(float)
    assert edited.mean() > 110, "the bright source content should reach the dark target ROI"


def test_large_roi_is_scored_on_native_resolution_local_views(tiny_clip):
    """A 200 px ROI (CLIP input 64 px): besides the whole-ROI downsample, CLIP sees CLIP-sized
    views at native resolution taken inside the ROI, so 2 px detail reaches it; a small ROI keeps
    its resized sub-crops."""
    seen = []
    encode = tiny_clip.encode_image

    def spy(views):
        seen.append(views.detach())
        return encode(views)

    size = 200
    checker = ((torch.arange(size)[:, None] // 2 + torch.arange(size)[None, :] // 2) % 2).float()
    x0 = (checker * 2 - 1).expand(1, 3, size, size).clone()
    roi = np.zeros((size, size), bool)
    roi[:, :150] = True            # local views must stay centred in here
    guide = ClipGuidance(tiny_clip, [[roi, roi]], [torch.randn(1, 64)], [0, 1, 2], t_start_finest=10, views=5,
                         seed=0)
    tiny_clip.encode_image = spy
    try:
        guide.score(x0, 1)
        whole, local = seen[0][:1], seen[0][1:]
        assert seen[0].shape == (5, 3, 64, 64)
        assert local.std() > 3 * whole.std()     # the checker survives only at native resolution
        seen.clear()
        small = x0[..., :96, :96]
        guide_small = ClipGuidance(tiny_clip, [[roi[:96, :96]] * 2], [torch.randn(1, 64)], [0, 1, 2],
                                   t_start_finest=10, views=5, seed=0)
        guide_small.score(small, 1)
        assert seen[0].shape == (5, 3, 64, 64)
        assert seen[0][1:].std() < 3 * seen[0][:1].std() + 0.05
    finally:
        tiny_clip.encode_image = encode
    origins = [guide._local_origin(torch.from_numpy(roi), 64) for _ in range(20)]
    assert all(c + 32 < 150 for _, c in origins)

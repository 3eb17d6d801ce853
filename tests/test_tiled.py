"""Tiled sampling: large scales run the denoiser on overlapping tiles fused at every step.

Checked: one tile covering the image is the untiled sampler exactly; small tiles give the untiled
result (to float rounding) while the net never sees more than a tile; runs repeat bit for bit; no
seam at tile borders, even for a net whose tiles disagree; a real GeoTIFF edited through the CLI
with small tiles.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from conftest import pixel_box, write_aoi, write_scene
from rs_geo_edit.config import make_config
from rs_geo_edit.errors import IncompatibleOptions
from rs_geo_edit.model.sampler import KeepOriginal, Sampler
from rs_geo_edit.model.schedule import Schedule
from rs_geo_edit.model.tiling import TiledDenoiser, tile_grid
from rs_geo_edit.model.net import SinDDMNet, receptive_radius

torch.set_num_threads(1)
SIZES = [(24, 24), (48, 48), (96, 96)]


class Recording(nn.Module):
    """A net that remembers the largest input side it was given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.largest, self.pixels = net, 0, 0

    def forward(self, x, t, s):
        self.largest = max(self.largest, *x.shape[-2:])
        self.pixels += x.shape[-2] * x.shape[-1]
        return self.net(x, t, s)


def _setup(seed=0, free=(0.25, 0.75)):
    torch.manual_seed(seed)
    net = Recording(SinDDMNet(3, 8))
    schedule = Schedule.build(20, [0.0, 0.05, 0.05], detail_factor=10.0)
    gen = torch.Generator().manual_seed(5)
    originals = [torch.rand((1, 3) + s, generator=gen) * 2 - 1 for s in SIZES]
    keep = []
    a, b = free
    for h, w in SIZES:   # free in a square (the centre by default), kept elsewhere
        k = torch.ones(1, 1, h, w)
        k[..., int(a * h): int(b * h), int(a * w): int(b * w)] = 0
        keep.append(k)
    return net, schedule, KeepOriginal(keep=keep, originals=originals, final=keep[-1])


def _sample(net, schedule, keep, stages=(), **kw):
    return Sampler(net, schedule, SIZES, 3, device=torch.device("cpu"), novelty=0.6, **kw).run(
        torch.Generator().manual_seed(11), keep, stages)


class Identity:
    """A sampler stage that changes nothing and reads every scale."""

    reads_finest = True

    def __call__(self, x0, s, t):
        return x0


class Blind(Identity):
    """An identity stage that leaves the finest scale alone."""

    reads_finest = False


def test_one_tile_covering_the_image_equals_untiled():
    net, schedule, constraint = _setup()
    untiled = _sample(net, schedule, constraint, tile=0)
    assert torch.equal(_sample(net, schedule, constraint, tile=96), untiled)
    assert torch.equal(_sample(net, schedule, constraint, tile=200), untiled)


def test_small_tiles_match_untiled_repeat_exactly_and_bound_the_net_input():
    net, schedule, constraint = _setup()
    untiled = _sample(net, schedule, constraint, tile=0)
    assert net.largest == 96
    net.largest = 0
    tiled = _sample(net, schedule, constraint, tile=48, overlap=40)
    assert net.largest == 48          # the memory-bounded path: no net call sees more than a tile
    assert not torch.equal(tiled, untiled)   # the tiled path did run (rounding differs)
    assert (tiled - untiled).abs().max() < 1e-4
    assert torch.equal(_sample(net, schedule, constraint, tile=48, overlap=40), tiled)
    kept = constraint.final[0, 0] == 1
    assert torch.equal(tiled[0][:, kept], constraint.originals[-1][0][:, kept])


def test_tiles_holding_only_kept_pixels_are_not_run():
    net, schedule, constraint = _setup(free=(0.0, 0.2))
    untiled = _sample(net, schedule, constraint, tile=0)
    full = net.pixels
    net.pixels = 0
    tiled = _sample(net, schedule, constraint, tile=48, overlap=40)
    assert net.pixels < 0.5 * full      # tiled work follows the free corner, not the image
    assert (tiled - untiled).abs().max() < 1e-4


def test_tiles_cover_only_the_needed_pixels_and_their_reach():
    """The grid covers the needed pixels' bounding box widened by the receptive radius, not the
    image; there the fused prediction is the untiled one, elsewhere the caller's fallback."""
    torch.manual_seed(0)
    net = SinDDMNet(3, 8)
    halo = receptive_radius(net)
    h, w = 160, 200
    needed = torch.zeros(h, w, dtype=torch.bool)
    needed[60:90, 50:130] = True
    fused = TiledDenoiser(net, (h, w), 64, 2 * halo + 8, halo, needed=needed)
    assert len(fused.tiles) > 1
    for r, c, th, tw in fused.tiles:
        assert 60 - halo <= r and r + th <= 90 + halo and 50 - halo <= c and c + tw <= 130 + halo
    assert sum(th * tw for _, _, th, tw in fused.tiles) < 0.5 * h * w
    x, fallback = torch.randn(1, 3, h, w), torch.randn(1, 3, h, w)
    t, s = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        out, whole = fused(x, t, s, fallback=fallback), net(x, t, s)
    assert (out[..., needed] - whole[..., needed]).abs().max() < 1e-5
    assert torch.equal(out[..., :60 - halo, :], fallback[..., :60 - halo, :])
    assert torch.equal(out[..., 130 + halo:], fallback[..., 130 + halo:])


def test_overlap_must_cover_the_receptive_field():
    net = SinDDMNet(3, 8)
    assert receptive_radius(net) == 16   # four blocks of 5x5 depthwise + two 3x3 convolutions
    with pytest.raises(ValueError, match="receptive radius"):
        TiledDenoiser(net, (96, 96), 48, 32, receptive_radius(net))
    assert tile_grid(96, 48, 40) == ([0, 8, 16, 24, 32, 40, 48], 48)
    assert tile_grid(100, 64, 20) == ([0, 40], 60)   # two equal tiles, not 64 px ones overlapping by 28
    assert tile_grid(40, 64, 20) == ([0], 40)


@pytest.mark.parametrize("tile,overlap", [(512, 64), (48, 40), (100, 33)])
def test_tile_grid_covers_every_axis_with_the_fewest_equal_tiles(tile, overlap):
    for length in range(1, 3 * tile + 7):
        starts, size = tile_grid(length, tile, overlap)
        assert size <= tile and starts[0] == 0 and starts[-1] + size == length
        if len(starts) > 1:
            shared = [a + size - b for a, b in zip(starts[:-1], starts[1:])]
            assert min(shared) >= overlap
            # one tile fewer of the largest size could not cover the axis with that overlap
            assert (len(starts) - 1) * tile - (len(starts) - 2) * overlap < length


class TileMean(nn.Module):
    """A constructed net whose tiles disagree: a local 3x3 filter plus the mean of its input,
    which differs from tile to tile on a sloped image (a real denoiser's tiles agree)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        torch.manual_seed(1)
        nn.init.normal_(self.conv.weight, std=0.1)

    def forward(self, x, t, s):
        return self.conv(x) + x.mean(dim=(-2, -1), keepdim=True)


def _seam_ratio(image: torch.Tensor, cuts: list[int]) -> float:
    """Mean |horizontal gradient| on the columns next to ``cuts`` over the mean on all columns."""
    grad = (image[..., 1:] - image[..., :-1]).abs().mean(dim=(0, 1, 2))
    at = torch.stack([grad[c - 2:c + 2].max() for c in cuts])
    return float(at.mean() / grad.mean())


def test_no_seam_at_tile_borders_even_where_tiles_disagree():
    net = TileMean()
    h, w, tile, overlap = 64, 256, 64, 40
    gen = torch.Generator().manual_seed(3)
    x = torch.linspace(-1, 1, w).expand(1, 3, h, w) + 0.05 * torch.randn(1, 3, h, w, generator=gen)
    t, s = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    fused = TiledDenoiser(net, (h, w), tile, overlap, receptive_radius(net))
    starts, size = tile_grid(w, tile, overlap)
    with torch.no_grad():
        out = fused(x, t, s)
        # the same tiles stitched without fusion: each pixel from the tile whose centre is nearest
        stitched = torch.zeros_like(x)
        centres = torch.tensor([c + size / 2 for c in starts])
        owner = (torch.arange(w)[:, None] - centres[None]).abs().argmin(dim=1)
        for k, c in enumerate(starts):
            cols = (owner == k).nonzero().flatten()
            stitched[..., cols] = net(x[..., c:c + size], t, s)[..., cols - c]
    cuts = [int(c) for c in (owner[1:] != owner[:-1]).nonzero().flatten() + 1]
    assert _seam_ratio(stitched, cuts) > 3      # the measure sees a seam where there is one
    assert _seam_ratio(out, cuts) < 1.3


def test_no_seam_in_a_tiled_sample():
    net, schedule, constraint = _setup(seed=2)
    out = _sample(net, schedule, constraint, tile=48, overlap=40)[..., 24:72, :]   # the free square's rows
    starts, size = tile_grid(96, 48, 40)
    cuts = [c + size for c in starts[:-1]] + starts[1:]
    assert _seam_ratio(out, sorted(set(cuts))) < 1.2


def test_tile_option_bounds():
    assert make_config().model.tile == 512
    assert make_config().windows.max_side == 0
    with pytest.raises(IncompatibleOptions, match="tile 64 is too small"):
        make_config(model_overrides={"tile": 64})


def test_cli_edit_with_small_tiles_matches_untiled(tmp_path):
    """A real 200 px window edited with 128 px tiles: the same pixels as whole scales (the model
    comes from the cache the second time: tiling is a sampling choice, not a training one)."""
    scene = write_scene(tmp_path / "scene.tif", height=200, width=200)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 60, 60, 140, 140)])
    outs = {}
    for tile in (0, 128):
        out = tmp_path / f"tile{tile}.tif"
        proc = subprocess.run([sys.executable, "-m", "rs_geo_edit.cli", str(scene), "--aoi", str(aoi), "-o", str(out),
                               "--cache-dir", str(tmp_path / "cache"), "--steps", "40", "--width", "16", "--crop",
                               "32", "--batch", "2", "--threads", "1", "--tile", str(tile), "--quiet"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["editor"]["model"]["tile"] == tile
        outs[tile] = rasterio.open(out).read().astype(int)
    src = rasterio.open(scene).read().astype(int)
    assert np.abs(outs[0] - src).max() > 10
    assert np.abs(outs[128] - outs[0]).max() <= 1


# ---------------------------------------------------------------- memory-bounded sampling paths
# A scale taller than a band of rows is updated band by band, reads its upsampled predecessor a
# band at a time and draws its fixed noise per band; bands of 16 rows make the small test
# scales take those paths.

@pytest.fixture
def narrow_bands(monkeypatch):
    import rs_geo_edit.model.rows as rows

    monkeypatch.setattr(rows, "ROW_BAND", 16)


def test_banded_sampling_repeats_exactly_and_tiles_as_untiled(narrow_bands):
    net, schedule, constraint = _setup()
    untiled = _sample(net, schedule, constraint, tile=0)
    assert torch.equal(_sample(net, schedule, constraint, tile=0), untiled)
    tiled = _sample(net, schedule, constraint, tile=48, overlap=40)
    assert (tiled - untiled).abs().max() < 1e-4           # band noise does not depend on the tiling
    kept = constraint.final[0, 0] == 1
    assert torch.equal(untiled[0][:, kept], constraint.originals[-1][0][:, kept])
    free = constraint.final[0, 0] < 1
    assert untiled[0][:, free].std() > 0.05                # the free square was generated


def test_an_identity_stage_a_bool_final_mask_and_released_masks_change_nothing(narrow_bands):
    net, schedule, constraint = _setup()
    plain = _sample(net, schedule, constraint, tile=0)
    # with a stage, the clean estimate is held whole and handed to it; the same arithmetic follows
    assert torch.equal(_sample(net, schedule, constraint, tile=0, stages=[Identity()]), plain)
    # without a stage, tiled predictions are handed out band by band as their tiles finish (the
    # rows above are advanced before the tiles below run); with one, they are fused whole first
    tiled = _sample(net, schedule, constraint, tile=48, overlap=40)
    assert torch.equal(_sample(net, schedule, constraint, tile=48, overlap=40, stages=[Identity()]), tiled)
    as_bool = KeepOriginal(keep=list(constraint.keep), originals=list(constraint.originals),
                         final=constraint.final == 1, release=True)
    assert torch.equal(_sample(net, schedule, as_bool, tile=0), plain)
    assert as_bool.keep == [None] * len(SIZES) and as_bool.originals == [None] * len(SIZES)


def test_row_upsampler_matches_bilinear_interpolation():
    from rs_geo_edit.model.rows import RowUpsampler, row_bands

    image = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    for size in [(52, 75), (37, 53), (200, 90)]:
        whole = torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False)
        up = RowUpsampler(image, size)
        banded = torch.cat([up[r] for r in row_bands(size[0], 16)], dim=2)
        assert banded.shape == whole.shape
        assert (banded - whole).abs().max() < 1e-5      # float rounding of the source positions


def test_band_noise_is_the_same_each_time_and_new_in_every_band(narrow_bands):
    from rs_geo_edit.model.rows import BandNoise, row_bands

    noise = BandNoise((1, 3, 40, 24), seed=9, device=torch.device("cpu"))
    bands = row_bands(40)
    first = [noise[r].clone() for r in bands]
    assert [b.shape[2] for b in first] == [16, 16, 8]
    again = BandNoise((1, 3, 40, 24), seed=9, device=torch.device("cpu"))
    assert all(torch.equal(a, again[r]) for a, r in zip(first, bands))
    assert not torch.equal(first[0], first[1])
    assert abs(float(torch.cat(first, 2).std()) - 1) < 0.1


def test_a_large_scale_holds_no_blurry_copy_and_trains_as_if_it_did(monkeypatch):
    """Scales above HELD_BLUR_PIXELS keep no upsampled copy of the scale below: the error and
    every training crop are upsampled on demand, equal to the held copy to float rounding."""
    import rs_geo_edit.model.pyramid as pyramid
    from rs_geo_edit.model.training import training_batch

    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (3, 150, 130)).astype(np.float32)
    valid = np.ones((150, 130), bool)
    valid[:, :7] = False
    held = pyramid.build_pyramid(image, valid)
    monkeypatch.setattr(pyramid, "HELD_BLUR_PIXELS", 2000)
    lazy = pyramid.build_pyramid(image, valid)
    assert lazy.blurry[-1] is None and held.blurry[-1] is not None
    assert np.allclose(lazy.recon_error, held.recon_error, rtol=1e-6)
    schedule = Schedule.build(50, held.recon_error, 10.0)
    batches = []
    for pyr in (held, lazy):
        sources = [(torch.from_numpy(i), None if b is None else torch.from_numpy(b), torch.from_numpy(v)[None])
                   for i, b, v in zip(pyr.images, pyr.blurry, pyr.valid)]
        gen = torch.Generator().manual_seed(4)
        batches.append([training_batch(sources, schedule, 2, 48, gen, scale_power=4.0) for _ in range(12)])
    assert any(b[0] == len(held.images) - 1 for b in batches[0])     # the finest scale was drawn
    for (s1, x1, t1, n1, w1), (s2, x2, t2, n2, w2) in zip(*batches):
        assert s1 == s2 and torch.equal(t1, t2) and torch.equal(n1, n2) and torch.equal(w1, w2)
        assert (x1 - x2).abs().max() < 1e-5


def test_the_finest_scale_runs_on_the_box_it_changes_with_the_same_result(narrow_bands, monkeypatch):
    """A tiled finest scale is sampled on the box of its free and band pixels widened by the net's
    reach (the rest is the original): x, masks and temporaries follow the ROI, and the result is
    the whole image's bit for bit (bands of rows and noise read from the whole image's)."""
    import rs_geo_edit.model.sampler as sampler

    seen = []

    class Seen(sampler.TiledDenoiser):
        def __init__(self, net, size, *args, **kwargs):
            seen.append(tuple(size))
            super().__init__(net, size, *args, **kwargs)

    monkeypatch.setattr(sampler, "TiledDenoiser", Seen)
    net, schedule, constraint = _setup(free=(0.3, 0.55))
    whole = _sample(net, schedule, constraint, tile=48, overlap=40, crop=False)
    assert seen[-1] == (96, 96)
    seen.clear()
    boxed = _sample(net, schedule, constraint, tile=48, overlap=40)
    halo = receptive_radius(net)
    assert seen[-1] == (2 * halo + 52 - 28,) * 2    # rows and columns 28..51 are free; plus the reach
    assert torch.equal(boxed, whole)

    seen.clear()
    assert torch.equal(_sample(net, schedule, constraint, tile=48, overlap=40, stages=[Blind()]), whole)
    assert seen[-1] != (96, 96)
    seen.clear()   # a stage that reads the finest scale gets it whole
    assert torch.equal(_sample(net, schedule, constraint, tile=48, overlap=40, stages=[Identity()]), whole)
    assert seen[-1] == (96, 96)

    # every tiled scale above the coarsest runs on its box: the middle one's outside is the original
    net, schedule, constraint = _setup(free=(0.4, 0.6))
    seen.clear()
    whole = _sample(net, schedule, constraint, tile=40, overlap=34, crop=False)
    assert seen == [(24, 24), (48, 48), (96, 96)]
    seen.clear()
    assert torch.equal(_sample(net, schedule, constraint, tile=40, overlap=34), whole)
    assert seen == [(24, 24), (41, 41), (51, 51)]
    seen.clear()   # with a stage that leaves the finest alone, only the finest is cropped
    assert torch.equal(_sample(net, schedule, constraint, tile=40, overlap=34, stages=[Blind()]), whole)
    assert seen == [(24, 24), (48, 48), (51, 51)]


def test_row_bands_of_a_box_end_where_the_larger_images_bands_end(narrow_bands):
    from rs_geo_edit.model.rows import row_bands

    edges = [(r[2].start, r[2].stop) for r in row_bands(40, offset=21)]
    assert edges == [(0, 11), (11, 27), (27, 40)]      # rows 21..32, 32..48, 48..61 of the image
    assert row_bands(40, offset=32) == row_bands(40)

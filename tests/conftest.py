"""Fixtures: real GeoTIFFs and vector files written with rasterio and geopandas into tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "backend" / "rs_geo_edit" / "data" / "aerial_3857.tif"
SAMPLE_AOI = SAMPLE.with_name("aerial_aoi.geojson")
# Text-path tests on the bundled scene: a small model and the bundled ROI's 256 px window edited
# at 96 px (max_side), so one training (seconds) serves every edit through the model cache.
TEXT_MODEL = {"steps": 150, "width": 16, "crop": 32, "batch": 2}
TEXT_ARGS = ["--steps", "150", "--width", "16", "--crop", "32", "--batch", "2", "--max-side", "96", "--threads", "1"]


def texture(rng: np.random.Generator, bands: int, height: int, width: int) -> np.ndarray:
    """Smooth random texture in [0, 1]: sums of blurred noise at a few scales."""
    from scipy.ndimage import gaussian_filter

    out = np.zeros((bands, height, width))
    for sigma, weight in ((12, 0.6), (4, 0.3), (1, 0.1)):
        noise = gaussian_filter(rng.standard_normal((bands, height, width)), sigma=(0, sigma, sigma))
        out += weight * noise / (noise.std() + 1e-9)
    out = (out - out.min()) / (out.max() - out.min())
    return out


def write_scene(path: Path, *, dtype="uint8", bands=3, height=256, width=256, crs="EPSG:32633",
                transform=None, nodata=None, alpha=False, nan_border=False, nodata_border=0,
                colorinterp=None, descriptions=None, tags=None, band_tags=None, scales=None, offsets=None,
                compress="deflate", tiled=True, blocksize=128, internal_mask=False, seed=0, photometric=None,
                units=None) -> Path:
    """Write a textured test scene; returns its path."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    tex = texture(rng, bands, height, width)
    if np.issubdtype(np.dtype(dtype), np.integer):
        top = {"uint8": 250, "uint16": 4000, "int16": 3000, "uint32": 70000, "int32": 50000}[dtype]
        data = (tex * (top - 10) + 5).round().astype(dtype)
    else:
        data = (tex * 0.8 - 0.1).astype(dtype)
    if nodata_border and nodata is not None:
        data[:, :nodata_border, :] = nodata
        data[:, :, :nodata_border] = nodata
    if nan_border:
        data[:, :16, :] = np.nan
    if transform is None:
        if str(crs).upper() == "EPSG:4326":
            transform = from_origin(12.0, 46.0, 0.0001, 0.0001)
        elif str(crs).upper() == "EPSG:3857":
            transform = from_origin(1_400_000.0, 5_800_000.0, 2.0, 2.0)
        else:
            transform = from_origin(500_000.0, 5_100_000.0, 10.0, 10.0)
    count = bands + (1 if alpha else 0)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
               "crs": crs, "transform": transform, "nodata": nodata, "compress": compress}
    if tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if photometric:
        profile["photometric"] = photometric
    env = {"GDAL_TIFF_INTERNAL_MASK": "YES"}
    with rasterio.Env(**env), rasterio.open(path, "w", **profile) as dst:
        dst.write(data, indexes=list(range(1, bands + 1)))
        if alpha:
            a = np.full((height, width), 255, np.uint8 if dtype == "uint8" else dtype)
            a[:, -20:] = 0
            dst.write(a, count)
            ci = list(colorinterp or [ColorInterp.red, ColorInterp.green, ColorInterp.blue][:bands])
            dst.colorinterp = ci + [ColorInterp.alpha]
        elif colorinterp:
            dst.colorinterp = colorinterp
        if internal_mask:
            mask = np.full((height, width), 255, np.uint8)
            mask[-24:, :] = 0
            dst.write_mask(mask)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
        for i, bt in (band_tags or {}).items():
            dst.update_tags(i, **bt)
        if scales:
            dst.scales = scales
        if offsets:
            dst.offsets = offsets
        if units:
            dst.units = units
    return path


def write_aoi(path: Path, geometries, crs="EPSG:32633", properties=None, driver=None, layer=None) -> Path:
    """Write polygons (shapely) with optional per-feature properties to any OGR format."""
    import geopandas as gpd

    data = {key: list(values) for key, values in (properties or {}).items()}
    gdf = gpd.GeoDataFrame(data, geometry=list(geometries), crs=crs)
    kwargs = {"engine": "pyogrio"}
    if driver:
        kwargs["driver"] = driver
    if layer:
        kwargs["layer"] = layer
    gdf.to_file(path, **kwargs)
    return path


def pixel_box(src_path: Path, col0, row0, col1, row1):
    """A polygon in scene CRS covering pixel columns [col0, col1) and rows [row0, row1)."""
    import rasterio
    from shapely.geometry import box

    with rasterio.open(src_path) as src:
        t = src.transform
    x0, y0 = t @ (col0, row0)
    x1, y1 = t @ (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


class InvertEditor:
    """Test editor: colour inversion of the whole window (the pipeline keeps only the ROI)."""

    def __init__(self):
        self.calls = []

    def edit(self, request, progress):
        self.calls.append(request)
        progress(1, 1, "inverted")
        return -request.image

    def describe(self):
        return {"name": "invert-test"}


@pytest.fixture
def rgb_scene(tmp_path):
    return write_scene(tmp_path / "rgb_utm.tif", descriptions=["red", "green", "blue"],
                       tags={"SENSOR": "test-cam", "ACQ_DATE": "2024-05-01"},
                       band_tags={1: {"WAVELENGTH": "665"}})


@pytest.fixture
def invert_editor():
    return InvertEditor()


def build_tiny_instruct(folder: Path) -> Path:
    """A randomly initialised InstructPix2Pix pipeline of ~1 MB (native size 32 px), built offline
    from config classes and saved with ``save_pretrained``; returns the pipeline folder."""
    import json

    import torch
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    # A letters-only byte-level vocabulary with no merges: every word becomes its letters.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=8,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                    attention_head_dim=4, norm_num_groups=8)
        vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=8, sample_size=32)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                            bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16))
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                                  scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


@pytest.fixture(scope="session")
def tiny_instruct(tmp_path_factory) -> Path:
    return build_tiny_instruct(tmp_path_factory.mktemp("tiny-instruct"))


@pytest.fixture
def scene(tmp_path):
    """A small textured scene and a 30 px ROI, for the service tests."""
    path = write_scene(tmp_path / "scene.tif", width=96, height=96, blocksize=32)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(path, 30, 30, 60, 60)])
    return path, aoi


@pytest.fixture
def service(tmp_path):
    """A real ``rs-geo-edit serve`` on 127.0.0.1 with its own folders (tests/live_service.py)."""
    from live_service import Service

    svc = Service(tmp_path).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """The model cache the tests share: $RS_GEO_EDIT_CACHE (scripts/test.sh sets it, so models
    survive between runs), else a folder of this session."""
    folder = os.environ.get("RS_GEO_EDIT_CACHE")
    return Path(folder) if folder else tmp_path_factory.mktemp("model-cache")


def sample_aoi_with_prompt(path: Path, prompt: str) -> Path:
    """The bundled ROI with ``prompt`` as its feature's prompt, written to ``path`` (GeoJSON)."""
    import geopandas as gpd

    aoi = gpd.read_file(SAMPLE_AOI)
    aoi["prompt"] = [prompt] * len(aoi)
    aoi.to_file(path, driver="GeoJSON", engine="pyogrio")
    return path


def run_cli(*args, timeout=600):
    """The CLI as a user runs it, in a process of its own with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def aoi_mask(scene: Path, aoi: Path):
    """The pixels of ``scene`` that the polygons of ``aoi`` touch (bool rows x cols)."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import geometry_mask

    with rasterio.open(scene) as src:
        return geometry_mask(list(gpd.read_file(aoi).to_crs(src.crs).geometry), out_shape=(src.height, src.width),
                             transform=src.transform, invert=True, all_touched=True)

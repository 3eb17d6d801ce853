"""One typed configuration object that flows from the entry points down, and the presets.

Only this module and ``cli.py`` read environment variables. Presets are named bundles of model
and sampling parameters (``fast`` for CPU, ``paper`` for a GPU); every field can be overridden.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import IncompatibleOptions

MODES = ("regenerate", "copy", "text")
# Editing engines (editors/), each mapping the modes to its own method (the `engine` option's choices).
ENGINES = ("sinddm", "instruct", "patch")
BLEND_MODES = ("feather", "laplacian", "poisson")
MODEL_SCOPES = ("window", "scene")
# Tiles overlap by twice the denoiser's receptive radius (16 px) plus an 8 px cross-fade: 40 px;
# a smaller tile would spend much of its work on the overlap.
MIN_TILE = 128


@dataclass
class WindowConfig:
    """Window planning, in pixels of the scene."""

    margin_px: int = 64          # smallest context margin around an ROI's bounding box
    margin_frac: float = 0.5     # margin as a fraction of the ROI extent (per axis), if larger
    margin_max_px: int = 512     # the most margin_frac gives (0 = no limit): context, not a second ROI
    max_side: int = 0            # windows with a larger side are edited at reduced resolution (0 = never)
    merge: bool = True           # merge ROIs whose windows overlap into one window


@dataclass
class BlendConfig:
    """Compositing of an edited window back into the scene."""

    mode: str = "feather"        # feather | laplacian | poisson
    band_px: int = 16            # width of the transition band outside the ROI, pixels
    color_match: bool = False    # fit a per-band gain/offset on the context ring first
    ring_px: int = 24            # width of the context ring used for colour and detail matching, pixels
    detail_match: bool = True    # calm a texture busier than its ring, octave by octave (blend.match_detail)


@dataclass
class OutputConfig:
    """How the output GeoTIFF is written."""

    cog: bool = False            # write a Cloud-Optimized GeoTIFF with overviews
    overwrite: bool = False      # replace an existing output file
    compress: Optional[str] = None  # None: keep a lossless source compression, deflate if lossy
    provenance: bool = True      # write <output>.json beside the output


@dataclass
class ModelConfig:
    """SinDDM training and sampling parameters (see ``model/``), and copy mode's paste. The
    defaults are a CPU-sized model sampled as the SinDDM reference does, with every later
    sampling idea off; the presets (:data:`PRESETS`) set what they change. Every field is an
    option (``options.py``) bounded by :data:`MODEL_LIMITS`."""

    # training (the model cache's key, model/cache.py)
    width: int = 48              # widest block; blocks are width/2, width, width, width/2
    timesteps: int = 100         # diffusion steps of the cosine schedule
    steps: int = 1000            # training steps
    batch: int = 4               # images (crops) per training step
    crop: int = 48               # scales larger than this are trained on random crops, pixels
    lr: float = 1e-3             # Adam learning rate
    lr_decay_every: int = 400    # steps between learning-rate decays (by model.trainer.LR_GAMMA)
    detail_factor: float = 10.0  # finer scales start where noise = this x their blur error
    scale_power: float = 0.0     # training draws scale s with weight (s + 1) ** scale_power (0 = uniform)
    checkpoint_every: int = 250  # training steps between resumable checkpoints
    scope: str = "window"        # one model per window, or one per scene serving all its windows
    # sampling
    sample_stride: int = 2       # sample every n-th timestep (1 = the full chain)
    novelty: float = 1.0         # coarsest chain starts at this fraction of the noise (1 = pure noise)
    start_mid: float = 1.0       # middle scales start sampling at this fraction of their trained start
    start_fine: float = 1.0      # the finest scale starts sampling at this fraction of its trained start
    large_px: int = 0            # middle scales this large (short side, px) are "large" (0 = none)
    start_large: float = 0.6     # large middle scales start sampling at this fraction of their trained start
    rim_hold: float = 0.0        # windows with large scales: weight of the original on x0 over the ROI's rim
    tile: int = 512              # scales larger than this are sampled in overlapping tiles, pixels (0 = off)
    chroma_radius: int = 0       # guided chroma smoothing of the generated pixels, pixels (0 = off)
    patch_scales: int = 0        # the finest scales whose clean estimate is remade of real patches (0 = off)
    net_scales: int = 0          # the net trains on and samples only this many coarsest scales; the finer ones
                                 # are the window's real patches laid out on its result (patch/fill.py; 0 = all)
    # copy mode's paste (editors/copy.py)
    copy_weight: float = 0.8     # weight of the pasted content on x0
    copy_wiggle: float = 0.0     # the paste starts up to this fraction of its depth further in (varying)
    copy_hold: float = 0.0       # weight of the original on x0 where the paste is not whole, coarse scales
    copy_grain: float = 1.0      # the paste's detail may be raised up to this x, to the donor's (1 = off)

    def check(self) -> None:
        """Every field within its :data:`MODEL_LIMITS`; raises IncompatibleOptions naming it."""
        for name, (low, high) in MODEL_LIMITS.items():
            check_range(name, getattr(self, name), low, high)


# The bounds of each model setting, declared once: make_config checks every value against them,
# model overrides and the benches' settings included, and the options schema takes them from here.
MODEL_LIMITS: dict[str, tuple[float, float]] = {
    "width": (8, 512), "timesteps": (2, 10_000), "steps": (1, 1_000_000), "batch": (1, 1024),
    "crop": (8, 1_000_000), "lr": (1e-7, 1.0), "lr_decay_every": (1, 10_000_000), "detail_factor": (0.01, 1000.0),
    "scale_power": (0.0, 8.0), "checkpoint_every": (1, 10_000_000), "sample_stride": (1, 1000),
    "novelty": (0.05, 1.0), "start_mid": (0.01, 1.0), "start_fine": (0.01, 1.0), "large_px": (0, 16_384),
    "start_large": (0.01, 1.0), "rim_hold": (0.0, 1.0), "tile": (0, 16_384), "chroma_radius": (0, 16), "patch_scales": (0, 8),
    "net_scales": (0, 8),
    "copy_weight": (0.0, 1.0), "copy_wiggle": (0.0, 1.0), "copy_hold": (0.0, 1.0), "copy_grain": (1.0, 4.0),
}


# Former model settings that no preset changed, now constants of the model layer
# (model.trainer.EMA_DECAY and LR_GAMMA, model.pyramid.SCALE_FACTOR).
FROZEN_MODEL_KEYS = ("ema", "lr_gamma", "scale_factor")


def check_range(name: str, value, low, high) -> None:
    """Raise IncompatibleOptions naming ``name`` when ``value`` is outside [low, high]."""
    if low is not None and value < low or high is not None and value > high:
        raise IncompatibleOptions(
            f"`{name}` {value} is out of range: use {format_number(low)} to {format_number(high)}")


def format_number(value) -> str:
    return "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class GuidanceConfig:
    """CLIP text guidance (mode ``text``)."""

    clip: str = "remoteclip-vit-b-32"    # see guidance/clip.py for the accepted names
    strength: float = 0.3                # step size, relative to the masked image norm
    views: int = 4                       # augmented views per ROI and step (reference: 16)
    every: int = 1                       # guide every n-th sampling step
    momentum: float = 0.2                # weight of the new x0 inside the mask (paper: 0.05)
    stop_frac: float = 0.3               # no guidance in the last fraction of the finest scale
    ensemble: bool = True                # prompt ensembling over remote-sensing phrasings
    synonyms: Optional[str] = None       # JSON file of prompt -> alternatives
    llm_endpoint: Optional[str] = None   # OpenAI-compatible chat endpoint for paraphrases
    llm_model: str = "default"
    weights_dir: Optional[str] = field(default_factory=lambda: os.environ.get("RS_GEO_EDIT_WEIGHTS"))


@dataclass
class InstructConfig:
    """The instruction-editor engine (``--engine instruct``, see ``editors/instruct.py``)."""

    # A diffusers pipeline folder or a Hugging Face repo id; None: editors.instruct.DEFAULT_MODEL.
    model: Optional[str] = field(default_factory=lambda: os.environ.get("RS_GEO_EDIT_INSTRUCT_MODEL"))
    steps: int = 20                      # denoising steps per tile
    guidance: float = 7.5                # text (instruction) guidance scale
    image_guidance: float = 1.5          # how closely the edit keeps the input image


PRESETS: dict[str, dict[str, Any]] = {
    # CPU: the defaults' narrow net, 48 px crops, short schedule and strided sampling; the net
    # trains on and draws the coarsest scale only, from the original noised to 0.4, and the
    # finer scales are the window's real patches laid out on its result (docs/quality.md). The
    # rest acts where the net draws every scale (text mode, below): training weighted to the
    # fine scales, chroma smoothing, finer scales that refine the scale below rather than
    # re-invent it, large scales that draw their own layout with the ROI's rim held, and copy
    # mode's hold, wandering outline and grain.
    "fast": {
        "scale_power": 2.0, "chroma_radius": 2, "novelty": 0.4, "start_mid": 0.3, "start_fine": 0.5,
        "large_px": 300, "rim_hold": 0.3, "copy_wiggle": 0.3, "copy_hold": 0.3,
        "copy_grain": 1.5, "net_scales": 1, "steps": 600,
    },
    # The reference hyperparameters of the SinDDM paper, for a GPU: its uniform scale draw and
    # chains from pure noise are the defaults.
    "paper": {
        "width": 160, "steps": 120_000, "batch": 32, "crop": 100_000, "lr_decay_every": 30_000,
        "sample_stride": 1, "checkpoint_every": 5000,
    },
}


# What a preset sets differently in text mode, beneath the caller's own overrides. A prompt asks
# for what the window's patches may not hold, so in ``fast`` the net draws every scale there (as
# the preset did before it drew only the coarse ones), with its 1000 steps and start at 0.6.
TEXT_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"net_scales": 0, "steps": 1000, "novelty": 0.6},
}


def default_cache_dir() -> Path:
    """Trained-model cache: $RS_GEO_EDIT_CACHE, else $XDG_CACHE_HOME/rs-geo-edit, else ~/.cache."""
    env = os.environ.get("RS_GEO_EDIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rs-geo-edit"


def _xdg(variable: str, override: str, fallback: str) -> Path:
    env = os.environ.get(override)
    if env:
        return Path(env).expanduser()
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "rs-geo-edit"


def default_config_dir() -> Path:
    """Service token and settings: $RS_GEO_EDIT_CONFIG_DIR, else $XDG_CONFIG_HOME/rs-geo-edit."""
    return _xdg("XDG_CONFIG_HOME", "RS_GEO_EDIT_CONFIG_DIR", ".config")


def default_data_dir() -> Path:
    """Service job database: $RS_GEO_EDIT_DATA_DIR, else $XDG_DATA_HOME/rs-geo-edit."""
    return _xdg("XDG_DATA_HOME", "RS_GEO_EDIT_DATA_DIR", ".local/share")


@dataclass
class EditConfig:
    """Everything one edit needs besides its input and output paths."""

    mode: str = "regenerate"
    engine: str = "sinddm"
    preset: str = "fast"
    prompt: Optional[str] = None          # global prompt; a feature's prompt field overrides it
    prompt_field: str = "prompt"
    role_field: str = "role"              # features with role=source are copy sources
    layer: Optional[str] = None           # layer of a multi-layer AOI file (GeoPackage)
    copy_from: Optional[str] = None       # copy mode: a vector of source polygons, or a raster of content
    seed: int = 0
    rgb_bands: Optional[tuple[int, ...]] = None  # 1-based band numbers the RGB models see, e.g. (3, 2, 1)
    device: str = "auto"                  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None         # torch CPU threads; None leaves torch's default
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_max_gb: float = 5.0             # trained-model cache size cap (LRU eviction)
    windows: WindowConfig = field(default_factory=WindowConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(**PRESETS["fast"]))
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    instruct: InstructConfig = field(default_factory=InstructConfig)

    def validate(self) -> "EditConfig":
        if self.engine not in ENGINES:
            raise IncompatibleOptions(f"`engine` {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.mode not in MODES:
            raise IncompatibleOptions(f"`mode` {self.mode!r} is not one of {', '.join(MODES)}")
        if self.blend.mode not in BLEND_MODES:
            raise IncompatibleOptions(
                f"`blend` {self.blend.mode!r} is not one of {', '.join(BLEND_MODES)}")
        if self.windows.margin_px < 0 or self.windows.margin_frac < 0 or self.windows.margin_max_px < 0:
            raise IncompatibleOptions("`margin`, `margin_frac` and `margin_max` must be >= 0")
        if 0 < self.windows.max_side < 32:
            raise IncompatibleOptions(f"`max_side` {self.windows.max_side} is too small: use 32 or more, or 0 (off)")
        if self.blend.band_px < 0:
            raise IncompatibleOptions("`feather` must be >= 0 pixels")
        if self.rgb_bands is not None and len(self.rgb_bands) != 3:
            raise IncompatibleOptions("`rgb_bands` takes three 1-based band numbers, e.g. 3,2,1")
        self.model.check()
        if self.model.width % 2:
            raise IncompatibleOptions(f"`width` {self.model.width} must be an even number")
        if self.guidance.views < 1 or self.guidance.every < 1 or not 0 <= self.guidance.momentum <= 1:
            raise IncompatibleOptions("`clip_views` and `guide_every` must be >= 1, `momentum` within [0, 1]")
        if self.model.scope not in MODEL_SCOPES:
            raise IncompatibleOptions(f"`model_scope` {self.model.scope!r} is not one of {', '.join(MODEL_SCOPES)}")
        if 0 < self.model.tile < MIN_TILE:
            raise IncompatibleOptions(f"`tile` {self.model.tile} is too small: use {MIN_TILE} px or more, or 0 (off)")
        if self.engine == "patch" and self.mode == "text":
            raise IncompatibleOptions("`mode` text needs `engine` sinddm or instruct: the patch engine fills from the "
                                      "window's own patches and reads no prompt")
        if self.engine == "instruct" and self.mode == "copy":
            raise IncompatibleOptions("`mode` copy needs `engine` sinddm: the instruct engine edits by instruction only")
        if self.instruct.steps < 1 or self.instruct.guidance < 0 or self.instruct.image_guidance < 0:
            raise IncompatibleOptions("`engine_steps` must be >= 1 and `engine_guidance`, `engine_image_guidance` >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["cache_dir"] = str(self.cache_dir)
        return out


def config_from_dict(data: dict[str, Any]) -> EditConfig:
    """Rebuild an :class:`EditConfig` from :meth:`EditConfig.to_dict` (e.g. in another process)."""
    data = dict(data)
    if isinstance(data.get("model"), dict):   # records written when these were settings hold the constants' values
        data["model"] = {k: v for k, v in data["model"].items() if k not in FROZEN_MODEL_KEYS}
    nested = {"windows": WindowConfig, "blend": BlendConfig, "output": OutputConfig, "model": ModelConfig,
              "guidance": GuidanceConfig, "instruct": InstructConfig}
    for key, cls in nested.items():
        if key in data:
            data[key] = cls(**data[key])
    if data.get("cache_dir") is not None:
        data["cache_dir"] = Path(data["cache_dir"])
    if data.get("rgb_bands") is not None:
        data["rgb_bands"] = tuple(data["rgb_bands"])
    return EditConfig(**data).validate()


def make_config(preset: str = "fast", model_overrides: Optional[dict[str, Any]] = None,
                **fields: Any) -> EditConfig:
    """Build an :class:`EditConfig` from a preset (in text mode with its :data:`TEXT_PRESETS`),
    model overrides and top-level fields."""
    if preset not in PRESETS:
        raise IncompatibleOptions(f"`preset` {preset!r} is not one of {', '.join(PRESETS)}")
    text = TEXT_PRESETS.get(preset, {}) if fields.get("mode") == "text" else {}
    model = ModelConfig(**{**PRESETS[preset], **text})
    for key, value in (model_overrides or {}).items():
        if value is None:
            continue
        if not hasattr(model, key):
            raise IncompatibleOptions(f"unknown model parameter {key!r}")
        setattr(model, key, type(getattr(model, key))(value))
    return EditConfig(preset=preset, model=model, **fields).validate()

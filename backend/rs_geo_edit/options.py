"""Every public option of an edit, declared once: name, type, default, bounds, choices, help.

:class:`EditOptions` is the one schema. The CLI's commands, the service's ``JobRequest.options``
(and its OpenAPI schema) and the QGIS Processing parameters (through ``options_schema.json``,
written by :func:`options_schema`) are all generated from it, and :meth:`EditOptions.to_config`
is the only translation into an :class:`~rs_geo_edit.config.EditConfig`. A new option is one
field here plus its line in ``to_config``.

Defaults that ``config.py`` already holds are read from there; ``None`` for a model option
means "the preset's value". This module stays light (no pydantic, no torch): the CLI imports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from .config import (BLEND_MODES, ENGINES, MODEL_LIMITS, MODEL_SCOPES, MODES, PRESETS, BlendConfig, EditConfig,
                     GuidanceConfig, InstructConfig, ModelConfig, OutputConfig, WindowConfig, check_range,
                     format_number, make_config)
from .errors import IncompatibleOptions

COMPRESSIONS = ("deflate", "lzw", "zstd", "lzma", "packbits", "none")  # lossless: untouched pixels stay exact
INT32_MAX = 2_147_483_647  # seeds fit a QGIS integer parameter


def option(default: Any, help: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
           choices: Optional[tuple] = None, group: str = "advanced", flags: tuple[str, ...] = (),
           even: bool = False, shown: Optional[str] = None) -> Any:
    """A field of :class:`EditOptions` with its schema. ``flags`` are extra CLI spellings
    (e.g. ``-p``, or ``--ensemble/--no-ensemble``); ``shown`` is the default as help texts say it
    where the value is None."""
    return field(default=default, metadata={
        "help": help, "minimum": minimum, "maximum": maximum, "choices": choices, "group": group,
        "flags": flags, "even": even, "shown": shown})


def _default(cls, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def model_option(name: str, help: str, even: bool = False, shown: str = "the preset's") -> Any:
    """An advanced option setting the model parameter ``name``: unset, the preset decides; its
    bounds are those ``config.MODEL_LIMITS`` declares."""
    low, high = MODEL_LIMITS[name]
    return option(None, help, minimum=low, maximum=high, even=even, shown=shown)


@dataclass
class EditOptions:
    """The options of one edit, flat, by their public names (CLI ``--clip-views`` is
    ``clip_views``). Constructing one validates every value (type, bounds, choices) and raises
    :class:`IncompatibleOptions` naming the option."""

    # ------------------------------------------------------------------------------ basic
    mode: Optional[str] = option(
        None, "What goes into the ROIs: text (steered by CLIP towards the prompt), regenerate (new content "
        "in the window's own style) or copy (the content of a source region).", choices=MODES, group="basic",
        flags=("-m",), shown="text when a prompt is given, else regenerate")
    prompt: Optional[str] = option(
        None, "Prompt for ROIs without their own, e.g. \"dense forest\" or \"flooded fields\".", group="basic",
        flags=("-p",))
    preset: str = option(
        "fast", "Model and sampling bundle: fast (CPU) or paper (the SinDDM paper's hyperparameters, for a GPU); "
        "the model options override it.", choices=tuple(PRESETS), group="basic")
    seed: int = option(_default(EditConfig, "seed"), "Random seed: the same inputs and seed give the same output.",
                       minimum=0, maximum=INT32_MAX, group="basic")
    prompt_field: str = option(_default(EditConfig, "prompt_field"), "AOI attribute holding per-ROI prompts.",
                               group="basic")
    layer: Optional[str] = option(None, "Layer of a multi-layer AOI file (GeoPackage), e.g. flood.", group="basic",
                                  shown="the only layer")
    copy_from: Optional[str] = option(
        None, "Copy mode: a vector file of source polygons or a raster of content, e.g. donor.gpkg (instead of "
        "features with role=source in the AOI).", group="basic")
    blend: str = option(_default(BlendConfig, "mode"), "Compositing at the ROI edge: feather (smooth ramp), "
                        "laplacian (per frequency band) or poisson (gradient domain).", choices=BLEND_MODES,
                        group="basic")
    feather: int = option(_default(BlendConfig, "band_px"), "Width of the blend band outside each ROI, pixels; in copy "
                          "mode the paste also starts this far inside the ROI.",
                          minimum=0, maximum=512, group="basic")
    strength: float = option(_default(GuidanceConfig, "strength"), "Text mode: CLIP guidance step, relative to "
                             "the ROI's image norm (0.1 subtle, 1 strong).", minimum=0.0, maximum=10.0, group="basic")
    clip: str = option(_default(GuidanceConfig, "clip"), "CLIP for text mode: remoteclip-vit-b-32, remoteclip-rn50, "
                       "remoteclip-vit-l-14, ARCH:TAG (open_clip), ARCH:/path/weights.pt, or rsge-landcover (built in, "
                       "no weights: a small land-cover vocabulary such as snow, water, forest, road, field).", group="basic")
    overwrite: bool = option(_default(OutputConfig, "overwrite"), "Replace an existing output.", group="basic")
    cog: bool = option(_default(OutputConfig, "cog"), "Write a Cloud-Optimized GeoTIFF with overviews.",
                       group="basic")
    device: str = option(_default(EditConfig, "device"), "Where to compute: auto (CUDA when available), cpu, cuda "
                         "or cuda:N.", group="basic")
    engine: str = option(_default(EditConfig, "engine"), "What edits: sinddm (a model trained on the window), "
                         "patch (no training: the ROI remade of the window's own patches, coarse to fine; "
                         "regenerate and copy, seconds) or instruct (a diffusers instruction editor such as "
                         "InstructPix2Pix; the prompt is the instruction, e.g. \"flood the fields\").", choices=ENGINES, group="basic")
    engine_model: Optional[str] = option(
        None, "Instruct engine: a diffusers pipeline folder or a Hugging Face repo id.", group="basic",
        shown="$RS_GEO_EDIT_INSTRUCT_MODEL, else timbrooks/instruct-pix2pix")
    # ---------------------------------------------------------------------------- advanced
    compress: Optional[str] = option(None, "Output compression (lossless only).", choices=COMPRESSIONS,
                                     shown="the source's if lossless, else deflate")
    threads: Optional[int] = option(None, "torch CPU threads.", minimum=1, maximum=1024, shown="torch's choice")
    cache_dir: Optional[str] = option(None, "Trained-model cache folder; on a cluster, a path every node sees.",
                                      shown="$RS_GEO_EDIT_CACHE or ~/.cache/rs-geo-edit")
    cache_max_gb: float = option(_default(EditConfig, "cache_max_gb"), "Cache size cap, GB; least recently used "
                                 "models go first.", minimum=0.0, maximum=100_000.0)
    steps: Optional[int] = model_option("steps", "Training steps (fast: 600, 1000 in text mode; paper: 120000; more steps, finer detail).")
    width: Optional[int] = model_option("width", "Denoiser width, an even number (e.g. 48 or 160).", even=True)
    batch: Optional[int] = model_option("batch", "Training batch size, crops per step.")
    crop: Optional[int] = model_option(
        "crop", "Training crop size, pixels; scales larger than this train on random crops.")
    lr: Optional[float] = model_option("lr", "Learning rate (e.g. 0.001).")
    lr_decay_every: Optional[int] = model_option(
        "lr_decay_every", "Training steps between halvings of the learning rate (paper: 30000).")
    checkpoint_every: Optional[int] = model_option(
        "checkpoint_every", "Training steps between resumable checkpoints.")
    timesteps: Optional[int] = model_option("timesteps", "Diffusion timesteps per scale.")
    sample_stride: Optional[int] = model_option("sample_stride", "Sample every n-th timestep (1 = the full chain).")
    detail_factor: Optional[float] = model_option(
        "detail_factor", "Finer scales start where the noise is this x their blur error.")
    scale_power: Optional[float] = model_option(
        "scale_power", "Training draws scale s (0 = coarsest) with weight (s + 1) to this power: 0 is uniform "
        "(paper), 2 gives the fine scales most steps (fast).")
    novelty: Optional[float] = model_option(
        "novelty", "How new the ROI's layout is: 1 starts the coarsest chain from pure noise (paper); 0.4 (fast; 0.6 "
        "in text mode) from the original noised to 40 %, so the ROI keeps its coarse layout and continues its "
        "surroundings. The patch engine noises its start by 0.75 x this.")
    tile: Optional[int] = model_option(
        "tile", "Scales larger than this are sampled in overlapping tiles of at most this many pixels a side, fused "
        "at every step, so memory follows the tile and not the ROI (0 = whole scales at once; e.g. 1024 on a GPU).",
        shown="512")
    start_mid: Optional[float] = model_option(
        "start_mid", "Sampling: the middle scales start at this fraction of their trained start, so they refine the "
        "coarser result rather than re-invent it (1 = the trained start, paper; 0.3 fast).")
    start_fine: Optional[float] = model_option(
        "start_fine", "Sampling: the finest scale starts at this fraction of its trained start (1 = the trained "
        "start, paper; 0.5 fast; lower keeps more of the coarser result, higher adds more new detail).")
    large_px: Optional[int] = model_option(
        "large_px", "Sampling: middle scales whose short side has at least this many pixels draw their own layout, "
        "starting at start_large (0 = none, paper; 300 fast).")
    start_large: Optional[float] = model_option(
        "start_large", "Sampling: the large middle scales (large_px) start at this fraction of their trained start "
        "(0.6).")
    rim_hold: Optional[float] = model_option(
        "rim_hold", "Sampling, windows with large scales: weight of the original kept on the ROI's rim, so the "
        "layout drawn there continues the surroundings (0 = off, paper; 0.3 fast).")
    patch_scales: Optional[int] = model_option(
        "patch_scales", "Sampling: the finest scales whose clean estimate is remade of the window's own real "
        "patches at every step, so the grain is the scene's rather than the model's (0 = off).")
    net_scales: Optional[int] = model_option(
        "net_scales", "The net trains on and samples only this many of the coarsest scales, where the layout is "
        "drawn; the finer scales are made of the window's own real patches laid out on its result (0 = the net "
        "draws every scale: paper, and fast in text mode, where a prompt asks for what the window may not hold; 1 "
        "fast).")
    copy_weight: Optional[float] = model_option(
        "copy_weight", "Copy mode: weight of the pasted content on the clean estimate at the coarser scales.")
    copy_wiggle: Optional[float] = model_option(
        "copy_wiggle", "Copy mode: the paste starts up to this fraction of its depth further inside the ROI, varying "
        "along the outline, so a square donor does not end along straight lines (0 = off, paper; 0.3 fast).")
    copy_hold: Optional[float] = model_option(
        "copy_hold", "Copy mode: weight of the original where the paste is not whole, at the coarser half of the "
        "scales, so the donor is not carried out to the outline (0 = off, paper; 0.3 fast).")
    copy_grain: Optional[float] = model_option(
        "copy_grain", "Copy mode: the paste's fine detail may be raised up to this factor, never beyond the donor's "
        "(1 = off, paper; 1.5 fast).")
    model_scope: str = option(_default(ModelConfig, "scope"), "One model per window, or one per scene: trained "
                              "once, with twice the steps, on all the scene's windows, it serves every ROI (many "
                              "ROIs, one training; e.g. scene for fifty ROIs of one orthomosaic).",
                              choices=MODEL_SCOPES)
    chroma_radius: Optional[int] = model_option(
        "chroma_radius", "Guided smoothing of the colour of generated pixels, radius in pixels (0 = off): removes "
        "single-pixel colour speckle.")
    color_match: bool = option(_default(BlendConfig, "color_match"), "Give the ROI the per-band mean and spread of "
                               "the context ring around it before blending.")
    detail_match: bool = option(_default(BlendConfig, "detail_match"), "Grain matching: calm a generated texture "
                                "that is busier than the context ring around it, octave by octave from single "
                                "pixels to ~30 px blotches, before blending (off: the model's texture as sampled). The patch "
                                "engine's pixels, and those of the scales finer than net_scales, are copies of the "
                                "scene: their grain is never matched.",
                                flags=("--detail-match/--no-detail-match",))
    margin: int = option(_default(WindowConfig, "margin_px"), "Smallest context margin around each ROI, pixels.",
                         minimum=0, maximum=4096)
    margin_frac: float = option(_default(WindowConfig, "margin_frac"), "Context margin as a fraction of the ROI "
                                "extent, where larger than the margin.", minimum=0.0, maximum=10.0)
    margin_max: int = option(_default(WindowConfig, "margin_max_px"), "The largest context margin the fraction "
                             "gives, pixels (0 = no limit): a 4096 px ROI gets 512 px of context on each side, not "
                             "2048, which would give its window 2.6 times the pixels.", minimum=0, maximum=16_384)
    max_side: int = option(_default(WindowConfig, "max_side"), "Windows with a longer side, pixels, are edited at "
                           "reduced resolution and resampled back, for speed (0 = never: native resolution, e.g. "
                           "1024 to trade detail for time).", minimum=0, maximum=16_384)
    rgb_bands: Optional[str] = option(None, "The three 1-based band numbers an RGB model sees, e.g. 3,2,1 or 4,3,2.",
                                      shown="red, green, blue by colour interpretation, else the first three")
    clip_views: int = option(_default(GuidanceConfig, "views"), "Text mode: augmented CLIP views per ROI and step.",
                             minimum=1, maximum=64)
    guide_every: int = option(_default(GuidanceConfig, "every"), "Text mode: guide every n-th sampling step.",
                              minimum=1, maximum=1000)
    momentum: float = option(_default(GuidanceConfig, "momentum"), "Text mode: weight of the new estimate inside "
                             "the ROI, 0 to 1.", minimum=0.0, maximum=1.0)
    ensemble: bool = option(_default(GuidanceConfig, "ensemble"), "Text mode: ensemble remote-sensing phrasings of "
                            "the prompt (off: the prompt as written).", flags=("--ensemble/--no-ensemble",))
    synonyms: Optional[str] = option(None, "Text mode: JSON file of prompt -> alternative phrasings, e.g. "
                                     "{\"forest\": [\"woodland\"]}.")
    llm_endpoint: Optional[str] = option(None, "Text mode: OpenAI-compatible chat URL for prompt paraphrases.")
    llm_model: str = option(_default(GuidanceConfig, "llm_model"), "Model name sent to the LLM endpoint.")
    engine_steps: int = option(_default(InstructConfig, "steps"), "Instruct engine: denoising steps per tile.",
                               minimum=1, maximum=1000)
    engine_guidance: float = option(_default(InstructConfig, "guidance"), "Instruct engine: instruction guidance "
                                    "scale.", minimum=0.0, maximum=100.0)
    engine_image_guidance: float = option(_default(InstructConfig, "image_guidance"), "Instruct engine: image "
                                          "guidance scale (higher keeps more of the input).", minimum=0.0,
                                          maximum=100.0)

    def __post_init__(self) -> None:
        for spec in SPECS:
            setattr(self, spec.name, spec.check(getattr(self, spec.name)))
        self.rgb_tuple()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EditOptions":
        """Options from a mapping of option names; an unknown name is an error naming it."""
        unknown = sorted(set(values) - set(OPTION_NAMES))
        if unknown:
            raise IncompatibleOptions(f"unknown option(s) {', '.join(unknown)}: see the option list "
                                      "(rs-geo-edit edit --help, or GET /openapi.json)")
        return cls(**values)

    def effective_mode(self) -> str:
        """The rule every entry point shares: text when a prompt is given, else regenerate."""
        return self.mode or ("text" if self.prompt else "regenerate")

    def rgb_tuple(self) -> Optional[tuple[int, ...]]:
        if not self.rgb_bands:
            return None
        try:
            bands = tuple(int(part) for part in self.rgb_bands.split(","))
        except ValueError:
            bands = ()
        if len(bands) != 3 or min(bands) < 1:
            raise IncompatibleOptions(f"`rgb_bands` {self.rgb_bands!r}: give three 1-based band numbers such as 3,2,1")
        return bands

    def to_config(self) -> EditConfig:
        """The :class:`EditConfig` of these options: the only translation from public option
        names to the configuration the pipeline reads."""
        model = {"steps": self.steps, "width": self.width, "batch": self.batch, "crop": self.crop, "lr": self.lr,
                 "timesteps": self.timesteps, "sample_stride": self.sample_stride, "detail_factor": self.detail_factor,
                 "scale_power": self.scale_power, "novelty": self.novelty, "chroma_radius": self.chroma_radius,
                 "tile": self.tile, "scope": self.model_scope, "start_mid": self.start_mid,
                 "start_fine": self.start_fine, "lr_decay_every": self.lr_decay_every,
                 "checkpoint_every": self.checkpoint_every, "large_px": self.large_px, "start_large": self.start_large,
                 "rim_hold": self.rim_hold, "copy_weight": self.copy_weight, "copy_wiggle": self.copy_wiggle,
                 "copy_hold": self.copy_hold, "copy_grain": self.copy_grain, "patch_scales": self.patch_scales,
                 "net_scales": self.net_scales}
        guidance = GuidanceConfig(clip=self.clip, strength=self.strength, views=self.clip_views, every=self.guide_every,
                                  momentum=self.momentum, ensemble=self.ensemble, synonyms=self.synonyms,
                                  llm_endpoint=self.llm_endpoint, llm_model=self.llm_model)
        extra = {"cache_dir": _path(self.cache_dir)} if self.cache_dir else {}
        instruct = InstructConfig(steps=self.engine_steps, guidance=self.engine_guidance,
                                  image_guidance=self.engine_image_guidance)
        if self.engine_model is not None:  # unset keeps the environment's default
            instruct.model = self.engine_model
        return make_config(
            self.preset, model_overrides=model, mode=self.effective_mode(), engine=self.engine, prompt=self.prompt,
            prompt_field=self.prompt_field, layer=self.layer, copy_from=self.copy_from, seed=self.seed,
            rgb_bands=self.rgb_tuple(), device=self.device, threads=self.threads, cache_max_gb=self.cache_max_gb,
            windows=WindowConfig(margin_px=self.margin, margin_frac=self.margin_frac,
                                 margin_max_px=self.margin_max, max_side=self.max_side),
            blend=BlendConfig(mode=self.blend, band_px=self.feather, color_match=self.color_match,
                              detail_match=self.detail_match),
            output=OutputConfig(cog=self.cog, overwrite=self.overwrite, compress=self.compress),
            guidance=guidance, instruct=instruct, **extra)


def _path(text: str):
    from pathlib import Path

    return Path(text).expanduser()


@dataclass(frozen=True)
class OptionSpec:
    """One option's schema, read from the field of :class:`EditOptions`."""

    name: str
    type: type            # int, float, bool or str
    nullable: bool        # None is accepted (and means "not given")
    default: Any
    help: str
    minimum: Optional[float]
    maximum: Optional[float]
    choices: Optional[tuple]
    group: str
    flags: tuple[str, ...]
    even: bool
    shown: Optional[str]

    def check(self, value: Any) -> Any:
        """``value`` validated and coerced to the option's type; raises IncompatibleOptions."""
        name = f"`{self.name}`"
        if value is None:
            if self.nullable:
                return None
            raise IncompatibleOptions(f"{name} needs a value")
        if self.type is bool:
            if not isinstance(value, bool):
                raise IncompatibleOptions(f"{name} is true or false, not {value!r}")
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int) and not (
                    isinstance(value, float) and value.is_integer()):
                raise IncompatibleOptions(f"{name} must be a whole number, not {value!r}")
            value = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IncompatibleOptions(f"{name} must be a number, not {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise IncompatibleOptions(f"{name} must be text, not {value!r}")
        if self.choices is not None and value not in self.choices:
            raise IncompatibleOptions(f"{name} {value!r} is not one of {', '.join(self.choices)}")
        check_range(self.name, value, self.minimum, self.maximum)
        if self.even and value % 2:
            raise IncompatibleOptions(f"{name} {value} must be an even number")
        return value

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``options_schema.json``."""
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "minimum": self.minimum,
                "maximum": self.maximum, "choices": list(self.choices) if self.choices is not None else None,
                "help": self.help + (f" Default: {self.shown}." if self.shown else ""), "group": self.group}

    def help_text(self) -> str:
        """Help with the choices, range and default spelled out (CLI and service descriptions)."""
        parts = [self.help]
        if self.choices is not None:
            parts.append(f"One of: {', '.join(self.choices)}.")
        if self.minimum is not None:
            even = " (even)" if self.even else ""
            parts.append(f"Range {format_number(self.minimum)} to {format_number(self.maximum)}{even}.")
        if self.shown:
            parts.append(f"Default: {self.shown}.")
        return " ".join(parts)


def _specs() -> tuple[OptionSpec, ...]:
    hints = get_type_hints(EditOptions)
    out = []
    for f in dataclasses.fields(EditOptions):
        hint, nullable = hints[f.name], False
        if get_origin(hint) is Union:
            args = [a for a in get_args(hint) if a is not type(None)]
            hint, nullable = args[0], True
        out.append(OptionSpec(name=f.name, type=hint, nullable=nullable, default=f.default, **f.metadata))
    return tuple(out)


SPECS: tuple[OptionSpec, ...] = _specs()
OPTION_NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
SPEC_BY_NAME: dict[str, OptionSpec] = {s.name: s for s in SPECS}


def options_schema() -> list[dict[str, Any]]:
    """Every option as a JSON-able dict: ``name``, ``type`` (int, float, bool, str), ``default``,
    ``minimum``, ``maximum``, ``choices`` (list or None), ``help``, ``group`` (basic, advanced).
    The QGIS plugin builds its Processing parameters from it (``qgis_plugin/options_schema.json``)."""
    return [s.as_dict() for s in SPECS]


def options_schema_json() -> str:
    """:func:`options_schema` as the text of ``qgis_plugin/options_schema.json``."""
    import json

    return json.dumps(options_schema(), indent=2) + "\n"


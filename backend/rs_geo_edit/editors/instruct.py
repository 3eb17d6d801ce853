"""The instruction-editor engine (``--engine instruct``): a Hugging Face ``diffusers`` image
editing pipeline, InstructPix2Pix by default, that takes each ROI's prompt as the instruction
("flood the fields", "burn the forest").

What the model sees: the window's RGB bands (``EditRequest.rgb``) in [0, 1], at its native size.
A window that fits in one native tile is resampled to it (sides rounded to what the network
accepts) and the result resampled back; a larger window is cut into native-size tiles that
overlap by a quarter tile, each edited on its own with a seed of its own, and the tiles are
merged with weights that ramp across the overlaps. Only tiles within an overlap of an ROI run.
Several prompts in one window each run over their own ROIs; a pixel takes the edit of its nearest
ROI. Bands the model does not see (near infrared, red edge, ...) keep their source values: an RGB
model says nothing about them. A scene with one or two bands is shown to the model as grey, and
the band takes the mean of the three output channels. The pipeline then keeps the result inside
the ROIs and the blend band only, like every engine.

Weights, in order: ``--engine-model`` (``InstructConfig.model``), else ``$RS_GEO_EDIT_INSTRUCT_MODEL``
(read in ``config.py``), else :data:`DEFAULT_MODEL`. Each is a local diffusers pipeline folder
(``model_index.json`` with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
or a Hugging Face repo id, taken from the hub cache and downloaded where the network allows
(never with ``HF_HUB_OFFLINE=1``). Any pipeline whose call takes ``prompt`` and ``image`` works;
its class comes from ``model_index.json``. CUDA runs in float16, the CPU in float32.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import EditConfig
from ..errors import IncompatibleOptions, WeightsNotFound
from ..imaging import resize
from ..progress import StageReporter

DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
ENV_VAR = "RS_GEO_EDIT_INSTRUCT_MODEL"
PIPELINE_FILES = "model_index.json with unet/, vae/, text_encoder/, tokenizer/ and scheduler/"


def resolve_model(spec: Optional[str]) -> tuple[str, bool]:
    """(local folder or hub repo id, whether it is a local folder) for ``spec`` (None: the default)."""
    name = (spec or DEFAULT_MODEL).strip()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise WeightsNotFound(f"instruct model folder {name!r} has no model_index.json: give a diffusers pipeline "
                                  f"folder ({PIPELINE_FILES}), e.g. a snapshot of {DEFAULT_MODEL}")
        return str(path), True
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise WeightsNotFound(f"instruct model {name!r} is neither a diffusers pipeline folder nor a Hugging Face "
                              f"repo id (owner/name): check `engine_model` or ${ENV_VAR}")
    return name, False


def _not_found(name: str, reason: str) -> WeightsNotFound:
    return WeightsNotFound(
        f"instruct weights {name!r} not found ({reason}): put a diffusers pipeline folder ({PIPELINE_FILES}) "
        f"somewhere and pass it as `engine_model` PATH or set ${ENV_VAR}=PATH, or fetch {name} into the Hugging "
        f"Face cache where the network allows (hf download {name}); the sinddm engine needs no weights")


_LOADED: dict[tuple, object] = {}


def _check_cached(repo: str) -> None:
    """Offline, a repo id must be in the hub cache: say so before importing diffusers (seconds)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
        raise _not_found(repo, "not in the Hugging Face cache, and HF_HUB_OFFLINE is set")


def load_pipeline(spec: Optional[str], device) -> tuple[object, str]:
    """(pipeline on ``device``, where it came from), loaded once per process."""
    source, local = resolve_model(spec)
    if not local:
        _check_cached(source)
    try:
        import diffusers
        import torch
        import transformers
        from diffusers import DiffusionPipeline
    except ImportError as exc:
        raise IncompatibleOptions(f"`engine` instruct needs diffusers and transformers ({exc}): install the "
                                  "'instruct' extra, e.g. pip install -e 'backend[instruct]'") from None
    # Loading bars would interleave with our own progress on stderr.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    key = (source, str(device), str(dtype))
    if key in _LOADED:
        return _LOADED[key], source
    # The safety checker is trained on photographs of people; on an aerial tile a false positive
    # would replace the edit with a black square, so it is not loaded.
    # The hub client logs its retries; the outcome reaches the user as one error line instead.
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    try:
        pipe = DiffusionPipeline.from_pretrained(source, dtype=dtype, safety_checker=None,
                                                 requires_safety_checker=False)
    except Exception as exc:  # hub, network, file-format and version errors all mean "no usable weights"
        reason = _first_line(exc)
        if local:
            raise WeightsNotFound(f"instruct model folder {source!r} cannot be loaded ({reason}): give a diffusers "
                                  f"pipeline folder ({PIPELINE_FILES})") from None
        raise _not_found(source, reason) from None
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    parameters = inspect.signature(pipe.__call__).parameters
    if not {"prompt", "image"} <= set(parameters):
        raise IncompatibleOptions(f"{type(pipe).__name__} ({source}) does not edit an image from a prompt: give an "
                                  "image editing pipeline such as StableDiffusionInstructPix2PixPipeline")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    _LOADED[key] = pipe
    return pipe, source


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` shared;
    the last tile ends at the edge."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def ramp(length: int, overlap: int) -> np.ndarray:
    """Merge weights along one tile side: rising over ``overlap`` pixels from each end, 1 inside."""
    edge = np.minimum(np.arange(length), np.arange(length)[::-1]) + 1.0
    return np.minimum(edge / (max(1, overlap) + 1.0), 1.0)


class InstructEditor:
    """Editor protocol implementation (see ``pipeline.Editor``)."""

    name = "instruct"

    def __init__(self, config: EditConfig):
        from . import resolve_device

        self.config = config
        self.device = resolve_device(config.device)
        self.pipe, self.source = load_pipeline(config.instruct.model, self.device)
        parameters = inspect.signature(self.pipe.__call__).parameters
        self.accepts = set(parameters)
        sample = self.pipe.unet.config.sample_size
        sample = sample[0] if isinstance(sample, (tuple, list)) else int(sample)
        self.scale = int(getattr(self.pipe, "vae_scale_factor", 8))
        self.native = sample * self.scale
        # The UNet halves the latent once per down block but the last: sides must divide by that.
        self.multiple = self.scale * 2 ** max(0, len(self.pipe.unet.config.block_out_channels) - 1)
        self.overlap = self.native // 4
        self.pipeline_name = type(self.pipe).__name__
        self.dtype = next(self.pipe.unet.parameters()).dtype
        self.windows: list[dict] = []

    def describe(self) -> dict:
        import torch

        return {"name": self.name, "pipeline": self.pipeline_name, "model": self.config.instruct.model
                or DEFAULT_MODEL, "weights": self.source, "device": str(self.device), "dtype": str(self.dtype),
                "native_size": self.native, "tile_overlap": self.overlap, "steps": self.config.instruct.steps,
                "guidance": self.config.instruct.guidance, "image_guidance": self.config.instruct.image_guidance,
                "torch": torch.__version__, "windows": self.windows}

    # ------------------------------------------------------------------------------- editing

    def edit(self, request, progress: StageReporter) -> np.ndarray:
        from scipy.ndimage import distance_transform_edt

        import torch

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        started = time.perf_counter()
        for k, prompt in enumerate(request.prompts, start=1):
            if not prompt:
                raise IncompatibleOptions(f"`engine` instruct: ROI {k} of window {request.window.index} has no "
                                          "prompt; give `prompt` or the feature a prompt attribute")
        h, w = request.roi.shape
        rgb01 = (np.clip(request.image[list(request.rgb)], -1.0, 1.0) + 1.0) / 2.0
        # Each pixel belongs to its nearest ROI; one model run per distinct prompt.
        distance, (near_r, near_c) = distance_transform_edt(request.labels == 0, return_indices=True)
        owner = request.labels[near_r, near_c]
        prompts = sorted(set(request.prompts))
        # Beyond the ROI only the blend band is kept, but tiles need an overlap of context to merge.
        reach = distance <= max(self.overlap, self.config.blend.band_px)
        tiles = [(r, c) for r in tile_starts(h, self.native, self.overlap)
                 for c in tile_starts(w, self.native, self.overlap)]
        th, tw = min(h, self.native), min(w, self.native)
        jobs = []
        for p_index, prompt in enumerate(prompts):
            labels_of = [k for k, q in enumerate(request.prompts, start=1) if q == prompt]
            region = np.isin(owner, labels_of) & reach
            for t_index, (r, c) in enumerate(tiles):
                if region[r:r + th, c:c + tw].any():
                    jobs.append((p_index, prompt, t_index, r, c))
        total = len(jobs) * self.config.instruct.steps
        edited = rgb01.copy()
        by_prompt: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n, (p_index, prompt, t_index, r, c) in enumerate(jobs):
            seed = int(np.random.SeedSequence([request.seed, p_index, t_index]).generate_state(1)[0])
            done = n * self.config.instruct.steps
            out = self._run(rgb01[:, r:r + th, c:c + tw], prompt, seed, progress, done, total,
                            f"tile {n + 1}/{len(jobs)}")
            acc, weight = by_prompt.setdefault(p_index, (np.zeros_like(rgb01), np.zeros((h, w))))
            tile_weight = np.outer(ramp(th, self.overlap), ramp(tw, self.overlap))
            acc[:, r:r + th, c:c + tw] += out * tile_weight
            weight[r:r + th, c:c + tw] += tile_weight
        for p_index, (acc, weight) in by_prompt.items():
            labels_of = [k for k, q in enumerate(request.prompts, start=1) if q == prompts[p_index]]
            take = np.isin(owner, labels_of) & (weight > 0)
            edited[:, take] = (acc[:, take] / weight[take]).astype(np.float32)
        result = request.image.copy()
        for position in sorted(set(request.rgb)):
            channels = [i for i, p in enumerate(request.rgb) if p == position]
            result[position] = edited[channels].mean(axis=0) * 2.0 - 1.0
        self.windows.append({"window": request.window.index, "tiles": len(tiles), "runs": len(jobs),
                             "prompts": prompts, "seconds": round(time.perf_counter() - started, 2)})
        progress(1, 1, f"{len(jobs)} tile run(s)")
        return result.astype(np.float32)

    def _fit(self, h: int, w: int) -> tuple[int, int]:
        """The size a tile of h x w runs at: grown to the native size if smaller, sides rounded
        to a multiple the network accepts."""
        scale = self.native / max(h, w) if max(h, w) < self.native else 1.0
        m = self.multiple
        return max(m, int(round(h * scale / m)) * m), max(m, int(round(w * scale / m)) * m)

    def _run(self, tile: np.ndarray, prompt: str, seed: int, progress: StageReporter, done: int, total: int,
             label: str) -> np.ndarray:
        """One model run on a (3, h, w) tile in [0, 1]; returns the edit, same shape and range."""
        import torch

        h, w = tile.shape[1:]
        size = self._fit(h, w)
        x = tile if size == (h, w) else np.clip(resize(tile, size, "lanczos"), 0.0, 1.0)
        cfg = self.config.instruct
        generator = torch.Generator(device=self.device).manual_seed(seed)
        kwargs = {"prompt": prompt, "image": torch.from_numpy(np.ascontiguousarray(x))[None],
                  "num_inference_steps": cfg.steps, "guidance_scale": cfg.guidance, "generator": generator,
                  "output_type": "np"}
        if "image_guidance_scale" in self.accepts:
            kwargs["image_guidance_scale"] = cfg.image_guidance
        if "callback_on_step_end" in self.accepts:
            def on_step(pipe, step, timestep, tensors):
                progress(done + step + 1, total, f"{label}, step {step + 1}/{cfg.steps}")
                return tensors

            kwargs["callback_on_step_end"] = on_step
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        out = np.asarray(images[0], dtype=np.float32).transpose(2, 0, 1)
        if out.shape[1:] != (h, w):
            out = resize(out, (h, w), "area")
        return np.clip(out, 0.0, 1.0)

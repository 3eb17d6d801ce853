"""Loading CLIP models (open_clip) with RemoteCLIP weights by default.

``--clip NAME`` takes a known name (``remoteclip-vit-b-32``, ``remoteclip-rn50``,
``remoteclip-vit-l-14``), an open_clip architecture with one of its pretrained tags
(``ViT-B-32:openai``), ``ARCH:/path/to/weights.pt``, or a model built in ``landcover.py``
(``rsge-landcover``, ``rsge-judge``: meaning known by construction, no weights). Weights are
looked for, in order, at an explicit path, in the folder ``RS_GEO_EDIT_WEIGHTS`` (passed down
as ``weights_dir``), and in the Hugging Face hub cache (repo ``chendelong/RemoteCLIP``;
downloaded unless HF_HUB_OFFLINE is set). When none can be had, :class:`WeightsNotFound` says
which file to put where.

Models are loaded once per process, in eval mode, frozen, on the editing device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import IncompatibleOptions, WeightsNotFound
from ..files import sha256_file

HUB_REPO = "chendelong/RemoteCLIP"
KNOWN = {
    "remoteclip-vit-b-32": ("ViT-B-32", "RemoteCLIP-ViT-B-32.pt"),
    "remoteclip-rn50": ("RN50", "RemoteCLIP-RN50.pt"),
    "remoteclip-vit-l-14": ("ViT-L-14", "RemoteCLIP-ViT-L-14.pt"),
}
DEFAULT = "remoteclip-vit-b-32"
CONSTRUCTED = ("rsge-landcover", "rsge-judge")   # guidance/landcover.py
# eval's judge when none is named: a model other than the one that guided the edit. The
# constructed models judge each other; a RemoteCLIP-guided edit is judged by OpenAI's CLIP,
# trained on other data.
PAIRED_JUDGES = {"rsge-landcover": "rsge-judge", "rsge-judge": "rsge-landcover"}
INDEPENDENT_JUDGE = "ViT-L-14:openai"


@dataclass(frozen=True)
class ClipSpec:
    """What to load: an open_clip architecture and where its weights come from."""

    name: str                       # as the user wrote it
    arch: str                       # open_clip model name
    filename: Optional[str] = None  # RemoteCLIP file name, looked up in the weights folder / hub
    path: Optional[Path] = None     # explicit weights file
    tag: Optional[str] = None       # open_clip pretrained tag (e.g. "openai")
    random: bool = False            # randomly initialised (tests, benchmarks)
    constructed: bool = False       # built in code, no weights (guidance/landcover.py)


def parse_spec(name: str, option: str = "clip") -> ClipSpec:
    """The model ``name`` names; a name it cannot read is refused under ``option``, the setting
    that gave it (``clip`` for the guide, ``judge`` for eval's judge)."""
    key = name.strip()
    if key.lower() in CONSTRUCTED:
        return ClipSpec(name, key.lower(), constructed=True)
    if key.lower() in KNOWN:
        arch, filename = KNOWN[key.lower()]
        return ClipSpec(name, arch, filename=filename)
    arch, _, rest = key.partition(":")
    if not rest:
        names = ", ".join((*KNOWN, *CONSTRUCTED))
        raise IncompatibleOptions(f"`{option}` {name!r}: use one of {names}, ARCH:TAG (e.g. ViT-B-32:openai) "
                                  "or ARCH:/path/to/weights.pt")
    if rest == "random":
        return ClipSpec(name, arch, random=True)
    if "/" in rest or rest.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return ClipSpec(name, arch, path=Path(rest).expanduser())
    return ClipSpec(name, arch, tag=rest)


def resolve_weights(spec: ClipSpec, weights_dir: Optional[Path] = None, offline: bool = False) -> Optional[str]:
    """A local file (or open_clip tag) for ``spec``; raises WeightsNotFound with the fix."""
    if spec.random or spec.constructed:
        return None
    if spec.path is not None:
        if spec.path.is_file():
            return str(spec.path)
        raise WeightsNotFound(f"CLIP weights {str(spec.path)!r} do not exist: check the path given to `clip`")
    if spec.tag is not None:
        return spec.tag
    if weights_dir is not None and (Path(weights_dir) / spec.filename).is_file():
        return str(Path(weights_dir) / spec.filename)
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(HUB_REPO, spec.filename, local_files_only=offline)
    except Exception:
        where = f"{weights_dir}/" if weights_dir else "$RS_GEO_EDIT_WEIGHTS/"
        raise WeightsNotFound(
            f"CLIP weights {spec.filename} not found: put the file at {where}{spec.filename} "
            f"(from https://huggingface.co/{HUB_REPO}), or fetch it where the network allows with "
            f"'rs-geo-edit weights fetch {spec.name}'; modes regenerate and copy need no weights, nor does text "
            "mode with `clip` rsge-landcover (a built-in demonstration encoder)") from None


class ClipModel:
    """A frozen open_clip model with its tokenizer, input size and normalisation."""

    def __init__(self, model, tokenizer, image_size: int, mean, std, spec: ClipSpec, source: Optional[str]):
        import torch

        self.model, self.tokenizer, self.image_size = model, tokenizer, image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.spec, self.source = spec, source

    @property
    def device(self):
        return next(self.model.parameters()).device

    def encode_text(self, texts: list[str]):
        import torch

        with torch.no_grad():
            tokens = self.tokenizer(texts).to(self.device)
            feats = self.model.encode_text(tokens).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def encode_image(self, images):
        """(N, 3, S, S) in [0, 1] at the model's input size -> unit embeddings (differentiable)."""
        x = (images - self.mean.to(images.device)) / self.std.to(images.device)
        feats = self.model.encode_image(x).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def describe(self) -> dict:
        return {"name": self.spec.name, "arch": self.spec.arch, "weights": self.source,
                "image_size": self.image_size, "constructed": self.spec.constructed}


_LOADED: dict[tuple, ClipModel] = {}


def load_clip(name: str, device="cpu", weights_dir: Optional[Path] = None, offline: bool = False,
              option: str = "clip") -> ClipModel:
    """Load (once per process) the CLIP model ``name`` (given as ``option``) on ``device``."""
    spec = parse_spec(name, option)
    key = (spec, str(device), str(weights_dir))
    if key not in _LOADED:
        _LOADED[key] = (_constructed(spec, device) if spec.constructed
                        else _open_clip(spec, device, weights_dir, offline))
    return _LOADED[key]


def _constructed(spec: ClipSpec, device) -> ClipModel:
    from .landcover import LandcoverCLIP, LandcoverTokenizer

    model = LandcoverCLIP(judge=spec.arch == "rsge-judge").to(device)
    # the towers read RGB in [0, 1] as it is: no normalisation
    return ClipModel(model, LandcoverTokenizer(spec.arch), model.image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), spec,
                     None)


def _open_clip(spec: ClipSpec, device, weights_dir: Optional[Path], offline: bool) -> ClipModel:
    import open_clip

    name = spec.name
    source = resolve_weights(spec, weights_dir, offline)
    if spec.arch not in open_clip.list_models():
        raise IncompatibleOptions(f"`clip` {name!r}: {spec.arch!r} is not an open_clip architecture")
    try:
        model, _, _ = open_clip.create_model_and_transforms(spec.arch, pretrained=source, device=device)
    except RuntimeError as exc:
        if spec.tag is not None:
            raise WeightsNotFound(f"open_clip weights {spec.arch}:{spec.tag} cannot be loaded here ({exc}): "
                                  "download them where the network allows, or use a local file") from None
        raise WeightsNotFound(f"CLIP weights {source!r} do not fit {spec.arch}: {str(exc).splitlines()[0]}") from None
    if spec.random:
        import warnings

        warnings.warn(f"CLIP {spec.arch} has random weights: text guidance is meaningless (tests and benchmarks only)",
                      UserWarning, stacklevel=2)
    model.eval().requires_grad_(False)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    clip = ClipModel(model, open_clip.get_tokenizer(spec.arch), size, mean, std, spec, source)
    if source and Path(str(source)).is_file():
        record_checksum(Path(source))
    return clip


def default_judge(guides: list[Optional[str]]) -> str:
    """The CLIP that judges edits guided by ``guides`` (None: an edit no CLIP guided) when none
    is named: never one of them. Raises IncompatibleOptions when no single choice fits."""
    named = {g.strip().lower() for g in guides if g}
    if not named:
        return DEFAULT
    first = sorted(named)[0]
    judge = PAIRED_JUDGES.get(first) or (INDEPENDENT_JUDGE if INDEPENDENT_JUDGE.lower() not in named else DEFAULT)
    if judge.lower() in named:
        raise IncompatibleOptions(f"the edits were guided by {', '.join(sorted(named))}: name a judge that guided none "
                                  "of them with `judge`")
    return judge


def record_checksum(path: Path) -> str:
    """sha256 of a weights file, recorded beside it after its first successful load
    (``<file>.sha256``), so ``rs-geo-edit weights verify`` can detect a changed file."""
    marker = path.with_name(path.name + ".sha256")
    if marker.is_file():
        return marker.read_text().split()[0]
    digest = sha256_file(path)
    try:
        marker.write_text(f"{digest}  {path.name}\n")
    except OSError:
        pass  # a read-only weights folder: verification is then unavailable, loading is not
    return digest


def register_config(name: str, config: dict, folder: Path) -> None:
    """Register an open_clip architecture from a config dict (tiny test models, custom models)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)

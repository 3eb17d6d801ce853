"""Editing engines: one :class:`~rs_geo_edit.pipeline.contract.Editor` per engine, above the
model layer. An engine turns the pipeline's windows (``EditRequest``) into edited windows; the
mode-to-method mapping (regenerate, copy, text) lives in its module.

A new engine: a module here with a class taking the ``EditConfig``, registered in
:data:`ENGINE_CLASSES` under a name listed in ``config.ENGINES`` (the ``engine`` option's choices).
"""

from __future__ import annotations

from importlib import import_module

from ..config import ENGINES, EditConfig
from ..errors import IncompatibleOptions

# engine name -> (module in this package, class); modules load (with torch) only when chosen
ENGINE_CLASSES = {"sinddm": ("sinddm", "SinDDMEditor"), "instruct": ("instruct", "InstructEditor"),
                  "patch": ("patch", "PatchEditor")}


def make_editor(config: EditConfig):
    """The editor of ``config.engine``, built for ``config``."""
    if config.engine not in ENGINE_CLASSES:
        raise IncompatibleOptions(f"`engine` {config.engine!r} is not one of {', '.join(ENGINES)}")
    module, name = ENGINE_CLASSES[config.engine]
    return getattr(import_module(f".{module}", __name__), name)(config)


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA device must exist."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise IncompatibleOptions(f"`device` {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IncompatibleOptions(f"`device` {name}: no CUDA device is available here; use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise IncompatibleOptions(f"`device` {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device

"""Editing engines: one :class:`~rs_geo_edit.pipeline.contract.Editor` per engine, above the
model layer. An engine turns the pipeline's windows (``EditRequest``) into edited windows; the
mode-to-method mapping (regenerate, copy, text) lives in its module.

A new engine: a module here with a class taking the ``EditConfig``, registered in
:data:`ENGINE_CLASSES` under a name listed in ``config.ENGINES`` (the ``engine`` option's choices).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import numpy as np

from ..config import ENGINES, EditConfig
from ..errors import IncompatibleOptions

# engine name -> (module in this package, class); modules load (with torch) only when chosen
ENGINE_CLASSES = {"sinddm": ("sinddm", "SinDDMEditor"), "instruct": ("instruct", "InstructEditor")}


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


@dataclass
class EditedBox:
    """An edit that changed only a box of the window: ``pixels`` (bands, rows, cols) are the box
    at ``rows`` and ``cols`` of the window (working resolution), and the rest of the window is the
    request's image unchanged. A large ROI's editor returns this instead of a copy of the whole
    window, which at native resolution is hundreds of megabytes."""

    pixels: np.ndarray
    rows: slice
    cols: slice

    def on(self, image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """The edited window's ``rows`` and ``cols`` (float32): that part of ``image``, the
        request's image, with the edited pixels that fall in it pasted."""
        out = np.array(image[:, rows, cols], dtype=np.float32)
        top, bottom = max(self.rows.start, rows.start), min(self.rows.stop, rows.stop)
        left, right = max(self.cols.start, cols.start), min(self.cols.stop, cols.stop)
        if top < bottom and left < right:
            out[:, top - rows.start:bottom - rows.start, left - cols.start:right - cols.start] = \
                self.pixels[:, top - self.rows.start:bottom - self.rows.start, left - self.cols.start:right - self.cols.start]
        return out

    def whole(self, image: np.ndarray) -> np.ndarray:
        """The edited window: a copy of ``image`` with the box pasted."""
        return self.on(image, slice(0, image.shape[1]), slice(0, image.shape[2]))

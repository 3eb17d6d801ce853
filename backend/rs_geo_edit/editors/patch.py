"""The ``patch`` engine: a content-aware fill for georeferenced scenes that needs no training.

Each window is remade inside its ROIs from the window's own real patches, coarse to fine
(``patch/fill.py``): ``regenerate`` starts the coarsest scale from the original noised by the
``novelty`` option, so large structure keeps running through the ROI while every patch is one
that exists outside it; ``copy`` pastes the donor at the coarsest scale (under copy mode's ramp)
and lets the donor's own patches join the surroundings'. Text needs a model that reads prompts.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import EditConfig
from ..imaging import resize
from ..model.pyramid import build_pyramid, mask_pyramid
from ..progress import StageReporter
from .copy import copy_ramp
from .keep import band_px, keep_pyramid


class PatchEditor:
    """The ``patch`` engine (the ``pipeline.contract.Editor`` protocol)."""

    name = "patch"

    def __init__(self, config: EditConfig):
        self.config = config.validate()   # refuses text mode
        self.windows: list[dict] = []

    def copies_scene(self, request) -> bool:
        """Every pixel this engine draws is a copy of the scene's."""
        return True

    def describe(self) -> dict:
        from ..patch import ops

        return {"name": self.name, "mode": self.config.mode, "novelty": self.config.model.novelty,
                "patch": ops.PATCH, "windows": self.windows}

    def edit(self, request, progress: StageReporter) -> np.ndarray:
        import torch

        from ..patch.fill import fill

        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        started = time.perf_counter()
        pyramid = build_pyramid(request.image, request.valid)
        sizes = list(pyramid.spec.sizes)
        band = band_px(request, self.config.blend.band_px)
        inputs, final = fill_inputs(request, pyramid, band, self.config.model.copy_wiggle)

        def on_scale(scale: int, total: int) -> None:
            progress(scale + 1, total, f"patch fill, scale {scale + 1}/{total}")

        out = fill(inputs, novelty=self.config.model.novelty, seed=int(request.seed), on_scale=on_scale)
        out = np.where(final[None], request.image, out).astype(np.float32)
        self.windows.append({"window": request.window.index, "scales": [list(s) for s in sizes],
                             **pieces_stats(inputs), "fill_s": round(time.perf_counter() - started, 2)})
        return out


def pieces_stats(inputs) -> dict:
    """What a window's provenance records of the pieces its fill favoured."""
    return {"fine_share": round(float(inputs.fine_share), 4), "large_pieces": bool(inputs.pieces.coherence),
            "quilt_scale": inputs.quilt_scale}


def fill_inputs(request, pyramid, band: float, copy_wiggle: float) -> tuple["FillInputs", np.ndarray]:
    """The fill's inputs for a window's request and pyramid (``band`` px of blend band) and the
    last step's keep mask (True beyond the band). A request that carries a copy source (copy
    mode) brings its donor under copy mode's ramp, wandering by ``copy_wiggle``. The pieces the
    fill favours follow the window's texture outside the ROI (``patch.fill.pieces_for``)."""
    from ..patch.fill import FillInputs, pieces_for

    sizes = list(pyramid.spec.sizes)
    keep, final = keep_pyramid(request.roi, band, sizes)
    exclude = mask_pyramid(request.roi | ~request.valid, sizes)
    pieces, share = pieces_for(pyramid.images[-1], exclude[-1])
    inputs = FillInputs(pyramid, exclude, keep, pieces=pieces, fine_share=share)
    if request.copy_source is not None:
        target = request.copy_mask & request.roi
        ramp = copy_ramp(target, band, 2 * band, copy_wiggle, int(request.seed))
        inputs.donors = [resize(request.copy_source, size, "lanczos") for size in sizes]
        inputs.donor_weights = [np.clip(resize(ramp, size, "area"), 0.0, 1.0) for size in sizes]
    return inputs, final

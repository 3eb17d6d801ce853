"""``rs-geo-edit eval``: how well an edit did, per ROI.

- Judge score: 100 x cosine between a ROI's crop (RGB bands, bounding box) and its prompt under a
  *judge*, a CLIP other than the one that guided the edit (:func:`choose_judge`), for the edited
  output, the source, and the unguided edit of the same seed and window; the gain is the edit's
  score minus the unguided edit's: what guidance added, measured by a model it did not optimise.
- Outside-ROI fidelity: the fraction of pixels outside the ROIs grown by the blend band that are
  identical to the source (1.0 expected).
- Seam-gradient ratio and boundary step around each ROI (see ``eval/seams.py``).
- Texture realism: luminance and colour detail ratios and the seam ratio (``eval/metrics.py``).

The unguided edit of a SinDDM text edit is made here from the provenance JSON beside the output
(:func:`unguided_reference`): the same parameters and seed in regenerate mode (copy mode where
content was pasted), so the two differ by the guidance stage alone; the trained model comes
from the cache when it is still there. Several outputs of one source (say one per engine) are
scored on the same ROIs; each report names the engine that made it and the CLIP that guided it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import IncompatibleOptions
from .eval.metrics import realism
from .eval.seams import boundary_step, outside_fidelity, seam_gradient_ratio


def clip_score(clip, rgb01: np.ndarray, prompt: str) -> float:
    """100 x cosine between an image (3, h, w) in [0, 1] and a prompt."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb01, dtype=np.float32))[None].to(clip.device)
    x = F.interpolate(x, size=(clip.image_size, clip.image_size), mode="bilinear", align_corners=False,
                      antialias=True)
    with torch.no_grad():
        image = clip.encode_image(x)
    text = clip.encode_text([prompt])
    return float(100.0 * (image @ text.T).item())


def _record(output: str | Path) -> Optional[dict]:
    """The provenance JSON beside ``output``, or None without a readable one."""
    from .pipeline.provenance import read_record

    record = read_record(output)
    return record if isinstance(record, dict) else None


def _same_model(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two CLIP names name the same model (case and surrounding spaces aside)."""
    return bool(a) and bool(b) and a.strip().lower() == b.strip().lower()


def engine_of(output: str | Path) -> Optional[str]:
    """The engine named by the provenance JSON beside ``output``, or None without one."""
    try:
        return _record(output)["editor"]["name"]
    except (TypeError, KeyError):
        return None


def guide_of(output: str | Path) -> Optional[str]:
    """The CLIP that guided ``output`` (its provenance's ``editor.clip.name``), or None: an edit
    no CLIP guided, or one without provenance."""
    try:
        return _record(output)["editor"]["clip"]["name"]
    except (TypeError, KeyError):
        return None


def choose_judge(outputs: list, judge: Optional[str]) -> str:
    """The judge's name. Without ``judge``, a model that guided none of the outputs
    (:func:`~.guidance.clip.default_judge`); a named judge that guided one of them is used as
    asked, with a warning: its score is that edit's guidance objective."""
    from .guidance.clip import default_judge

    guides = [guide_of(output) for output in outputs]
    if judge is None:
        for output in outputs:
            if _record(output) is None:
                warnings.warn(f"{Path(output).name} has no provenance JSON beside it: the model that guided it is "
                              "unknown, so the default judge may be that model; name one with `judge`", UserWarning,
                              stacklevel=2)
        return default_judge(guides)
    for output, guide in zip(outputs, guides):
        if _same_model(guide, judge):
            warnings.warn(f"{judge} guided {Path(output).name} and now judges it: its score is the guidance "
                          "objective, not an independent judgement", UserWarning, stacklevel=2)
    return judge


def unguided_reference(output: str | Path, source: str | Path, aoi: str | Path, folder: Path,
                       progress=None) -> Optional[Path]:
    """The unguided edit of ``output`` (a SinDDM text edit, read from its provenance), made in
    ``folder``: the same parameters and seed without the guidance stage. None for any other
    edit (no provenance, another mode or engine)."""
    from .config import config_from_dict
    from .files import sha256_file
    from .pipeline import edit_scene, plan_scene

    record = _record(output)
    parameters = (record or {}).get("parameters") or {}
    if parameters.get("mode") != "text" or parameters.get("engine") != "sinddm":
        return None
    if record["inputs"]["scene"]["sha256"] != sha256_file(source):
        raise IncompatibleOptions(f"{Path(output).name} was not edited from {str(source)!r} (its provenance names "
                                  "another scene): give the edit's own scene as `source`")
    config = config_from_dict({**parameters, "output": {**parameters["output"], "overwrite": True,
                                                        "provenance": False, "cog": False}})
    plan = plan_scene(source, aoi, config)
    config.mode = "copy" if plan.copy_sources or plan.copy_raster else "regenerate"
    target = folder / f"{Path(output).stem}.unguided.tif"
    edit_scene(source, aoi, target, config, progress=progress)
    return target


def evaluate(output: str | Path, source: str | Path, aoi: str | Path, config, judge=None,
             band_px: Optional[int] = None, unguided: Optional[str | Path] = None) -> dict:
    """Metrics of ``output`` against ``source`` over the ROIs of ``aoi`` (in ``config``'s terms);
    with a ``judge`` (a loaded CLIP) the judge scores, and with ``unguided`` (the unguided edit
    of the same seed) its score and the gain."""
    from affine import Affine

    from .geo.raster import open_scene
    from .pipeline import plan_scene

    band_px = config.blend.band_px if band_px is None else band_px
    plan = plan_scene(source, aoi, config)
    transform = Affine(*plan.transform[:6])
    rows = []
    reference_scene = open_scene(unguided) if unguided is not None else contextlib.nullcontext()
    with open_scene(source) as src, open_scene(output) as out, reference_scene as reference:
        for ds in (out, reference):
            if ds is not None and (ds.width, ds.height, ds.count) != (src.width, src.height, src.count):
                from .errors import SceneError

                raise SceneError(f"{ds.name!r} is not an edit of {str(source)!r}: sizes or band counts differ")
        for ew in plan.windows:
            rows.extend(_window_rows(src, out, reference, ew, transform, plan.rgb, band_px, judge))
    return {"output": str(output), "engine": engine_of(output), "guide": guide_of(output),
            "provenance": _record(output) is not None, "source": str(source),
            "aoi": str(aoi), "band_px": band_px, "rois": rows, "unguided": str(unguided) if unguided else None,
            "judge": judge.describe() if judge is not None else None,
            "judge_is_guide": judge is not None and _same_model(judge.spec.name, guide_of(output))}


def _window_rows(src, out, reference, ew, transform, rgb, band_px: int, judge) -> list[dict]:
    """One row of metrics per ROI of the planned window ``ew``."""
    from .geo.raster import Normaliser, read_window, validity_mask
    from .geo.windows import roi_labels
    from .imaging import distance_to

    before, after = read_window(src, ew.window), read_window(out, ew.window)
    valid = validity_mask(src, ew.window, before)
    labels = roi_labels(ew, transform)
    norm = Normaliser.fit(before, valid)
    b_n, a_n = norm.forward(before, np.float64), norm.forward(after, np.float64)
    u_n = norm.forward(read_window(reference, ew.window), np.float64) if reference is not None else None
    grown = distance_to(labels > 0, band_px) <= band_px
    fidelity = outside_fidelity(after, before, grown | ~valid)
    rows = []
    for k, roi in enumerate(ew.rois, start=1):
        mask = (labels == k) & valid
        row = {"feature": roi.feature, "window": ew.index, "prompt": roi.prompt, "roi_pixels": int(mask.sum()),
               "outside_fidelity": fidelity, "seam_gradient_ratio": seam_gradient_ratio(a_n, labels == k, valid),
               "boundary_step": boundary_step(a_n, labels == k, valid)}
        figures = realism(a_n, b_n, labels == k, valid, rgb)
        row.update(luminance_detail=figures["luminance"], colour_detail=figures["colour"], seam_ratio=figures["seam"])
        if judge is not None and roi.prompt and mask.any():
            row.update(_judge_scores(judge, roi.prompt, mask, rgb, a_n, b_n, u_n))
        rows.append(row)
    return rows


def _judge_scores(judge, prompt: str, mask: np.ndarray, rgb, edited, source, unguided) -> dict:
    """The judge's scores of the ROI's bounding box (images normalised to [-1, 1])."""
    rr, cc = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (list(rgb), slice(rr[0], rr[-1] + 1), slice(cc[0], cc[-1] + 1))
    scores = {"clip_score_edit": clip_score(judge, (edited[box] + 1) / 2, prompt),
              "clip_score_source": clip_score(judge, (source[box] + 1) / 2, prompt)}
    if unguided is not None:
        scores["clip_score_unguided"] = clip_score(judge, (unguided[box] + 1) / 2, prompt)
        scores["clip_gain"] = scores["clip_score_edit"] - scores["clip_score_unguided"]
    return scores


def evaluate_outputs(outputs: list, source, aoi, config, judge_name: Optional[str], *,
                     unguided: Optional[str | Path] = None, device="cpu", weights_dir=None,
                     scratch: Optional[Path] = None) -> list[dict]:
    """:func:`evaluate` of each output, judged by ``judge_name`` (None: :func:`choose_judge`;
    ``"none"``: no judge), each against its unguided reference: ``unguided`` when given (one
    output), else the one :func:`unguided_reference` makes in ``scratch``. Each report gains
    ``unguided_s``, the seconds its reference took to make (None when none was made)."""
    from .guidance.clip import load_clip

    if unguided is not None and len(outputs) != 1:
        raise IncompatibleOptions("`unguided` is the reference of one output: evaluate the outputs one at a time")
    skip = judge_name is not None and judge_name.strip().lower() == "none"
    judge = None if skip else load_clip(choose_judge(outputs, judge_name), device, weights_dir, option="judge")
    reports = []
    for output in outputs:
        reference, seconds = unguided, None
        if judge is not None and reference is None and scratch is not None:
            started = time.perf_counter()
            reference = unguided_reference(output, source, aoi, scratch)
            seconds = round(time.perf_counter() - started, 1) if reference is not None else None
        reports.append({**evaluate(output, source, aoi, config, judge, unguided=reference), "unguided_s": seconds})
    return reports

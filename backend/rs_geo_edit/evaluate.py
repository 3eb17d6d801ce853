"""``rs-geo-edit eval``: how well an edit did, per ROI.

- CLIP score: 100 x cosine between a ROI's crop (RGB bands, bounding box) and its prompt, for the
  edited output and, for comparison, the source.
- Outside-ROI fidelity: the fraction of pixels outside the ROIs grown by the blend band that are
  identical to the source (1.0 expected).
- Seam-gradient ratio and boundary step around each ROI (see ``eval/seams.py``).
- Texture realism: luminance and colour detail ratios and the seam ratio (``eval/metrics.py``).

Several outputs of one source (say one per engine) are scored on the same ROIs; each report
names the engine that made it, read from the provenance JSON beside the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

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


def engine_of(output: str | Path) -> Optional[str]:
    """The engine named by the provenance JSON beside ``output``, or None without one."""
    import json

    record = Path(output).with_suffix(".json")
    try:
        return json.loads(record.read_text())["editor"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate(output: str | Path, source: str | Path, aoi: str | Path, config, clip=None,
             band_px: Optional[int] = None) -> dict:
    """Metrics of ``output`` against ``source`` over the ROIs of ``aoi`` (in ``config``'s terms)."""
    from affine import Affine

    from .geo.raster import Normaliser, open_scene, read_window, validity_mask
    from .geo.windows import roi_labels
    from .imaging import distance_to
    from .pipeline import plan_scene

    band_px = config.blend.band_px if band_px is None else band_px
    plan = plan_scene(source, aoi, config)
    transform = Affine(*plan.transform[:6])
    rows = []
    with open_scene(source) as src, open_scene(output) as out:
        if (out.width, out.height, out.count) != (src.width, src.height, src.count):
            from .errors import SceneError

            raise SceneError(f"{str(output)!r} is not an edit of {str(source)!r}: sizes or band counts differ")
        for ew in plan.windows:
            before = read_window(src, ew.window)
            after = read_window(out, ew.window)
            valid = validity_mask(src, ew.window, before)
            labels = roi_labels(ew, transform)
            norm = Normaliser.fit(before, valid)
            b_n, a_n = norm.forward(before, np.float64), norm.forward(after, np.float64)
            grown = distance_to(labels > 0, band_px) <= band_px
            fidelity = outside_fidelity(after, before, grown | ~valid)
            for k, roi in enumerate(ew.rois, start=1):
                mask = (labels == k) & valid
                row = {"feature": roi.feature, "window": ew.index, "prompt": roi.prompt,
                       "roi_pixels": int(mask.sum()), "outside_fidelity": fidelity,
                       "seam_gradient_ratio": seam_gradient_ratio(a_n, labels == k, valid),
                       "boundary_step": boundary_step(a_n, labels == k, valid)}
                figures = realism(a_n, b_n, labels == k, valid, plan.rgb)
                row.update(luminance_detail=figures["luminance"], colour_detail=figures["colour"],
                           seam_ratio=figures["seam"])
                if clip is not None and roi.prompt and mask.any():
                    rr = np.flatnonzero(mask.any(axis=1))
                    cc = np.flatnonzero(mask.any(axis=0))
                    box = (plan.rgb, slice(rr[0], rr[-1] + 1), slice(cc[0], cc[-1] + 1))
                    row["clip_score_edit"] = clip_score(clip, (a_n[box] + 1) / 2, roi.prompt)
                    row["clip_score_source"] = clip_score(clip, (b_n[box] + 1) / 2, roi.prompt)
                rows.append(row)
    return {"output": str(output), "engine": engine_of(output), "source": str(source), "aoi": str(aoi),
            "band_px": band_px, "rois": rows,
            "clip": clip.describe() if clip is not None else None}

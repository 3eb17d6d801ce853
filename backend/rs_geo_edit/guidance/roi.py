"""ROI-masked CLIP guidance, as a hook on SinDDM's predicted clean image.

At a guided step the predicted clean image x0 of the current scale is scored by CLIP against
each ROI's text embedding, ``L = -cos(f_I(views(x0_roi)), f_T(text))``; the gradient flows
through CLIP only (x0 is a leaf, the denoiser is not in the graph). The update is applied inside
the ROI mask M alone:

    x0 += strength * (||x0 * M|| / ||g * M||) * g * M,  clamped to [-1, 1]

with momentum inside M: ``x0 <- (1 - momentum) * previous + momentum * x0``. M is the ROI mask
resized to each scale, fixed when guidance starts; outside M the sampler keeps the re-noised
original, so transitions stay smooth. Guidance runs at every scale but the coarsest and stops
before the end of the finest (``stop_frac`` of its steps). CLIP sees the RGB bands; other bands
follow the SinDDM model. Views: the ROI's bounding box resized to CLIP's input, plus augmented
sub-crops; on a large ROI (twice CLIP's input across or more) the sub-crops are CLIP-sized local
views at the scale's own resolution, centred on ROI pixels, so the finest scale's detail is
judged at native resolution rather than through one downsample of the whole ROI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GuidanceStats:
    steps: int = 0
    max_outside_update: float = 0.0
    mask_sums: dict = field(default_factory=dict)      # scale -> list of mask sums at guided steps
    scores: list = field(default_factory=list)          # mean cosine per guided step


class ClipGuidance:
    """A sampler stage ``(x0, scale, t) -> x0`` (``model.sampler.Stage``): CLIP guidance of
    each ROI towards its prompt, on the whole image of every scale."""

    reads_finest = True

    def __init__(self, clip, roi_masks: list[list[np.ndarray]], embeddings: list, rgb: list[int], *,
                 t_start_finest: int, strength: float = 0.3, views: int = 4, every: int = 1,
                 momentum: float = 0.2, stop_frac: float = 0.3, seed: int = 0):
        """``roi_masks[k][s]`` is ROI k's boolean mask at scale s; ``embeddings[k]`` its (1, D)
        text embedding."""
        import torch

        self.clip, self.rgb, self.embeddings = clip, list(rgb), embeddings
        self.strength, self.views, self.every, self.momentum = strength, max(1, views), max(1, every), momentum
        self.n_scales = len(roi_masks[0])
        self.stop_t = int(math.floor(stop_frac * t_start_finest))
        self.roi_masks = [[torch.from_numpy(m.astype(np.float32))[None, None] for m in per] for per in roi_masks]
        self.union = [torch.clamp(sum(per[s] for per in self.roi_masks), 0, 1) for s in range(self.n_scales)]
        self.generator = torch.Generator().manual_seed(int(seed))
        self.previous = None
        self.previous_scale = None
        self.counter = 0
        self.stats = GuidanceStats()

    def active(self, scale: int, t: int) -> bool:
        if scale == 0:
            return False
        return not (scale == self.n_scales - 1 and t < self.stop_t)

    def _local_origin(self, mask, size: int) -> tuple[int, int]:
        """Top-left corner of a ``size`` px local view of a large ROI's bounding box, drawn so that
        its centre lies in the ROI (a few draws; the last one stands if none does)."""
        import torch

        h, w = mask.shape
        g = self.generator
        for _ in range(8):
            r = int(torch.randint(0, h - size + 1, (1,), generator=g))
            c = int(torch.randint(0, w - size + 1, (1,), generator=g))
            if bool(mask[r + size // 2, c + size // 2]):
                break
        return r, c

    def _views(self, crop, mask):
        """``self.views`` differentiable views of a (1, 3, h, w) crop in [0, 1] at CLIP's size:
        the whole crop resized, then augmented sub-views. On an ROI at least twice CLIP's input
        size across, the sub-views are CLIP-sized local views at native resolution spread over
        the ROI (``mask``, (h, w)), so that its fine detail is scored, not only a downsample."""
        import torch
        import torch.nn.functional as F

        size = self.clip.image_size
        out = [F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)]
        h, w = crop.shape[-2:]
        local = min(h, w) >= 2 * size
        g = self.generator
        for _ in range(self.views - 1):
            if local:
                r, c = self._local_origin(mask, size)
                ch = cw = size
            else:
                frac = 0.6 + 0.4 * float(torch.rand(1, generator=g))
                ch, cw = max(2, int(h * frac)), max(2, int(w * frac))
                r = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                c = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            view = crop[..., r:r + ch, c:c + cw]
            if float(torch.rand(1, generator=g)) < 0.5:
                view = view.flip(-1)
            angle = (float(torch.rand(1, generator=g)) - 0.5) * math.radians(10)
            shear = (float(torch.rand(1, generator=g)) - 0.5) * 0.1
            theta = torch.tensor([[math.cos(angle), -math.sin(angle) + shear, 0.0],
                                  [math.sin(angle), math.cos(angle), 0.0]], dtype=view.dtype, device=view.device)
            grid = F.affine_grid(theta[None], (1, 3, size, size), align_corners=False)
            view = F.grid_sample(view, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            brightness = (float(torch.rand(1, generator=g)) - 0.5) * 0.1
            contrast = 1.0 + (float(torch.rand(1, generator=g)) - 0.5) * 0.1
            view = ((view - view.mean()) * contrast + view.mean() + brightness).clamp(0, 1)
            out.append(view)
        return torch.cat(out, 0)

    def score(self, x0, scale: int):
        """Mean cosine between each ROI's views and its text embedding at ``scale`` (differentiable
        in x0)."""
        import torch

        rgb = (x0[:, self.rgb] + 1) / 2
        scores = []
        for k, masks in enumerate(self.roi_masks):
            mask = masks[scale][0, 0]
            rows = torch.nonzero(mask.any(dim=1)).flatten()
            cols = torch.nonzero(mask.any(dim=0)).flatten()
            if rows.numel() == 0:
                continue
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            c0, c1 = int(cols[0]), int(cols[-1]) + 1
            feats = self.clip.encode_image(self._views(rgb[..., r0:r1, c0:c1], mask[r0:r1, c0:c1]))
            scores.append((feats @ self.embeddings[k].to(feats.device).T).mean())
        return torch.stack(scores).mean() if scores else None

    def __call__(self, x0, scale: int, t: int):
        import torch
        import torch.nn.functional as F

        if not self.active(scale, t):
            return x0
        mask = self.union[scale].to(x0.device)
        if self.previous is not None and self.previous_scale != scale:
            self.previous = F.interpolate(self.previous, size=x0.shape[-2:], mode="bilinear", align_corners=False)
        self.previous_scale = scale
        if self.previous is not None:
            x0 = x0 * (1 - mask) + ((1 - self.momentum) * self.previous + self.momentum * x0) * mask
        self.counter += 1
        if (self.counter - 1) % self.every == 0:
            with torch.enable_grad():
                leaf = x0.detach().clone().requires_grad_(True)
                score = self.score(leaf, scale)
                if score is not None:
                    grad, = torch.autograd.grad(score, leaf)
                    g = grad * mask
                    ratio = (x0 * mask).norm() / g.norm().clamp(min=1e-12)
                    update = self.strength * ratio * g
                    self.stats.max_outside_update = max(self.stats.max_outside_update,
                                                        float((update * (1 - mask)).abs().max()))
                    x0 = (x0.detach() + update).clamp(-1, 1)
                    self.stats.scores.append(score.item())
            self.stats.steps += 1
            self.stats.mask_sums.setdefault(scale, []).append(float(mask.sum()))
        self.previous = x0.detach()
        return x0

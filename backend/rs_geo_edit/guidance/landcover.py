"""Constructed CLIP-like encoders whose meaning is known by construction: text mode without weights.

Two models share one small vocabulary and one text tower but see pixels through different image
towers. Both have the open_clip interface (``encode_image``, ``encode_text``, a tokenizer) and load
through :func:`~.clip.load_clip` like a real CLIP (``--clip rsge-landcover``), so the whole text
path (prompt ensembling, ROI-masked guidance, ``eval``) runs on them; they are differentiable and
have no trained weights: every number is below.

Embedding axes: a constant axis, then one axis per land cover of :data:`CONCEPTS`.

**Text tower** (both models): a prompt is split into lower-case words (``snow-covered`` is
``snow`` and ``covered``); each word of :data:`CONCEPT_WORDS` adds 1 on its land cover's axis,
each word of :data:`NEUTRAL_WORDS` (articles, the ensembling templates' words, a few modifiers)
adds nothing. "snow-covered field" is snow + field, "dense forest" is forest, "open water" is
water. A word outside the vocabulary, or a prompt naming no land cover, is an error naming the
vocabulary: these models mean only what they were built to mean.

**Image tower of ``rsge-landcover``** (the guide): statistics of the whole view (128 px, RGB
in [0, 1]) as cues in [-1, 1]. A land cover's score is the mean of its cues; its evidence,
``4 sigmoid(4 (score - 0.5))``, runs from ~0.01 (every cue against) to ~3.5 (every cue for), so
that no cue can be pushed on its own without end:

    bright   mean of R, G and B (alike: a push on it changes no hue)
    grey     tanh((0.06 - mean chroma) / 0.03), chroma = max - min of R, G, B
    texture  log3(RMS of (luminance - its 3x3 mean) / 0.005);  smooth = tanh(-texture)
    green    tanh(mean(G - (R + B) / 2) / 0.02)        blue   tanh(mean(B - (R + G) / 2) / 0.03)
    linear   tanh((coherence of the view's structure tensor - 0.3) / 0.15): one dominant direction
    near(x, target, width) = 1 - 2 d / (d + width), d = |x - target|: 1 at the target, 0 at
             ``width`` from it, towards -1 far away (a cue that overshooting loses)

    snow    tanh((bright - 0.6) / 0.12), grey, smooth               bright, white, smooth
    water   tanh((0.3 - bright) / 0.1), blue, smooth                dark, blue, flat
    forest  tanh((0.35 - bright) / 0.1), green, near(texture, 0.8, 1)   dark, green, crown texture
    road    grey, linear, near(bright, 0.5, 0.3)                    grey, linear, mid-bright
    field   tanh((bright - 0.35) / 0.1), smooth                     open land: smooth, not dark

The texture is an RMS, not a mean magnitude, so its gradient is the high-pass itself (a
smoothing or sharpening flow) rather than a sign pattern.

**Image tower of ``rsge-judge``** (a judge built apart from the guide): the fraction of the
view's pixels that pass per-pixel tests, at half the resolution (64 px), in HSV value ``v`` and
saturation ``s`` with the 5 x 5 local spread of ``v`` (soft thresholds, sigmoids):

    snow   v > 0.72, s < 0.12, spread < 0.04      water  v < 0.3, spread < 0.012, B > R
    forest v < 0.42, spread > 0.015, G > R - 0.01 road   s < 0.12, 0.3 < v < 0.72
    field  spread < 0.035, v > 0.35 (open land, any colour)

It measures the same land covers from other pixel features (per-pixel counts at another
resolution instead of window means, HSV value and saturation instead of mean brightness and
chroma, a local spread instead of a high-pass), so raising the guide's objective does not by
itself raise the judge's score:
``eval`` judges ``rsge-landcover`` edits with it.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IncompatibleOptions

CONCEPTS = ("snow", "water", "forest", "road", "field")
CONCEPT_WORDS: dict[str, tuple[str, ...]] = {
    "snow": ("snow", "snowy", "snowfield", "ice", "icy", "glacier", "frozen", "white"),
    "water": ("water", "lake", "lakes", "river", "rivers", "sea", "ocean", "pond", "reservoir", "flooded",
              "flood", "floods"),
    "forest": ("forest", "forests", "woodland", "wood", "woods", "tree", "trees", "coniferous", "conifer",
               "deciduous", "canopy"),
    "road": ("road", "roads", "highway", "street", "streets", "asphalt", "paved", "motorway"),
    "field": ("field", "fields", "meadow", "meadows", "grass", "grassland", "farmland", "crop", "crops",
              "cropland", "pasture", "arable"),
}
NEUTRAL_WORDS = ("a", "an", "the", "of", "with", "and", "in", "on", "by", "showing", "satellite", "aerial",
                 "image", "photograph", "photo", "remote", "sensing", "top", "down", "view", "seen", "from",
                 "above", "covered", "dense", "open", "thick", "large", "small", "some", "area", "land", "scene",
                 "region", "full")
CONTEXT = 32          # tokens per prompt (longer prompts are refused)
IMAGE_SIZE = 128      # input side, pixels
JUDGE_BIAS = 0.25     # the judge's constant axis: a view with no land cover scores 0 on every prompt
EVIDENCE_SCALE = 4.0  # the guide's largest evidence of a land cover; its constant axis is 1


def _word_ids() -> dict[str, int]:
    words = [w for group in CONCEPT_WORDS.values() for w in group] + list(NEUTRAL_WORDS)
    return {word: i for i, word in enumerate(words, start=1)}     # 0 pads


WORD_IDS = _word_ids()
CONCEPT_OF = {word: concept for concept, words in CONCEPT_WORDS.items() for word in words}


def vocabulary_text() -> str:
    """The vocabulary as an error message shows it."""
    groups = "; ".join(f"{concept}: {', '.join(words)}" for concept, words in CONCEPT_WORDS.items())
    return f"{groups}; and the neutral words {', '.join(NEUTRAL_WORDS)}"


class LandcoverTokenizer:
    """Prompts -> (N, CONTEXT) word ids (0 pads), the open_clip tokenizer's call shape. Raises
    IncompatibleOptions on a word outside the vocabulary or a prompt naming no land cover."""

    def __init__(self, model_name: str):
        self.model_name = model_name

    def __call__(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = [self._ids(text) for text in texts]
        out = torch.zeros((len(rows), CONTEXT), dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def _ids(self, text: str) -> list[int]:
        words = [w for w in re.split(r"[^a-z]+", text.lower()) if w]
        unknown = [w for w in words if w not in WORD_IDS]
        if unknown:
            raise IncompatibleOptions(
                f"{self.model_name} knows no word {unknown[0]!r} (prompt {text!r}): it is a constructed model that "
                f"reads only its vocabulary ({vocabulary_text()}); reword the prompt, or use a real CLIP with `clip`")
        if not any(w in CONCEPT_OF for w in words):
            raise IncompatibleOptions(f"prompt {text!r} names no land cover {self.model_name} knows: use words such as "
                                      "snow, water, forest, road or field")
        if len(words) > CONTEXT:
            raise IncompatibleOptions(f"prompt {text!r} has more than {CONTEXT} words: shorten it")
        return [WORD_IDS[w] for w in words]


def word_table():
    """(V, 1 + len(CONCEPTS)): each word's direction; neutral words and padding are zero."""
    table = torch.zeros((len(WORD_IDS) + 1, 1 + len(CONCEPTS)))
    for word, concept in CONCEPT_OF.items():
        table[WORD_IDS[word], 1 + CONCEPTS.index(concept)] = 1.0
    return table


def _box_mean(x, size: int):
    """Mean over a ``size`` x ``size`` neighbourhood (reflected edges) of (N, 1, H, W)."""
    pad = size // 2
    return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), size, stride=1)


def landcover_scores(rgb):
    """The guide's land-cover scores (N, len(CONCEPTS)) of (N, 3, S, S) RGB in [0, 1]: for each
    land cover the mean of its cues, each in [-1, 1]."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    lum = (0.299 * r + 0.587 * g + 0.114 * b)[:, None]
    bright = rgb.mean(dim=(1, 2, 3))    # R, G and B alike: a push on it changes no hue
    grey = torch.tanh((0.06 - (rgb.amax(1) - rgb.amin(1)).mean(dim=(1, 2))) / 0.03)
    texture = torch.log((((lum - _box_mean(lum, 3)) ** 2).mean(dim=(1, 2, 3)) + 1e-8).sqrt() / 0.005) / math.log(3)
    smooth = torch.tanh(-texture)
    green = torch.tanh((g - (r + b) / 2).mean(dim=(1, 2)) / 0.02)
    blue = torch.tanh((b - (r + g) / 2).mean(dim=(1, 2)) / 0.03)
    linear = torch.tanh((coherence(lum) - 0.3) / 0.15)
    cues = ([torch.tanh((bright - 0.6) / 0.12), grey, smooth],                 # snow
            [torch.tanh((0.3 - bright) / 0.1), blue, smooth],                  # water
            [torch.tanh((0.35 - bright) / 0.1), green, near(texture, 0.8, 1.0)],  # forest
            [grey, linear, near(bright, 0.5, 0.3)],                           # road
            [torch.tanh((bright - 0.35) / 0.1), smooth])                      # field
    return torch.stack([torch.stack(c, dim=1).mean(dim=1) for c in cues], dim=1)


def near(value, target: float, width: float):
    """1 at ``target``, 0 at ``width`` from it, towards -1 far away: a cue that a push beyond the
    land cover's usual value loses rather than wins, and whose pull fades slowly (as 1 / d^2)."""
    distance = ((value - target) ** 2 + (0.05 * width) ** 2).sqrt()
    return 1 - 2 * distance / (distance + width)


def landcover_evidence(scores):
    """Evidence of each land cover from its score in [-1, 1]: ~0.01 (all cues against) to ~3.5
    (all cues for); bounded, so no single cue can be pushed without end."""
    return EVIDENCE_SCALE * torch.sigmoid(4 * (scores - 0.5))


def coherence(lum):
    """How much one direction dominates the gradients of (N, 1, H, W): 0 (none) to 1 (lines)."""
    gx = lum[..., :, 1:] - lum[..., :, :-1]
    gy = lum[..., 1:, :] - lum[..., :-1, :]
    gx, gy = gx[..., :-1, :], gy[..., :, :-1]
    jxx, jyy, jxy = (gx * gx).mean(dim=(1, 2, 3)), (gy * gy).mean(dim=(1, 2, 3)), (gx * gy).mean(dim=(1, 2, 3))
    return ((jxx - jyy) ** 2 + 4 * jxy ** 2 + 1e-12).sqrt() / (jxx + jyy + 1e-6)


def judge_fractions(rgb):
    """The judge's fractions (N, len(CONCEPTS)) of pixels of each land cover in (N, 3, S, S)."""
    half = F.avg_pool2d(rgb, 2)
    r, g, b = half[:, 0:1], half[:, 1:2], half[:, 2:3]
    v, low = half.amax(1, keepdim=True), half.amin(1, keepdim=True)
    s = (v - low) / (v + 0.05)
    spread = (_box_mean(v * v, 5) - _box_mean(v, 5) ** 2).clamp(min=0).add(1e-6).sqrt()

    def above(x, edge, soft):
        return torch.sigmoid((x - edge) / soft)

    def below(x, edge, soft):
        return torch.sigmoid((edge - x) / soft)

    masks = [above(v, 0.72, 0.04) * below(s, 0.12, 0.03) * below(spread, 0.04, 0.01),
             below(v, 0.3, 0.04) * below(spread, 0.012, 0.004) * above(b - r, 0.0, 0.02),
             below(v, 0.42, 0.05) * above(spread, 0.015, 0.005) * above(g - r, -0.01, 0.02),
             below(s, 0.12, 0.03) * above(v, 0.3, 0.05) * below(v, 0.72, 0.04),
             below(spread, 0.035, 0.01) * above(v, 0.35, 0.05)]
    return torch.cat(masks, dim=1).mean(dim=(2, 3))


class LandcoverCLIP(nn.Module):
    """A constructed model, frozen: its text tower is a fixed word table, its image tower the
    guide's evidence (``rsge-landcover``) or, with ``judge``, the judge's fractions (``rsge-judge``)."""

    def __init__(self, judge: bool = False):
        super().__init__()
        self.judge, self.image_size = judge, IMAGE_SIZE
        self.words = nn.Parameter(word_table(), requires_grad=False)
        self.eval()

    def encode_text(self, tokens):
        """(N, CONTEXT) word ids -> (N, 1 + len(CONCEPTS)), the sum of the words' directions."""
        return self.words[tokens].sum(dim=1)

    def encode_image(self, images):
        """(N, 3, S, S) RGB in [0, 1] -> (N, 1 + len(CONCEPTS)): the constant axis, then each
        land cover's evidence (guide) or pixel fraction (judge). Differentiable."""
        if self.judge:
            evidence, bias = judge_fractions(images), JUDGE_BIAS
        else:
            evidence, bias = landcover_evidence(landcover_scores(images)), 1.0
        return torch.cat([torch.full_like(evidence[:, :1], bias), evidence], dim=1)


"""Prompt ensembling: one analyst prompt becomes several remote-sensing phrasings whose CLIP
text embeddings are averaged and re-normalised (a steadier target than any single phrasing).

Phrasings come from built-in templates, an optional synonyms file (JSON: ``{"forest": ["woodland",
"tree cover"]}``), and optionally an LLM behind any OpenAI-compatible chat endpoint, whose answers
are cached on disk so a prompt is paraphrased once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from ..errors import IncompatibleOptions

TEMPLATES = (
    "{}",
    "a satellite image of {}",
    "an aerial photograph showing {}",
    "a remote sensing image of {}",
    "a top-down view of {}",
)


def template_phrasings(prompt: str, synonyms: Optional[dict[str, list[str]]] = None) -> list[str]:
    """The prompt in every built-in template, plus each synonym in the first three."""
    prompt = prompt.strip()
    phrasings = [t.format(prompt) for t in TEMPLATES]
    for alt in (synonyms or {}).get(prompt.lower(), []):
        phrasings.extend(t.format(alt) for t in TEMPLATES[:3])
    return list(dict.fromkeys(phrasings))


def load_synonyms(path: Optional[str | Path]) -> dict[str, list[str]]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise IncompatibleOptions(f"`synonyms` {str(path)!r} is not a readable JSON object ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise IncompatibleOptions(f"`synonyms` {str(path)!r} must map prompts to lists of alternatives")
    return {str(k).lower(): [str(x) for x in v] for k, v in data.items()}


def llm_phrasings(prompt: str, endpoint: str, cache_dir: Path, *, model: str = "default", count: int = 5,
                  api_key: Optional[str] = None, timeout: float = 30.0) -> list[str]:
    """``count`` paraphrases of ``prompt`` from an OpenAI-compatible chat endpoint (cached)."""
    import httpx

    key = hashlib.sha256(json.dumps([prompt, endpoint, model, count]).encode()).hexdigest()[:24]
    cache = cache_dir / "paraphrases" / f"{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    url = endpoint.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    body = {"model": model, "temperature": 0.0, "messages": [
        {"role": "system", "content": "You rewrite short descriptions of remote-sensing scenes. Answer with a JSON "
                                      "list of strings only."},
        {"role": "user", "content": f"Give {count} different phrasings of: {prompt!r}, each as it would caption a "
                                    "satellite or aerial image."}]}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=timeout)
        response.raise_for_status()
        text = response.json()["choices"][0]["message"]["content"]
        start, end = text.find("["), text.rfind("]")
        phrasings = [str(p).strip() for p in json.loads(text[start:end + 1]) if str(p).strip()]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise IncompatibleOptions(f"`llm_endpoint` {endpoint}: no usable paraphrases ({type(exc).__name__}: {exc}); "
                                  "check the endpoint or drop the option") from None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(phrasings))
    return phrasings


def ensemble_embedding(clip, phrasings: list[str]):
    """Mean of the unit text embeddings of ``phrasings``, re-normalised: (1, D)."""
    feats = clip.encode_text(phrasings)
    mean = feats.mean(dim=0, keepdim=True)
    return mean / mean.norm(dim=-1, keepdim=True)

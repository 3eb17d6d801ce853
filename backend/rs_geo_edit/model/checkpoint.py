"""Trained-model cache and resumable training checkpoints.

Train once, edit many: a model trained on a window is stored under
``<cache>/<key>/model.safetensors`` (EMA weights) + ``config.json``, where ``key`` hashes the
window's pixels, validity mask, band count and every training parameter. A second edit of the
same window (another seed, mode or prompt) loads it and skips training. While training, a
checkpoint (weights, EMA, optimiser and RNG state) is written every few hundred steps and when
training is interrupted, so a rerun resumes where it stopped. The cache has a size cap; the
least recently used entries are evicted first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

import numpy as np

MODEL_FORMAT = "rs-geo-edit-sinddm-1"
TRAIN_KEYS = ("width", "timesteps", "steps", "batch", "crop", "lr", "lr_decay_every", "lr_gamma", "ema",
              "scale_factor", "detail_factor", "scale_power")


def cache_key(image: np.ndarray, valid: np.ndarray, params: dict) -> str:
    """Hex key of a window's pixels (float32, [-1, 1]), its validity mask and training params."""
    digest = hashlib.sha256()
    digest.update(MODEL_FORMAT.encode())
    digest.update(json.dumps({k: params[k] for k in TRAIN_KEYS}, sort_keys=True).encode())
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    digest.update(np.packbits(np.ascontiguousarray(valid, dtype=bool)).tobytes())
    return digest.hexdigest()[:32]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class ModelCache:
    """A folder of trained models keyed by :func:`cache_key`, capped at ``max_bytes``."""

    def __init__(self, root: str | os.PathLike, max_bytes: int):
        self.root = Path(root).expanduser()
        self.max_bytes = int(max_bytes)

    def entry(self, key: str) -> Path:
        return self.root / key

    def _touch(self, key: str) -> None:
        marker = self.entry(key) / "last_used"
        marker.touch()
        now = time.time()
        os.utime(marker, (now, now))

    def load(self, key: str, device="cpu") -> Optional[tuple[dict, dict]]:
        """(state_dict, config) of a finished model, or None."""
        from safetensors.torch import load_file

        folder = self.entry(key)
        weights, meta = folder / "model.safetensors", folder / "config.json"
        if not (weights.is_file() and meta.is_file()):
            return None
        try:
            config = json.loads(meta.read_text())
            state = load_file(str(weights), device=str(device))
        except (OSError, ValueError):
            return None  # a damaged entry is retrained, never trusted
        if config.get("format") != MODEL_FORMAT:
            return None
        self._touch(key)
        return state, config

    def save(self, key: str, state_dict: dict, config: dict) -> Path:
        from safetensors.torch import save_file

        folder = self.entry(key)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        _atomic_write(folder / "model.safetensors", lambda p: save_file(tensors, str(p)))
        _atomic_write(folder / "config.json",
                      lambda p: p.write_text(json.dumps({"format": MODEL_FORMAT, **config}, indent=2)))
        with contextlib.suppress(FileNotFoundError):
            (folder / "checkpoint.pt").unlink()
        self._touch(key)
        self.evict(keep=key)
        return folder

    def load_checkpoint(self, key: str) -> Optional[dict]:
        import torch

        path = self.entry(key) / "checkpoint.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: start over rather than fail the edit
            return None

    def save_checkpoint(self, key: str, payload: dict) -> None:
        import torch

        folder = self.entry(key)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / "checkpoint.pt", lambda p: torch.save(payload, p))
        self._touch(key)

    def entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last used, bytes) of every entry."""
        out = []
        if not self.root.is_dir():
            return out
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            marker = folder / "last_used"
            used = marker.stat().st_mtime if marker.exists() else folder.stat().st_mtime
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            out.append((folder, used, size))
        return out

    def evict(self, keep: Optional[str] = None) -> list[str]:
        """Remove least recently used entries until the cache fits its cap."""
        entries = sorted(self.entries(), key=lambda e: e[1])
        total = sum(e[2] for e in entries)
        removed = []
        for folder, _, size in entries:
            if total <= self.max_bytes:
                break
            if folder.name == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder.name)
        return removed

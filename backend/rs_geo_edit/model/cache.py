"""The content-keyed model cache: trained models and resumable training checkpoints.

Train once, edit many: a model trained on a window is stored as ``model.safetensors`` (EMA
weights) + ``config.json`` under a key that hashes the window's pixels, validity mask, band count
and every training parameter. A second edit of the same window (another seed, mode or prompt)
loads it and skips training. While training, a checkpoint (weights, EMA, optimiser and RNG
state) is written every few hundred steps and when training is interrupted, so a rerun resumes.

The cache never touches what it did not write. It keeps everything in a folder of its own,
``<cache dir>/rs-geo-edit-cache/``, marked by a ``CACHEDIR.TAG`` file (backup tools skip such
folders), with ``index.json`` listing each entry's files and sizes. The size cap evicts the least
recently used entries, removing only files the index lists. Writers in several processes (a
batch, the service's workers, two terminals) share one cache: files are written under a
temporary name and renamed, and the index changes under an exclusive file lock. A damaged entry
is discarded with a :class:`rs_geo_edit.errors.CacheWarning` and the model is trained again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import CacheWarning

MODEL_FORMAT = "rs-geo-edit-sinddm-1"
TRAIN_KEYS = ("width", "timesteps", "steps", "batch", "crop", "lr", "lr_decay_every", "lr_gamma", "ema",
              "scale_factor", "detail_factor", "scale_power")
FOLDER = "rs-geo-edit-cache"
MARKER = "CACHEDIR.TAG"
# The signature line is what marks a cache folder for backup tools (bford.info/cachedir).
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# This folder is the rs-geo-edit model cache; rs-geo-edit removes only the entries its\n"
               "# index.json lists. Delete the whole folder to empty the cache.\n")
INDEX_FORMAT = 1
# A temporary file older than this belongs to a writer that was killed, not to one still writing.
STALE_TMP_S = 3600.0


def cache_key(image: np.ndarray, valid: np.ndarray, params: dict) -> str:
    """Hex key of a window's pixels (float32, [-1, 1]), its validity mask and training params."""
    return scene_key([image], [valid], params)


def scene_key(images: list[np.ndarray], valids: list[np.ndarray], params: dict) -> str:
    """Hex key of a model trained on several windows at once (in this order); for one window it
    is that window's :func:`cache_key`, since such a model is the window's own."""
    digest = hashlib.sha256()
    digest.update(MODEL_FORMAT.encode())
    # a net trained on the coarsest scales only has its own key; every other key is as it was
    keys = TRAIN_KEYS + (("net_scales",) if params.get("net_scales") else ())
    digest.update(json.dumps({k: params[k] for k in keys}, sort_keys=True).encode())
    if len(images) > 1:
        digest.update(f"windows:{len(images)}".encode())
    for image, valid in zip(images, valids, strict=True):
        digest.update(str(image.shape).encode())
        # the array's own buffer, not a bytes copy of it (a large window's worth of memory)
        digest.update(memoryview(np.ascontiguousarray(image, dtype=np.float32)).cast("B"))
        digest.update(np.packbits(np.ascontiguousarray(valid, dtype=bool)).tobytes())
    return digest.hexdigest()[:32]


def _atomic_write(path: Path, write) -> int:
    """Write through ``write(tmp)`` then rename onto ``path``; returns the size in bytes."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        return size
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class ModelCache:
    """Trained models keyed by :func:`cache_key` in ``<root>/rs-geo-edit-cache/``, capped at
    ``max_bytes`` (entries beyond it are evicted least recently used first)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int):
        self.root = Path(root).expanduser()
        self.folder = self.root / FOLDER
        self.max_bytes = int(max_bytes)

    # ------------------------------------------------------------------------- folder and index

    def _ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / MARKER
        if not marker.is_file():
            _atomic_write(marker, lambda p: p.write_text(MARKER_TEXT))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The index under an exclusive lock (held by one process at a time); written back on exit."""
        self._ensure()
        with open(self.folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = self._read_index()
                before = json.dumps(index, sort_keys=True)
                yield index
                if json.dumps(index, sort_keys=True) != before:
                    _atomic_write(self.folder / "index.json",
                                  lambda p: p.write_text(json.dumps(index, indent=1, sort_keys=True)))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self) -> dict:
        path = self.folder / "index.json"
        try:
            index = json.loads(path.read_text())
        except FileNotFoundError:
            return {"format": INDEX_FORMAT, "entries": {}}
        except (OSError, ValueError):
            warnings.warn(f"model cache index {str(path)!r} is damaged: starting a new index (entries it listed "
                          "are kept on disk but no longer evicted; delete the folder to reclaim them)", CacheWarning)
            return {"format": INDEX_FORMAT, "entries": {}}
        if not isinstance(index.get("entries"), dict):
            return {"format": INDEX_FORMAT, "entries": {}}
        return index

    def entry(self, key: str) -> Path:
        if not (len(key) <= 64 and key.isalnum()):
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / key

    def _record(self, key: str, name: str, size: int) -> None:
        """List ``name`` (a file of entry ``key``) in the index, then apply the size cap."""
        with self._locked() as index:
            entry = index["entries"].setdefault(key, {"files": {}, "created": time.time()})
            entry["files"][name] = size
            entry["last_used"] = time.time()
            self._evict(index, keep=key)

    def _forget(self, key: str, names: Optional[list[str]] = None) -> None:
        """Remove files of entry ``key`` that the index lists (all of them when ``names`` is None)."""
        with self._locked() as index:
            self._remove(index, key, names)

    def _remove(self, index: dict, key: str, names: Optional[list[str]] = None) -> None:
        entry = index["entries"].get(key)
        if entry is None:
            return
        folder = self.entry(key)
        for name in list(entry["files"]) if names is None else names:
            if name in entry["files"]:
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
                del entry["files"][name]
        if not entry["files"]:
            del index["entries"][key]
            for leftover in folder.glob(".*.tmp") if folder.is_dir() else ():
                if time.time() - leftover.stat().st_mtime > STALE_TMP_S:
                    leftover.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: anything else put there stays

    # --------------------------------------------------------------------------------- models

    def load(self, key: str, device="cpu") -> Optional[tuple[dict, dict]]:
        """(state_dict, config) of a finished model, or None (absent, or damaged and discarded)."""
        from safetensors.torch import load_file

        folder = self.entry(key)
        weights, meta = folder / "model.safetensors", folder / "config.json"
        if not (weights.is_file() and meta.is_file()):
            return None
        try:
            config = json.loads(meta.read_text())
            state = load_file(str(weights), device=str(device))
            if config.get("format") != MODEL_FORMAT:
                raise ValueError(f"format {config.get('format')!r}, expected {MODEL_FORMAT!r}")
        except Exception as exc:  # safetensors raises its own error types for a torn file
            warnings.warn(f"model cache entry {key} is damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                          "discarded, the model is trained again", CacheWarning)
            self._forget(key, ["model.safetensors", "config.json"])
            return None
        with self._locked() as index:
            if key in index["entries"]:
                index["entries"][key]["last_used"] = time.time()
        return state, config

    def save(self, key: str, state_dict: dict, config: dict) -> Path:
        from safetensors.torch import save_file

        self._ensure()
        folder = self.entry(key)
        folder.mkdir(exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        weights = _atomic_write(folder / "model.safetensors", lambda p: save_file(tensors, str(p)))
        meta = _atomic_write(folder / "config.json",
                             lambda p: p.write_text(json.dumps({"format": MODEL_FORMAT, **config}, indent=2)))
        with self._locked() as index:
            entry = index["entries"].setdefault(key, {"files": {}, "created": time.time()})
            entry["files"].update({"model.safetensors": weights, "config.json": meta})
            entry["last_used"] = time.time()
            self._remove(index, key, ["checkpoint.pt"])
            self._evict(index, keep=key)
        return folder

    def load_checkpoint(self, key: str) -> Optional[dict]:
        import torch

        path = self.entry(key) / "checkpoint.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over rather than fail the edit
            warnings.warn(f"training checkpoint of cache entry {key} is damaged ({type(exc).__name__}): discarded, "
                          "training starts over", CacheWarning)
            self._forget(key, ["checkpoint.pt"])
            return None

    def save_checkpoint(self, key: str, payload: dict) -> None:
        import torch

        self._ensure()
        folder = self.entry(key)
        folder.mkdir(exist_ok=True)
        size = _atomic_write(folder / "checkpoint.pt", lambda p: torch.save(payload, p))
        self._record(key, "checkpoint.pt", size)

    # ------------------------------------------------------------------------------- eviction

    def entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last used, bytes) of every entry the index lists."""
        if not (self.folder / "index.json").is_file():
            return []
        with self._locked() as index:
            return [(self.folder / key, e.get("last_used", 0.0), sum(e["files"].values()))
                    for key, e in index["entries"].items()]

    def evict(self, keep: Optional[str] = None) -> list[str]:
        """Remove least recently used entries until the cache fits its cap; returns their keys."""
        if not (self.folder / "index.json").is_file():
            return []
        with self._locked() as index:
            return self._evict(index, keep)

    def _evict(self, index: dict, keep: Optional[str] = None) -> list[str]:
        entries = sorted(index["entries"].items(), key=lambda kv: kv[1].get("last_used", 0.0))
        total = sum(sum(e["files"].values()) for _, e in entries)
        removed = []
        for key, entry in entries:
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            total -= sum(entry["files"].values())
            self._remove(index, key)
            removed.append(key)
        return removed

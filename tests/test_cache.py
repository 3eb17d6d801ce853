"""The model cache: a folder of its own, eviction of its own entries only, shared by processes,
damaged entries retrained (real safetensors files, real processes, real file locks)."""

import json
import multiprocessing
import os
import time
import warnings

import numpy as np
import pytest
import torch

from rs_geo_edit.errors import CacheWarning
from rs_geo_edit.model.cache import FOLDER, MARKER, ModelCache


def state(seed: int, numel: int = 4096) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(numel, generator=g), "b": torch.randn(16, generator=g)}


def test_eviction_keeps_everything_the_cache_did_not_write(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "field-trip.txt").write_text("plots 4-9 flooded in May")
    big = tmp_path / "mosaic.tif"
    big.write_bytes(os.urandom(3 << 20))
    cache = ModelCache(tmp_path, max_bytes=10**9)
    stray = tmp_path / FOLDER / "mine"
    for key in ("k1", "k2", "k3"):
        cache.save(key, state(len(key) + ord(key[-1])), {"k": key})
        time.sleep(0.02)
    stray.mkdir()
    (stray / "keep.txt").write_text("the user's")
    (tmp_path / FOLDER / "k1" / "user-note.txt").write_text("put here by hand")
    one = sum(e[2] for e in cache.entries()) // 3
    cache.max_bytes = one + one // 2  # room for one entry: two must go
    assert sorted(cache.evict()) == ["k1", "k2"]
    assert (notes / "field-trip.txt").read_text() == "plots 4-9 flooded in May"
    assert big.stat().st_size == 3 << 20
    assert (stray / "keep.txt").read_text() == "the user's"
    # the cache removed its own files of k1 but not the note someone left in that folder
    assert sorted(p.name for p in (tmp_path / FOLDER / "k1").iterdir()) == ["user-note.txt"]
    assert not (tmp_path / FOLDER / "k2").exists()
    assert cache.load("k3") is not None
    assert (tmp_path / FOLDER / MARKER).read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    # a cap far below what the user's files weigh evicts nothing of theirs either
    cache.max_bytes = 0
    cache.evict()
    assert big.exists() and (notes / "field-trip.txt").exists() and (stray / "keep.txt").exists()


def test_damaged_entry_is_discarded_with_a_warning(tmp_path):
    cache = ModelCache(tmp_path, max_bytes=10**9)
    folder = cache.save("abc", state(1), {"k": "abc"})
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(CacheWarning, match="abc is damaged"):
        assert cache.load("abc") is None
    assert not weights.exists() and cache.entries() == []
    cache.save_checkpoint("abc", {"step": 3, "w": torch.ones(4)})
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(CacheWarning, match="checkpoint of cache entry abc is damaged"):
        assert cache.load_checkpoint("abc") is None
    index = json.loads((tmp_path / FOLDER / "index.json").read_text())
    assert index["entries"] == {}


def test_damaged_model_is_trained_again(tmp_path):
    from rs_geo_edit.config import make_config
    from rs_geo_edit.editors.sinddm import SinDDMEditor
    from rs_geo_edit.progress import StageReporter

    config = make_config(model_overrides={"steps": 6, "width": 16, "crop": 24, "batch": 1}, cache_dir=tmp_path)
    editor = SinDDMEditor(config)
    image = np.random.default_rng(0).uniform(-1, 1, (3, 40, 40)).astype(np.float32)
    valid = np.ones((40, 40), bool)
    first = editor.trained_model(image, valid, StageReporter(None, "train", 0, 1))[3]
    assert first["trained"] is True
    assert editor.trained_model(image, valid, StageReporter(None, "train", 0, 1))[3]["trained"] is False
    weights = tmp_path / FOLDER / first["cache_key"] / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    with pytest.warns(CacheWarning):
        again = editor.trained_model(image, valid, StageReporter(None, "train", 0, 1))[3]
    assert again["trained"] is True and weights.stat().st_size > 64


def _hammer(root: str, worker: int, rounds: int) -> None:
    cache = ModelCache(root, max_bytes=6 * 4096 * 4 + 4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # a torn file seen by a reader fails the test
        for n in range(rounds):
            key = f"k{(worker + n) % 5}"
            if cache.load(key) is None:
                cache.save(key, state(n), {"by": worker})
            cache.save_checkpoint(f"c{worker}", {"step": n})


def test_concurrent_processes_share_one_cache(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    index = json.loads((tmp_path / FOLDER / "index.json").read_text())
    for key, entry in index["entries"].items():
        for name, size in entry["files"].items():
            assert (tmp_path / FOLDER / key / name).stat().st_size == size
    cache = ModelCache(tmp_path, max_bytes=10**9)
    loadable = [k for k in index["entries"] if k.startswith("k")]
    assert loadable and all(cache.load(k) is not None for k in loadable)
    assert sum(e[2] for e in cache.entries()) <= 6 * 4096 * 4 + 4000 + 2 * 4096 * 4 + 3000
    assert not list((tmp_path / FOLDER).rglob("*.tmp"))

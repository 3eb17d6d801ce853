"""File helpers every layer shares: content hashes and atomic writes (stdlib only).

Every file the tool writes goes through :func:`atomic_path`: it is written under a hidden
temporary name beside its destination and renamed into place only when complete, so a reader
sees the old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks (memory stays flat)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def temporary_path(beside: str | os.PathLike, tag: str = "partial") -> Iterator[Path]:
    """A hidden temporary path beside ``beside`` (same file system, so renames are atomic);
    removed on exit together with any GDAL side files."""
    beside = Path(beside)
    # The writer's pid in the name tells a killed run's leftovers from a live run's file.
    tmp = beside.with_name(f".{beside.stem}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:12]}{beside.suffix}")
    try:
        yield tmp
    finally:
        for leftover in (tmp, Path(str(tmp) + ".aux.xml"), Path(str(tmp) + ".ovr"), Path(str(tmp) + ".msk")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``dest``, renamed onto ``dest`` if the block succeeds and removed
    if it fails, so ``dest`` is either complete or untouched."""
    with temporary_path(dest) as tmp:
        yield tmp
        os.replace(tmp, dest)


def remove_stale_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (:func:`temporary_path`) beside ``dest`` whose writer process is
    gone: a run killed by SIGKILL or a power cut never ran its clean-up. Files of a run still
    writing are left alone. Returns what was removed."""
    dest = Path(dest)
    removed = []
    for tag in ("partial", "stage"):
        prefix = f".{dest.stem}.{tag}-"
        for leftover in dest.parent.glob(f"{_glob_escape(prefix)}*"):
            pid = leftover.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds that pid: not ours to judge
        return True
    return True


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)

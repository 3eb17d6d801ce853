"""Where an edit's output goes: beside its scene, named for what was asked, never over a file.
Qt-free."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional


def output_path(scene: Path, prompt: Optional[str], mode: str, seed: int) -> Path:
    """``<scene stem>_<prompt or mode>_<seed>.tif`` beside ``scene`` (spaces as ``_``, 40
    characters of the prompt at most); when that exists, a fresh name with the same start."""
    tag = (prompt or mode).replace(" ", "_")[:40]
    output = scene.with_name(f"{scene.stem}_{tag}_{seed}.tif")
    if output.exists():
        output = Path(tempfile.mkstemp(prefix=f"{scene.stem}_{tag}_", suffix=".tif", dir=scene.parent)[1])
        output.unlink()
    return output

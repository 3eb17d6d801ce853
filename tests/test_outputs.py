"""The user's files are sacred: every output is checked before any work and written under a
temporary name; a real CLI process killed with SIGKILL leaves nothing under a final name."""

import os
import signal
import subprocess
import sys
import time

from conftest import pixel_box, write_aoi, write_scene

CLI = [sys.executable, "-m", "rs_geo_edit.cli"]
TINY = ["--steps", "30", "--width", "16", "--crop", "32", "--batch", "2", "--threads", "1"]


def run(*args, tmp_path, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_CACHE": str(tmp_path / "cache")}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def test_sigkill_while_writing_leaves_no_partial_file_and_the_rerun_cleans_up(tmp_path):
    scene = write_scene(tmp_path / "big.tif", width=2048, height=2048, blocksize=256)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 1000, 1000, 1030, 1030)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "edited.tif"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RS_GEO_EDIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(CLI + ["edit", str(scene), "--aoi", str(aoi), "-o", str(out), *TINY], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = []
    while proc.poll() is None and not partial:
        partial = [p.name for p in out_dir.glob(".edited.partial-*")]
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert partial, "the run was killed while its GeoTIFF was being written"
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) == []
    # the next run to the same output removes what the killed one left and completes
    again = run("edit", scene, "--aoi", aoi, "-o", out, *TINY, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["edited.json", "edited.tif"]

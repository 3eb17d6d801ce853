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


def small_inputs(tmp_path):
    scene = write_scene(tmp_path / "scene.tif", width=96, height=96, blocksize=32)
    aoi = write_aoi(tmp_path / "aoi.geojson", [pixel_box(scene, 30, 30, 60, 60)])
    return scene, aoi


def refused_before_training(proc, tmp_path, needle):
    """Exit 2, one line naming the file, and no model cache: nothing was trained."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0] and "--overwrite" in lines[0], proc.stderr
    assert not (tmp_path / "cache").exists()


def test_existing_provenance_sidecar_is_refused_before_training(tmp_path):
    scene, aoi = small_inputs(tmp_path)
    sidecar = tmp_path / "out.json"
    sidecar.write_text('{"my": "notes"}')
    proc = run("edit", scene, "--aoi", aoi, "-o", tmp_path / "out.tif", *TINY, tmp_path=tmp_path)
    refused_before_training(proc, tmp_path, str(sidecar))
    assert sidecar.read_text() == '{"my": "notes"}' and not (tmp_path / "out.tif").exists()


def test_truncated_scene_is_refused_before_training(tmp_path):
    scene, aoi = small_inputs(tmp_path)
    os.truncate(scene, int(scene.stat().st_size * 0.6))
    proc = run("edit", scene, "--aoi", aoi, "-o", tmp_path / "out.tif", *TINY, tmp_path=tmp_path)
    assert proc.returncode == 2 and "truncated" in proc.stderr and not (tmp_path / "cache").exists(), proc.stderr


def test_plan_preview_and_demo_pictures_are_kept(tmp_path):
    scene, aoi = small_inputs(tmp_path)
    preview = tmp_path / "plan.png"
    preview.write_bytes(b"my picture")
    proc = run("plan", scene, "--aoi", aoi, "--preview", preview, tmp_path=tmp_path)
    assert proc.returncode == 2 and str(preview) in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    assert preview.read_bytes() == b"my picture"
    proc = run("plan", scene, "--aoi", aoi, "--preview", preview, "--overwrite", tmp_path=tmp_path)
    assert proc.returncode == 0 and preview.read_bytes().startswith(b"\x89PNG"), proc.stderr
    demo = tmp_path / "demo"
    demo.mkdir()
    picture = demo / "aerial_demo_before_after.png"
    picture.write_bytes(b"mine")
    proc = run("demo", "--out-dir", demo, "--threads", "1", tmp_path=tmp_path)
    refused_before_training(proc, tmp_path, str(picture))
    assert picture.read_bytes() == b"mine" and sorted(p.name for p in demo.iterdir()) == [picture.name]


def test_batch_refuses_foreign_summary_and_outputs_before_training(tmp_path):
    scene, aoi = small_inputs(tmp_path)
    out_dir = tmp_path / "batch"
    out_dir.mkdir()
    summary = out_dir / "summary.csv"
    summary.write_text("plot,yield\n4,9\n")
    args = ["batch", "--scenes", str(tmp_path / "*.tif"), "--aoi", aoi, "--out-dir", out_dir, *TINY]
    proc = run(*args, tmp_path=tmp_path)
    refused_before_training(proc, tmp_path, str(summary))
    assert summary.read_text() == "plot,yield\n4,9\n"
    summary.unlink()
    mine = out_dir / "scene_edited.tif"
    mine.write_text("an edit I made by hand")
    proc = run(*args, tmp_path=tmp_path)
    refused_before_training(proc, tmp_path, str(mine))
    assert mine.read_text() == "an edit I made by hand" and sorted(p.name for p in out_dir.iterdir()) == [mine.name]


def test_only_a_dead_writers_temporary_files_are_removed(tmp_path):
    from rs_geo_edit.files import remove_stale_temporaries

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f".out.partial-{gone.pid}-0123456789ab.tif"
    live = tmp_path / f".out.partial-{os.getpid()}-0123456789ab.tif"
    mine = tmp_path / ".out.notes.tif"
    for path in (dead, live, mine):
        path.write_text("x")
    assert remove_stale_temporaries(tmp_path / "out.tif") == [dead]
    assert live.exists() and mine.exists()

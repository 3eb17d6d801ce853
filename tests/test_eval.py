"""Seam metrics behave as defined; ``eval`` judges a text edit with a model other than its guide
and reports the gain over the unguided edit of the same seed."""

import json

import numpy as np
import pytest

from conftest import SAMPLE, TEXT_ARGS, run_cli, sample_aoi_with_prompt

from rs_geo_edit.eval import boundary_step, outside_fidelity, seam_gradient_ratio


def test_sgr_near_one_for_untouched_and_large_for_step():
    from conftest import texture

    img = texture(np.random.default_rng(3), 3, 160, 160)
    roi = np.zeros((160, 160), bool)
    roi[50:110, 50:110] = True
    assert 0.6 < seam_gradient_ratio(img, roi) < 1.6
    stepped = img + 0.5 * roi[None]
    assert seam_gradient_ratio(stepped, roi) > 3
    assert abs(boundary_step(stepped, roi) - 0.5) < 0.1


def test_outside_fidelity():
    a = np.zeros((2, 10, 10), np.uint16)
    b = a.copy()
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    b[0, 2, 2] = 7          # inside the mask: ignored
    assert outside_fidelity(b, a, mask) == 1.0
    b[1, 8, 8] = 7
    assert outside_fidelity(b, a, mask) == 1 - 1 / 50
    f = np.full((1, 4, 4), np.nan, np.float32)
    assert outside_fidelity(f, f.copy(), np.zeros((4, 4), bool)) == 1.0


def test_the_default_judge_is_never_the_guide():
    from rs_geo_edit.errors import IncompatibleOptions
    from rs_geo_edit.guidance.clip import DEFAULT, INDEPENDENT_JUDGE, default_judge

    assert default_judge(["rsge-landcover"]) == "rsge-judge" and default_judge(["RSGE-Judge"]) == "rsge-landcover"
    assert default_judge(["remoteclip-vit-b-32", None]) == INDEPENDENT_JUDGE
    assert default_judge([INDEPENDENT_JUDGE]) == DEFAULT and default_judge([None]) == DEFAULT
    with pytest.raises(IncompatibleOptions, match="name a judge that guided none of them"):
        default_judge(["rsge-landcover", "rsge-judge"])


def test_eval_judges_a_text_edit_with_another_model_against_the_same_seed_unguided(tmp_path, model_cache):
    """A forest edit guided by rsge-landcover is judged by rsge-judge, which scores it above the
    unguided edit of the same seed that eval makes from the provenance; that reference is the
    regenerate edit of the same seed (the same scores as one made by hand). Judging with the
    guide takes asking, and says what it measures."""
    aoi = sample_aoi_with_prompt(tmp_path / "forest.geojson", "dense forest")
    common = ("--aoi", aoi, *TEXT_ARGS, "--cache-dir", model_cache, "--seed", "3", "--quiet")
    # by hand, the unguided edit takes the text edit's own settings (fast's TEXT_PRESETS)
    for mode, name, extra in (("text", "forest.tif", ()),
                              ("regenerate", "plain.tif", ("--net-scales", "0", "--novelty", "0.6"))):
        proc = run_cli(SAMPLE, *common, "--mode", mode, "--clip", "rsge-landcover", "-o", tmp_path / name, *extra)
        assert proc.returncode == 0, proc.stderr
    scoring = ("--source", SAMPLE, "--aoi", aoi, "--max-side", "96")
    proc = run_cli("eval", tmp_path / "forest.tif", *scoring, "--json", tmp_path / "auto.json")
    assert proc.returncode == 0, proc.stderr
    assert "guided by rsge-landcover, judged by rsge-judge" in proc.stdout
    report = json.loads((tmp_path / "auto.json").read_text())
    (row,) = report["rois"]
    print(row)
    assert report["judge"]["name"] == "rsge-judge" and report["guide"] == "rsge-landcover"
    assert not report["judge_is_guide"] and report["unguided_s"] is not None
    assert row["clip_gain"] == row["clip_score_edit"] - row["clip_score_unguided"] > 5
    given = run_cli("eval", tmp_path / "forest.tif", *scoring, "--unguided", tmp_path / "plain.tif",
                    "--json", tmp_path / "given.json")
    assert given.returncode == 0, given.stderr
    (same,) = json.loads((tmp_path / "given.json").read_text())["rois"]
    assert same["clip_score_unguided"] == row["clip_score_unguided"] and same["clip_gain"] == row["clip_gain"]
    own = run_cli("eval", tmp_path / "forest.tif", *scoring, "--judge", "rsge-landcover",
                  "--json", tmp_path / "own.json")
    assert own.returncode == 0, own.stderr
    assert "rsge-landcover guided forest.tif and now judges it" in own.stderr
    assert json.loads((tmp_path / "own.json").read_text())["judge_is_guide"]


def test_eval_refuses_a_judge_it_cannot_read_naming_the_judge_option(tmp_path):
    """A judge name that is no model stops eval with one line naming --judge (not the guide's
    --clip) and the names it takes; no report is written."""
    aoi = sample_aoi_with_prompt(tmp_path / "forest.geojson", "dense forest")
    proc = run_cli("eval", SAMPLE, "--source", SAMPLE, "--aoi", aoi, "--judge", "no-such-model",
                   "--json", tmp_path / "report.json")
    assert proc.returncode != 0
    assert "--judge 'no-such-model'" in proc.stderr and "rsge-judge" in proc.stderr and "--clip" not in proc.stderr
    assert not (tmp_path / "report.json").exists()

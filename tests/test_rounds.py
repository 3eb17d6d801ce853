"""scripts/bench/rounds.py: reviewers' rounds made from the quality bench's blind pairs (written
here by the bench's own ``save_blind``) never show one piece of ground twice, hold exactly the
four images of each pair with the letters the key says, and the tally counts the replies."""

import json
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import quality  # noqa: E402
import rounds  # noqa: E402

# (case, window offset in the scene, ROI rows and cols in the window): a and b overlap in the scene, c is apart
CASES = (("a", (0, 0), (40, 80)), ("b", (0, 60), (40, 80)), ("c", (400, 400), (60, 90)))


def _blind_folder(folder, shift, seed):
    """A bench --blind folder of the three cases: their window, an 'edit' of its ROI by ``shift``."""
    rng = np.random.default_rng(seed)
    entries = []
    for case, offset, (lo, hi) in CASES:
        before = rng.integers(0, 200, (3, 160, 160)).astype(np.float64)
        roi = np.zeros((160, 160), bool)
        roi[lo:hi, lo:hi] = True
        after = before.copy()
        after[:, roi] += shift
        fig = {"before": before, "after": after, "roi": roi, "valid": np.ones_like(roi), "rgb": [0, 1, 2],
               "dtype": "uint8", "offset": list(offset)}
        entries.append({"case": case, "mode": "regenerate", "engine": "patch", "scene": "s",
                        **quality.save_blind(fig, folder, f"s-{case}", "patch", 11)})
    quality.write_key(folder, entries)
    return {e["case"]: e for e in entries}


@pytest.fixture()
def folders(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    return old, new, _blind_folder(old, 20, 1), _blind_folder(new, 40, 1)


def _edit_png(folder, entry, factor=1):
    return (folder / f"{entry['pair']}-{factor}x-{entry['edit']}.png").read_bytes()


def test_paired_rounds_keep_overlapping_ground_apart_and_the_tally_counts(folders, tmp_path, capsys):
    old, new, old_key, new_key = folders
    out = tmp_path / "ab"
    assert rounds.main(["paired", str(old), str(new), str(out), "--per-round", "3"]) == 0
    key = json.loads((out / "key.json").read_text())
    assert key["kind"] == "paired" and len(key["pairs"]) == 3
    by_round = {}
    for p in key["pairs"]:
        by_round.setdefault(p["round"], []).append(p)
        folder = out / p["round"] / p["pair"]
        assert sorted(f.name for f in folder.iterdir()) == ["1x-A.png", "1x-B.png", "2x-A.png", "2x-B.png"]
        other = "B" if p["new"] == "A" else "A"
        for factor in (1, 2):
            assert (folder / f"{factor}x-{p['new']}.png").read_bytes() == _edit_png(new, new_key[p["case"]], factor)
            assert (folder / f"{factor}x-{other}.png").read_bytes() == _edit_png(old, old_key[p["case"]], factor)
    assert all(not ({"a", "b"} <= {p["case"] for p in members}) for members in by_round.values())
    assert len(by_round) == 2          # a and b overlap: two rounds, c joins one of them
    assert "FOLDER" in (out / "instructions.txt").read_text()

    (out / "replies").mkdir()
    flip = {"A": "B", "B": "A"}
    for name, members in by_round.items():   # c's reviewer prefers the old version; every new one scores 4, old 2
        lines = [f"{p['pair']} | prefer {p['new'] if p['case'] != 'c' else flip[p['new']]} | 70 % | "
                 f"realism A {4 if p['new'] == 'A' else 2} | realism B {4 if p['new'] == 'B' else 2} | why"
                 for p in members]
        (out / "replies" / f"{name}.txt").write_text("\n".join(lines + ["an overall remark"]) + "\n")
    summary = rounds.tally(out)["summary"]
    assert summary == {"answered": 3, "pairs": 3, "unanswered": [], "new_preferred": 2, "old_preferred": 1,
                       "ties": 0, "realism_new": 4.0, "realism_old": 2.0}
    capsys.readouterr()
    assert rounds.main(["tally", str(out)]) == 0
    assert '"new_preferred": 2' in capsys.readouterr().out


def test_the_tally_reads_replies_as_reviewers_write_them_and_refuses_what_it_cannot_read(folders, tmp_path):
    old, new, _, _ = folders
    out = tmp_path / "ab"
    assert rounds.main(["paired", str(old), str(new), str(out), "--per-round", "1"]) == 0
    key = json.loads((out / "key.json").read_text())["pairs"]
    first, second = key[0], key[1]
    (out / "replies").mkdir()
    reply = out / "replies" / f"{first['round']}.txt"
    # markdown, a list bullet, other spacing and case, a colon, a decimal score: one answer, a tie
    reply.write_text("Here are my answers:\n- **Pair1** | Prefer: a | 50 % | realism a: 4.5 | Realism B 3 | close\n")
    summary = rounds.tally(out)["summary"]
    assert summary["answered"] == 1 and summary["ties"] == 1 and summary["new_preferred"] == 0
    assert summary["unanswered"] == sorted(f"{p['round']} {p['pair']}" for p in key[1:])
    assert summary["realism_new" if first["new"] == "A" else "realism_old"] == 4.5
    for bad, said in (("pair01 | prefer A | 70 % | realism A 4 |", "not in the form"),
                      ("pair01 | prefer A | 700 % | realism A 4 | realism B 3 | x", "50-100"),
                      ("pair01 | prefer A | 70 % | realism A 10 | realism B 3 | x", "realism 1-5"),
                      ("pair02 | prefer A | 70 % | realism A 4 | realism B 3 | x", "not a pair of round"),
                      ("pair01 | prefer A | 70 % | realism A 4 | realism B 3 | x\n"
                       "pair01 | prefer B | 60 % | realism A 3 | realism B 4 | changed my mind", "answered twice")):
        reply.write_text(bad + "\n")
        with pytest.raises(rounds.RoundsError, match=said):
            rounds.tally(out)
    reply.write_bytes(b"\xff\xfe pair01")
    with pytest.raises(rounds.RoundsError, match="UTF-8"):
        rounds.tally(out)
    assert second["round"] != first["round"]


def test_absolute_rounds_copy_the_bench_pairs_and_tally_found_and_missed(folders, tmp_path):
    old, _, old_key, _ = folders
    out = tmp_path / "look"
    assert rounds.main(["absolute", str(old), str(out), "--engine", "patch", "--mode", "regenerate"]) == 0
    key = json.loads((out / "key.json").read_text())
    assert {p["case"] for p in key["pairs"]} == {"a", "b", "c"}
    (out / "replies").mkdir()
    replies = {}
    for p in key["pairs"]:
        assert (out / p["round"] / p["pair"] / f"1x-{p['edit']}.png").read_bytes() == _edit_png(old, old_key[p["case"]])
        picked = p["edit"] if p["case"] != "a" else {"A": "B", "B": "A"}[p["edit"]]   # a is missed
        replies.setdefault(p["round"], []).append(f"{p['pair']} | edited {picked} | 80 % | realism 3 | why")
    for name, lines in replies.items():
        (out / "replies" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    summary = rounds.tally(out)["summary"]
    assert summary == {"answered": 3, "pairs": 3, "unanswered": [], "found": 2, "confidence": 80.0, "realism": 3.0,
                       "at_a_guess": 1}


def test_bad_input_is_one_line_and_writes_nothing(folders, tmp_path, capsys):
    old, new, _, _ = folders
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    assert rounds.main(["paired", str(old), str(new), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an empty folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["something"]

    stale = tmp_path / "stale"
    stale.mkdir()
    entries = json.loads((old / "key.json").read_text())
    (stale / "key.json").write_text(json.dumps([{k: v for k, v in e.items() if k != "scene_crop"} for e in entries]))
    assert rounds.main(["absolute", str(stale), str(tmp_path / "fresh")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no scene_crop" in err and not (tmp_path / "fresh").exists()

    assert rounds.main(["absolute", str(old), str(tmp_path / "none"), "--engine", "sinddm"]) == 2
    assert "no pair to show" in capsys.readouterr().err

    assert rounds.main(["paired", str(old), str(new), str(tmp_path / "p"), "--prefix", "../out"]) == 2
    assert "--prefix" in capsys.readouterr().err and not list(tmp_path.glob("out*"))

    moved = json.loads((new / "key.json").read_text())   # a version run on another crop of a case
    moved[0]["scene_crop"]["rows"] = [r + 8 for r in moved[0]["scene_crop"]["rows"]]
    (new / "key.json").write_text(json.dumps(moved))
    assert rounds.main(["paired", str(old), str(new), str(tmp_path / "moved")]) == 2
    assert "other ground" in capsys.readouterr().err and not (tmp_path / "moved").exists()

    as_file = tmp_path / "a-file"
    as_file.write_text("mine")
    assert rounds.main(["absolute", str(old), str(as_file)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and as_file.read_text() == "mine"

    for text, said in (("{not json", "not a readable bench key"), ('{"pair": "x"}', "not a bench key")):
        broken = tmp_path / f"broken{len(text)}"
        broken.mkdir()
        (broken / "key.json").write_text(text)
        assert rounds.main(["absolute", str(broken), str(tmp_path / "from-broken")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err and not (tmp_path / "from-broken").exists()
    assert rounds.main(["tally", str(old)]) == 2   # a bench folder is no rounds folder
    assert "not a rounds key" in capsys.readouterr().err

    next(old.glob("*-2x-B.png")).unlink()   # a folder the bench did not finish: nothing is written
    assert rounds.main(["paired", str(old), str(new), str(tmp_path / "partial")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is missing" in err and not (tmp_path / "partial").exists()
    assert not list(tmp_path.glob(".*")), "a temporary folder was left behind"

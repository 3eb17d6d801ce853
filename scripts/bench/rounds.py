"""Rounds of blind pairs for reviewers, made from the quality bench's ``--blind`` folders, and
the tally of the reviewers' replies.

A round is what one fresh reviewer sees: one folder of pairs, never the same piece of ground
twice (pairs whose crops overlap in the scene go to different rounds: a repeated place gives
the answer away), at most ``--per-round`` pairs. Two kinds:

  absolute  the bench's own pairs, the original and the edit of one crop in random order (the
            bench drew the order); the reviewer names the edited image, a confidence and the
            realism of the image picked;
  paired    the edits of two versions of the same case side by side (no original), in an order
            drawn here; the reviewer names the more real one, a confidence and the realism of each.

Each round is OUT/<round>/pairNN/ with 1x-A.png, 1x-B.png, 2x-A.png and 2x-B.png, nothing else;
OUT/key.json says what each pair is and which letter is the edit (absolute) or the new version
(paired); OUT/instructions.txt is the text to hand each reviewer, with the round's folder in
place of FOLDER. Their replies, one file per round (OUT/replies/<round>.txt, one line per pair
in the form the instructions ask for), are read by ``tally``.

Usage:
  .venv/bin/python scripts/bench/quality.py --scene s2-coast --engine patch --blind out/old
  .venv/bin/python scripts/bench/rounds.py absolute out/old out/look --engine patch --mode regenerate
  .venv/bin/python scripts/bench/rounds.py paired out/old out/new out/ab --engine patch
  .venv/bin/python scripts/bench/rounds.py tally out/ab
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

KINDS = ("absolute", "paired")
INSTRUCTIONS = {
    "absolute": (
        "You are an image reviewer for remote-sensing imagery (aerial photos and satellite scenes). In the "
        "folder FOLDER there are one or more sub-folders pair01, ... Each holds two images, A and B, of the "
        "same piece of ground: the whole crop at 1x (1x-A.png, 1x-B.png) and its middle enlarged 2x (2x-A.png, "
        "2x-B.png). One of the two is the untouched image; in the other a region was edited somewhere. The "
        "region is not marked.\n\n"
        "For each pair: look at all four images (compare A and B at 1x for layout and at 2x for texture). Judge "
        "by eye only: run no programs or image analysis and open nothing but the PNGs in FOLDER. Name the "
        "image you think was edited (A or B), your confidence (50 % = a guess, 100 % = certain) and score the "
        "realism of the image you picked, alone, from 1 to 5 (1 broken, 2 clearly artificial, 3 noticeable on "
        "a close look, 4 plausible, 5 would not notice it alone).\n\n"
        "Report one line per pair, exactly in this form, and nothing else after the list except an optional "
        "one-line overall remark:\n"
        "pairNN | edited A or B | NN % | realism N | short reason (what gives it away, where)\n"),
    "paired": (
        "You are an image reviewer for remote-sensing imagery (aerial photos and satellite scenes). In the "
        "folder FOLDER there are one or more sub-folders pair01, ... Each holds two images, A and B, of the "
        "same piece of ground: the whole crop at 1x (1x-A.png, 1x-B.png) and its middle enlarged 2x (2x-A.png, "
        "2x-B.png). Both images were made from the same original by editing the same region of it with two "
        "different methods; neither is the untouched original. The region is not marked.\n\n"
        "For each pair: look at all four images (compare A and B at 1x for layout and at 2x for texture). Judge "
        "by eye only: run no programs or image analysis and open nothing but the PNGs in FOLDER. Decide which "
        "image looks more like a real, unedited remote-sensing image (A or B), how strongly you prefer it "
        "(50 % = no preference, 100 % = certain), and score the realism of each image alone from 1 to 5 "
        "(1 broken, 2 clearly artificial, 3 noticeable on a close look, 4 plausible, 5 would not notice it "
        "alone).\n\n"
        "Report one line per pair, exactly in this form, and nothing else after the list except an optional "
        "one-line overall remark:\n"
        "pairNN | prefer A or B | NN % | realism A N | realism B N | short reason (what differs, where)\n"),
}
_LEAD = r"^[\s>*#`\-.)(\d]*?"          # bullets, numbering or markdown a reviewer may put before the pair
_SEP = r"[\s*`]*\|[\s*`]*"               # the column separator, markdown emphasis around it allowed
_NUM = r"(\d+(?:\.\d+)?)(?![\d.])"          # a number, whole or decimal, never a prefix of a longer one
REPLY = {
    "absolute": re.compile(_LEAD + r"pair\s*(\d+)" + _SEP + r"edited[\s:]*([AB])\b" + _SEP + _NUM + r"\s*%"
                           + _SEP + r"realism[\s:]*" + _NUM, re.I),
    "paired": re.compile(_LEAD + r"pair\s*(\d+)" + _SEP + r"prefer[\s:]*([AB])\b" + _SEP + _NUM + r"\s*%"
                         + _SEP + r"realism\s*A[\s:]*" + _NUM + _SEP + r"realism\s*B[\s:]*" + _NUM, re.I),
}
PAIR_LINE = re.compile(_LEAD + r"pair\s*\d+\s*\|", re.I)   # a line meant as a reply (then it must parse)
CONFIDENCE, REALISM = (50, 100), (1, 5)
ENTRY_KEYS = ("pair", "edit", "scene_crop", "case", "mode", "engine", "scene")
ROUND_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class RoundsError(Exception):
    """Bad input, said in one line with what to do."""


def load_key(folder: Path, engine: str | None, mode: str | None) -> dict[tuple, dict]:
    """The entries of a bench ``--blind`` folder's key, by (scene, case, engine, mode), kept to
    ``engine`` and ``mode`` where given."""
    path = folder / "key.json"
    if not path.is_file():
        raise RoundsError(f"{path} not found: give a folder the quality bench wrote with --blind")
    try:
        listed = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RoundsError(f"{path} is not a readable bench key ({exc}): write it again with the bench's --blind")
    if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
        raise RoundsError(f"{path} is not a bench key (a list of pairs): give a folder the bench wrote with --blind")
    entries = {}
    for e in listed:
        if (engine is not None and e.get("engine") != engine) or (mode is not None and e.get("mode") != mode):
            continue
        lacking = [k for k in ENTRY_KEYS if k not in e]
        if lacking:
            raise RoundsError(f"{path}: pair {e.get('pair')} has no {', '.join(lacking)}: write it again with this "
                              "version of the bench's --blind")
        for factor in (1, 2):
            for letter in ("A", "B"):
                if not (folder / f"{e['pair']}-{factor}x-{letter}.png").is_file():
                    raise RoundsError(f"{folder / e['pair']}-{factor}x-{letter}.png is missing: the folder "
                                      "is not as the bench wrote it (write it again with --blind)")
        entries[case_of(e)] = e
    return entries


def case_of(entry: dict) -> tuple:
    """A key entry's case: (scene, case, engine, mode)."""
    return entry["scene"], entry["case"], entry["engine"], entry["mode"]


def overlap(a: dict, b: dict) -> bool:
    """Whether two key entries show some of the same ground."""
    if a["scene"] != b["scene"]:
        return False
    ra, ca, rb, cb = (x["scene_crop"][k] for x in (a, b) for k in ("rows", "cols"))
    return ra[0] < rb[1] and rb[0] < ra[1] and ca[0] < cb[1] and cb[0] < ca[1]


def group(entries: list[dict], per_round: int) -> list[list[dict]]:
    """Rounds of entries with no two overlapping and at most ``per_round`` each: those that
    overlap the most others are placed first, each into the first round that takes it."""
    clashes = {e["pair"]: sum(overlap(e, o) for o in entries if o is not e) for e in entries}
    rounds: list[list[dict]] = []
    for e in sorted(entries, key=lambda e: (-clashes[e["pair"]], e["pair"])):
        for r in rounds:
            if len(r) < per_round and not any(overlap(e, o) for o in r):
                r.append(e)
                break
        else:
            rounds.append([e])
    return rounds


def round_name(prefix: str, index: int) -> str:
    return f"{prefix}{index + 1:02d}"


def make(kind: str, sources: list[Path], out: Path, *, engine: str | None, mode: str | None, per_round: int,
         seed: int, prefix: str) -> list[dict]:
    """Write the rounds (see the module's text) and return the key's entries. Everything is
    written into a temporary folder beside ``out`` and moved into place at the end, so a failure
    leaves no round half written."""
    if not ROUND_NAME.match(prefix):
        raise RoundsError(f"--prefix {prefix!r}: use letters, digits, '-' or '_' (it names the rounds' folders)")
    keys = [load_key(folder, engine, mode) for folder in sources]
    common = sorted(set(keys[0]).intersection(*keys[1:]))
    if not common:
        raise RoundsError("no pair to show: the folders hold no common case for this engine and mode")
    for case in common:
        if any(keys[0][case][k] != keys[-1][case][k] for k in ("crop", "scene_crop")):
            raise RoundsError(f"{case[0]} {case[1]} shows other ground in the two folders (its crop differs): "
                              "compare versions run on the same cases and ROIs")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RoundsError(f"{out} exists and is not an empty folder: give a new folder (a reviewer must see "
                          "only that round's pairs)")
    if not out.parent.is_dir():
        raise RoundsError(f"{out.parent} is not a folder: give OUT inside an existing folder")
    rng = random.Random(seed)
    rounds = group([keys[-1][k] for k in common], per_round)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        key = []
        for i, members in enumerate(rounds):
            rng.shuffle(members)
            for n, entry in enumerate(members, 1):
                case = case_of(entry)
                folder = work / round_name(prefix, i) / f"pair{n:02d}"
                folder.mkdir(parents=True)
                record = {"round": round_name(prefix, i), "pair": f"pair{n:02d}", "scene": case[0],
                          "case": case[1], "engine": case[2], "mode": case[3], "bench_pair": entry["pair"]}
                if kind == "absolute":
                    _copy(sources[0], entry["pair"], {"A": "A", "B": "B"}, folder)
                    record["edit"] = entry["edit"]
                else:
                    old, new = keys[0][case], keys[1][case]
                    new_is_a = rng.random() < 0.5
                    _copy(sources[1], new["pair"], {"A" if new_is_a else "B": new["edit"]}, folder)
                    _copy(sources[0], old["pair"], {"B" if new_is_a else "A": old["edit"]}, folder)
                    record["new"] = "A" if new_is_a else "B"
                key.append(record)
        (work / "key.json").write_text(json.dumps({"kind": kind, "sources": [str(s) for s in sources],
                                                   "pairs": key}, indent=1))
        (work / "instructions.txt").write_text(INSTRUCTIONS[kind])
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)   # a temporary folder is private; the rounds are not
        if out.exists():
            out.rmdir()   # empty, checked above
        work.replace(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return key


def _copy(folder: Path, pair: str, letters: dict[str, str], to: Path) -> None:
    """Copy the bench's ``pair`` PNGs of ``folder``, each shown letter from the bench's letter
    (``letters``: shown -> the bench's)."""
    for shown, theirs in letters.items():
        for factor in (1, 2):
            shutil.copyfile(folder / f"{pair}-{factor}x-{theirs}.png", to / f"{factor}x-{shown}.png")


def tally(out: Path) -> dict:
    """Read OUT/replies/<round>.txt against OUT/key.json; return the rows and the summary. A line
    that starts as a reply (``pairNN |``) must parse, name a pair of its round once, and hold a
    confidence of 50-100 % and realism scores of 1-5."""
    path = out / "key.json"
    try:
        key = json.loads(path.read_text())
        kind, listed = key["kind"], key["pairs"]
        pairs = {(p["round"], p["pair"]): p for p in listed}
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise RoundsError(f"{path} is not a rounds key ({exc}): give the folder `rounds.py absolute|paired` wrote")
    rows, seen = [], set()
    for reply in sorted((out / "replies").glob("*.txt")):
        try:
            text = reply.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RoundsError(f"{reply} cannot be read as text ({exc}): save the reply as UTF-8")
        for number, line in enumerate(text.splitlines(), 1):
            m = REPLY[kind].match(line)
            if not m:
                if PAIR_LINE.match(line):
                    raise RoundsError(f"{reply}:{number} is not in the form instructions.txt asks: {line.strip()!r}")
                continue
            name = f"pair{int(m.group(1)):02d}"
            entry = pairs.get((reply.stem, name))
            if entry is None:
                raise RoundsError(f"{reply}:{number}: {name} is not a pair of round {reply.stem}")
            if (reply.stem, name) in seen:
                raise RoundsError(f"{reply}:{number}: {name} is answered twice: keep one line per pair")
            seen.add((reply.stem, name))
            letter, confidence = m.group(2).upper(), float(m.group(3))
            scores = [float(g) for g in m.groups()[3:]]
            if not CONFIDENCE[0] <= confidence <= CONFIDENCE[1] or not all(REALISM[0] <= x <= REALISM[1]
                                                                           for x in scores):
                raise RoundsError(f"{reply}:{number}: confidence must be 50-100 % and realism 1-5: {line.strip()!r}")
            if kind == "absolute":
                rows.append({**entry, "found": letter == entry["edit"], "confidence": confidence,
                             "realism": scores[0]})
            else:
                shown = dict(zip("AB", scores))
                old = "B" if entry["new"] == "A" else "A"
                rows.append({**entry, "new_preferred": letter == entry["new"], "confidence": confidence,
                             "realism_new": shown[entry["new"]], "realism_old": shown[old]})
    if not rows:
        raise RoundsError(f"no reply line read in {out / 'replies'}: one file per round, "
                          "lines as instructions.txt asks")

    def mean(name: str) -> float:
        return round(sum(r[name] for r in rows) / len(rows), 3)

    summary = {"answered": len(rows), "pairs": len(pairs),
               "unanswered": sorted(f"{r} {p}" for r, p in set(pairs) - seen)}
    if kind == "absolute":   # realism: of the image picked (the original's where the edit was missed)
        summary.update({"found": sum(r["found"] for r in rows), "confidence": mean("confidence"),
                        "realism": mean("realism"),
                        "at_a_guess": sum((not r["found"]) or r["confidence"] <= 60 for r in rows)})
    else:   # a preference at 50 % is no preference: counted as a tie, not for either version
        summary.update({"new_preferred": sum(r["new_preferred"] and r["confidence"] > 50 for r in rows),
                        "old_preferred": sum(not r["new_preferred"] and r["confidence"] > 50 for r in rows),
                        "ties": sum(r["confidence"] == 50 for r in rows),
                        "realism_new": mean("realism_new"), "realism_old": mean("realism_old")})
    return {"kind": kind, "rows": rows, "summary": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for kind in KINDS:
        p = sub.add_parser(kind, help=f"make {kind} rounds")
        p.add_argument("folders", type=Path, nargs=1 if kind == "absolute" else 2,
                       help="the bench's --blind folder" if kind == "absolute" else "OLD and NEW --blind folders")
        p.add_argument("out", type=Path, help="a new folder for the rounds")
        p.add_argument("--engine", default=None, help="only this engine's pairs (sinddm, patch, gpnn)")
        p.add_argument("--mode", default=None, help="only this mode's pairs (regenerate, copy)")
        p.add_argument("--per-round", type=int, default=7, help="pairs a reviewer sees at most (default 7)")
        p.add_argument("--seed", type=int, default=13, help="draws the order of rounds' pairs and of A/B")
        p.add_argument("--prefix", default="r", help="the rounds' folder names: PREFIX01, PREFIX02, ...")
    p = sub.add_parser("tally", help="count the replies in OUT/replies/")
    p.add_argument("out", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the summary here")
    args = parser.parse_args(argv)
    try:
        if args.command == "tally":
            result = tally(args.out)
            if args.json:
                args.json.write_text(json.dumps(result, indent=1))
            for r in result["rows"]:
                where = f"{r['round']} {r['pair']} {r['scene']} {r['case']} {r['engine']} {r['mode']}"
                if result["kind"] == "absolute":
                    print(f"{where}: {'found' if r['found'] else 'missed'} at {r['confidence']:g} %, "
                          f"realism {r['realism']:g}")
                else:
                    said = ("no preference" if r["confidence"] == 50 else
                            f"{'new' if r['new_preferred'] else 'old'} preferred at {r['confidence']:g} %")
                    print(f"{where}: {said}, realism new {r['realism_new']:g} old {r['realism_old']:g}")
            print(json.dumps(result["summary"]))
        else:
            if args.per_round < 1:
                raise RoundsError("--per-round must be at least 1")
            key = make(args.command, args.folders, args.out, engine=args.engine, mode=args.mode,
                       per_round=args.per_round, seed=args.seed, prefix=args.prefix)
            names = sorted({k["round"] for k in key})
            print(f"{len(key)} pairs in {len(names)} rounds under {args.out}: {', '.join(names)}; "
                  f"hand each reviewer {args.out / 'instructions.txt'} with its round's folder")
    except RoundsError as exc:
        print(f"rounds.py: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rounds.py: {exc.filename or ''}: {exc.strerror or exc}: check the paths and free space",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

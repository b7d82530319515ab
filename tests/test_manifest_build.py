"""`videolang manifest build`: each public format becomes the exact records its annotations describe,
the result validates, missing videos are skipped and counted, and malformed input is one line naming
the file and the key path or table row."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

from videolang.cli import main
from videolang.data import builders
from videolang.data.builders import BuildError, build_manifest
from videolang.data.builders.common import Built, Changes, new_record
from videolang.data.builders.database_json import UNTEXTED
from videolang.data.builders.howto100m import DROPPED as HOWTO_DROPPED
from videolang.data.builders.surglavi import (
    EMPTY_SPAN,
    EMPTY_TEXT,
    FILTERED,
    NARRATION_CUT,
    NARRATION_DROPPED,
    build_tree,
)
from videolang.data.builders.vript import EMPTY as VRIPT_EMPTY
from videolang.data.builders.vript import UNREADABLE, probe_duration
from videolang.data.manifest import Segment, check_manifest, validate_manifest
from videolang.errors import ManifestError, VideolangError
from build_helpers import (
    assert_valid as _assert_valid,
    write_json as _json,
    options as _opts,
    read_out as _read,
    rel as _rel,
    touch as _touch,
    write_clip as _write_clip,
)



# --------------------------------------------------------------------------------------------------
# Helpers


def _one_line_error(capsys, args: list[str]) -> str:
    """Run `videolang manifest build ARGS`, check it fails with exactly one line and no traceback."""
    assert main(["manifest", "build", *args, "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------------------------------
# HowTo100M

HOWTO = {
    "ht_a": {"start": [0.0, 5.0, 9.0, 12.0, 20.0], "end": [4.0, 5.0, 11.5, 14.0, 18.0],
             "text": ["first we cut", "zero length", "then we fry", "   ", "backwards"]},
    "ht_b": {"start": [1.5], "end": [3.25], "text": ["hello there"]},
    "ht_missing": {"start": [0.0], "end": [1.0], "text": ["no file for me"]},
}


def _kept_sentences(entry: dict) -> list[dict]:
    return [{"start": s, "end": e, "text": t} for s, e, t in zip(entry["start"], entry["end"], entry["text"])
            if e > s and t.strip()]


def test_howto100m_records(tmp_path, videos):
    src = _json(tmp_path / "howto.json", HOWTO)
    _touch(videos, "ht_a", "ht_b")
    out = tmp_path / "out" / "howto.jsonl"
    report = build_manifest("howto100m", src, out, _opts(videos))
    records = _read(out)
    assert list(records) == ["ht_a", "ht_b"]
    for vid in records:
        assert records[vid] == {
            "video_id": vid, "path": _rel(videos / f"{vid}.mp4", out), "split": "train", "corpus": "howto100m",
            "narration": _kept_sentences(HOWTO[vid]),
        }
    n_all = sum(len(HOWTO[v]["start"]) for v in records)
    n_kept = sum(len(_kept_sentences(HOWTO[v])) for v in records)
    assert report.dropped[HOWTO_DROPPED] == n_all - n_kept
    assert report.missing == ["ht_missing"] and report.records == 2 and report.narration == n_kept
    assert any("ht_missing" in line and "--keep-missing" in line for line in report.lines())
    _assert_valid(out)


# --------------------------------------------------------------------------------------------------
# COIN and YouCook2

COIN_TEA = [[2.0, 10.0], [9.0, 20.0], [25.0, 31.5]]  # 2nd overlaps the 1st; 3rd runs past the duration
COIN = {"database": {
    "c1": {"subset": "training", "duration": 30.0, "class": "MakeTea", "recipe_type": 7,
           "annotation": [{"segment": s, "label": f"step {i}"} for i, s in enumerate(COIN_TEA)]},
    "c2": {"subset": "testing", "duration": 12.0, "class": "FixBike", "recipe_type": 3,
           "annotation": [{"segment": [1, 4], "label": "loosen"}]},
    "c3": {"subset": "validation", "duration": 9.0, "class": "FixBike", "recipe_type": 3,
           "annotation": [{"segment": [0, 9], "label": "whole"}]},
}}


def _coin(tmp_path: Path) -> Path:
    return _json(tmp_path / "coin.json", COIN)


def test_coin_records(tmp_path, videos):
    _touch(videos, "c1", "c2")
    out = tmp_path / "coin.jsonl"
    report = build_manifest("coin", _coin(tmp_path), out, _opts(videos))
    records = _read(out)
    db = COIN["database"]
    c1 = db["c1"]
    (s0, e0), (s1, e1), (s2, _) = COIN_TEA
    assert records["c1"] == {
        "video_id": "c1", "path": _rel(videos / "c1.mp4", out), "split": "train", "corpus": "coin",
        "duration": c1["duration"], "meta": {"task": c1["class"], "recipe_type": c1["recipe_type"]},
        "segments": [
            {"level": "step", "start": s0, "end": e0, "label": "step 0", "caption": "step 0"},
            {"level": "step", "start": e0, "end": e1, "label": "step 1", "caption": "step 1"},  # trimmed
            {"level": "step", "start": s2, "end": c1["duration"], "label": "step 2", "caption": "step 2"},  # cut
        ],
    }
    c2 = db["c2"]
    assert records["c2"]["split"] == "test" and records["c2"]["meta"]["task"] == c2["class"]
    assert records["c2"]["segments"] == [
        {"level": "step", "start": 1.0, "end": 4.0, "label": "loosen", "caption": "loosen"}]
    assert report.fixed == {"step overlap(s) trimmed": 1, "step(s) cut at the video's end": 1}
    assert report.missing == ["c3"] and report.segments == {"step": 4}
    _assert_valid(out)


YOUCOOK2 = {"database": {
    "y1": {"subset": "validation", "duration": 40.0, "recipe_type": "113",
           "annotations": [{"segment": [3, 9], "sentence": "crack the eggs"},
                           {"segment": [10, 21], "sentence": "whisk with salt"},
                           {"segment": [22, 30], "sentence": ""}]},
    "y2": {"subset": "testing", "duration": 50.0, "recipe_type": "201"},  # test videos ship unannotated
}}


def test_youcook2_records(tmp_path, videos):
    src = _json(tmp_path / "yc2.json", YOUCOOK2)
    _touch(videos, "y1", "y2")
    out = tmp_path / "yc2.jsonl"
    report = build_manifest("youcook2", src, out, _opts(videos))
    y1 = YOUCOOK2["database"]["y1"]
    expected = [{"level": "step", "start": float(a["segment"][0]), "end": float(a["segment"][1]),
                 "caption": a["sentence"]} for a in y1["annotations"] if a["sentence"]]
    assert _read(out) == {"y1": {
        "video_id": "y1", "path": _rel(videos / "y1.mp4", out), "split": "val", "corpus": "youcook2",
        "duration": y1["duration"], "meta": {"recipe_type": y1["recipe_type"]}, "segments": expected}}
    assert report.dropped == {"step(s) with an empty sentence": 1}
    assert report.skipped == {builders.NOTHING_LEFT: 1}
    _assert_valid(out)


def test_youcook2_steps_without_sentences_are_skipped(tmp_path, videos):
    db = json.loads(json.dumps(YOUCOOK2))  # the official test file gives segments only
    db["database"]["y3"] = {"subset": "testing", "duration": 20.0, "annotations": [{"segment": [1, 5], "id": 0}]}
    _touch(videos, "y1", "y3")
    out = tmp_path / "yc2.jsonl"
    report = build_manifest("youcook2", _json(tmp_path / "yc2.json", db), out, _opts(videos))
    assert list(_read(out)) == ["y1"]
    assert report.skipped == {builders.NOTHING_LEFT: 1, UNTEXTED.format(text_key="sentence"): 1}


def test_coin_without_subset_needs_only_split(tmp_path, videos):
    db = json.loads(json.dumps(COIN))
    for entry in db["database"].values():
        del entry["subset"]
    src = _json(tmp_path / "coin.json", db)
    _touch(videos, *db["database"])
    out = tmp_path / "coin.jsonl"
    build_manifest("coin", src, out, _opts(videos, split="val"))
    assert {vid: r["split"] for vid, r in _read(out).items()} == dict.fromkeys(db["database"], "val")
    with pytest.raises(BuildError, match="subset: missing required key"):
        build_manifest("coin", src, out, _opts(videos))


def test_split_corpus_and_limit_override(tmp_path, videos):
    _touch(videos, "c1", "c2", "c3")
    out = tmp_path / "coin.jsonl"
    report = build_manifest("coin", _coin(tmp_path), out, _opts(videos, split="val", corpus="mycoin", limit=2))
    records = _read(out)
    assert list(records) == list(COIN["database"])[:2]
    assert {(r["split"], r["corpus"]) for r in records.values()} == {("val", "mycoin")}
    assert report.records == 2


def test_keep_missing_guesses_path(tmp_path, videos):
    _touch(videos, "c1")
    out = tmp_path / "sub" / "coin.jsonl"
    report = build_manifest("coin", _coin(tmp_path), out, _opts(videos, keep_missing=True))
    records = _read(out)
    assert list(records) == list(COIN["database"])
    assert records["c3"]["path"] == _rel(videos / "c3.mp4", out)
    assert report.kept_missing == ["c2", "c3"] and report.missing == []
    problems, warnings = validate_manifest(out)
    assert problems == [] and len(warnings) == 2


def test_videos_found_recursively_with_any_extension(tmp_path, videos):
    _touch(videos / "a" / "b", "c1", ext="MKV")
    _touch(videos, "c2", ext="webm")
    _touch(videos, "c3", ext="txt")  # not a video
    out = tmp_path / "coin.jsonl"
    report = build_manifest("coin", _coin(tmp_path), out, _opts(videos))
    records = _read(out)
    assert records["c1"]["path"] == _rel(videos / "a" / "b" / "c1.MKV", out)
    assert records["c2"]["path"] == _rel(videos / "c2.webm", out)
    assert report.missing == ["c3"]


def test_two_files_with_one_stem_is_an_error(tmp_path, videos):
    _touch(videos / "x", "c1")
    _touch(videos / "y", "c1", ext="mkv")
    with pytest.raises(BuildError) as info:
        build_manifest("coin", _coin(tmp_path), tmp_path / "o.jsonl", _opts(videos))
    message = str(info.value)
    assert "\n" not in message and str(videos / "x" / "c1.mp4") in message and str(videos / "y" / "c1.mkv") in message


def test_no_usable_video_is_an_error_and_writes_nothing(tmp_path, videos):
    out = tmp_path / "coin.jsonl"
    with pytest.raises(BuildError, match="no usable videos"):
        build_manifest("coin", _coin(tmp_path), out, _opts(videos))
    assert not out.exists() and list(tmp_path.glob(".coin*")) == []


def test_invalid_output_is_a_builder_bug_and_not_written(tmp_path, videos, monkeypatch):
    def broken(source, ctx):
        record = new_record("c1", duration=5.0, segments=[Segment("step", 0.0, 9.0, caption="past the end")])
        yield Built(record, Changes())

    monkeypatch.setitem(builders.BUILDERS, "coin", broken)
    _touch(videos, "c1")
    out = tmp_path / "out" / "coin.jsonl"
    with pytest.raises(ManifestError, match="bug in the coin builder.*segments\\[0\\].end") as info:
        build_manifest("coin", _coin(tmp_path), out, _opts(videos))
    assert not out.exists() and list(out.parent.iterdir()) == []
    # The draft is deleted, so the message names --out and the line, not the draft.
    assert str(out) in str(info.value) and ".building" not in str(info.value)


def test_path_is_relative_to_the_resolved_out_folder(tmp_path, videos):
    real = tmp_path / "deep" / "a" / "b"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)  # `..` from link/ climbs from real/, as the validator resolves it
    src = _json(tmp_path / "howto.json", {"ht_b": HOWTO["ht_b"]})
    _touch(videos, "ht_b")
    out = link / "howto.jsonl"
    build_manifest("howto100m", src, out, _opts(videos))
    assert _read(out)["ht_b"]["path"] == os.path.relpath(videos / "ht_b.mp4", real.resolve())
    _, problems, _ = check_manifest(out, check_files=True)
    assert problems == []


def test_json_with_a_bom_is_read(tmp_path, videos):
    bom = tmp_path / "bom.json"
    bom.write_text(json.dumps(HOWTO), encoding="utf-8-sig")
    _touch(videos, "ht_a", "ht_b")
    build_manifest("howto100m", _json(tmp_path / "plain.json", HOWTO), tmp_path / "plain.jsonl", _opts(videos))
    build_manifest("howto100m", bom, tmp_path / "bom.jsonl", _opts(videos))
    assert _read(tmp_path / "bom.jsonl") == _read(tmp_path / "plain.jsonl")


def test_counts_only_what_is_written(tmp_path, videos):
    c1 = COIN["database"]["c1"]  # has an overlap and a step past the end: both fixed
    no_file = json.loads(json.dumps(c1))
    no_file["annotation"].append({"segment": [1, 2], "label": " "})  # and a dropped step
    _touch(videos, "c1")
    both = build_manifest("coin", _json(tmp_path / "both.json", {"database": {"c1": c1, "no_file": no_file}}),
                          tmp_path / "both.jsonl", _opts(videos))
    alone = build_manifest("coin", _json(tmp_path / "alone.json", {"database": {"c1": c1}}),
                           tmp_path / "alone.jsonl", _opts(videos))
    assert both.missing == ["no_file"] and alone.fixed
    assert (both.dropped, both.fixed, both.notes) == (alone.dropped, alone.fixed, alone.notes)


def test_build_keeps_a_file_named_like_a_draft(tmp_path, videos):
    mine = tmp_path / ".coin.jsonl.building"
    mine.write_text("not yours")
    _touch(videos, "c1")
    build_manifest("coin", _coin(tmp_path), tmp_path / "coin.jsonl", _opts(videos))
    assert mine.read_text() == "not yours" and sorted(tmp_path.glob(".coin.jsonl*")) == [mine]


@pytest.mark.parametrize("kind", ["folder", "dot", "root", "under_a_file"])
def test_bad_out_fails_before_any_work(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").touch()
    out = {"folder": "folder", "dot": ".", "root": "/", "under_a_file": "afile/o.jsonl"}[kind]
    src = _json(tmp_path / "howto.json", HOWTO)
    # --videos does not exist: had the build started, that would be the error.
    line = _one_line_error(capsys, ["howto100m", str(src), "--videos", "no_videos", "--out", out])
    assert line.startswith(f"videolang manifest: error: {out}: --out "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder", "howto.json"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_folder_fails_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    src = _json(tmp_path / "howto.json", HOWTO)
    out = locked / "o.jsonl"
    line = _one_line_error(capsys, ["howto100m", str(src), "--videos", str(tmp_path / "no"), "--out", str(out)])
    assert line.startswith(f"videolang manifest: error: {out}: --out cannot be written"), line


@pytest.mark.parametrize("spelling", ["same", "through_a_symlink"])
def test_out_may_not_overwrite_the_source(tmp_path, videos, capsys, spelling):
    src = _coin(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    out = src if spelling == "same" else tmp_path / "link" / src.name
    before = src.read_bytes()
    _touch(videos, "c1")
    line = _one_line_error(capsys, ["coin", str(src), "--videos", str(videos), "--out", str(out)])
    assert "--out may not be SOURCE" in line and src.read_bytes() == before, line


def test_out_may_not_lie_inside_a_source_folder(tmp_path, videos, capsys):
    src = tmp_path / "captions"
    src.mkdir()
    caption_file = _json(src / "v_caption.json", _vript_doc("v", [_scene("v", 1, "x", [])]))
    line = _one_line_error(capsys, ["vript", str(src), "--videos", str(videos), "--out", str(src / "v.jsonl")])
    assert "--out may not be SOURCE" in line and list(src.iterdir()) == [caption_file], line


@pytest.mark.parametrize("args", [["--split", " "], ["--split", ""], ["--corpus", "\t"], ["--corpus", ""]])
def test_blank_split_or_corpus_is_an_argument_error(tmp_path, videos, capsys, args):
    _touch(videos, "c1")
    with pytest.raises(SystemExit) as info:
        main(["manifest", "build", "coin", str(_coin(tmp_path)), "--videos", str(videos),
              "--out", str(tmp_path / "o.jsonl"), *args])
    assert info.value.code == 2 and f"argument {args[0]}: must not be blank" in capsys.readouterr().err
    option = args[0].lstrip("-")
    with pytest.raises(VideolangError, match=f"{args[0]} must be non-blank"):
        build_manifest("coin", _coin(tmp_path), tmp_path / "o.jsonl", _opts(videos, **{option: args[1]}))
    assert not (tmp_path / "o.jsonl").exists()


def test_non_numeric_limit_is_a_readable_argument_error(tmp_path, videos, capsys):
    with pytest.raises(SystemExit):
        main(["manifest", "build", "coin", str(_coin(tmp_path)), "--videos", str(videos),
              "--out", str(tmp_path / "o.jsonl"), "--limit", "ten"])
    assert "argument --limit: invalid positive integer value: 'ten'" in capsys.readouterr().err


def test_non_utf8_file_name_is_one_line(tmp_path, videos, capsys):
    folder = videos / os.fsdecode(b"bad\xff")  # a name no UTF-8 manifest can hold
    _touch(folder, "ht_b")
    src = _json(tmp_path / "howto.json", {"ht_b": HOWTO["ht_b"]})
    out = tmp_path / "o.jsonl"
    line = _one_line_error(capsys, ["howto100m", str(src), "--videos", str(videos), "--out", str(out)])
    assert "ht_b.mp4: file name is not valid UTF-8" in line, line
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Vript


def _scene(vid: str, n: int, content: str, voiceover: list) -> tuple[str, dict]:
    clip_id = f"{vid}-Scene-{n:03d}"
    return clip_id, {
        "video_id": vid, "clip_id": clip_id, "video_title": f"title of {vid}", "voiceover": voiceover,
        "caption": {"shot_type": f"shot {n}", "camera_movement": f"move {n}", "content": content,
                    "scene_title": f"scene {n}"},
    }


def _vript_doc(vid: str, scenes: list[tuple[str, dict]]) -> dict:
    return {"meta": {"video_id": vid, "video_title": f"title of {vid}", "num_clips": len(scenes), "integrity": True},
            "data": dict(scenes)}


CLIPS = {"vA-Scene-001": (8, 4), "vB-Scene-002": (6, 4)}  # clip id -> (frames, fps) of the real clips


def _vript_source(tmp_path: Path, videos: Path) -> Path:
    src = tmp_path / "vript"
    src.mkdir()
    doc_a = _vript_doc("vA", [_scene("vA", 1, "A dog runs across a lawn.", ["here he comes"]),
                              _scene("vA", 2, "A cat sleeps.", []),  # empty file: unreadable
                              _scene("vA", 3, "  ", [])])  # empty content
    doc_b = _vript_doc("vB", [_scene("vB", 1, "No clip file.", []), _scene("vB", 2, "Rain on a window.", ["drip"])])
    _json(src / "vA_caption.json", doc_a)
    (src / "nested").mkdir()
    _json(src / "nested" / "vB_caption.json", doc_b)
    for clip_id, (frames, fps) in CLIPS.items():
        _write_clip(videos / clip_id.split("-")[0] / f"{clip_id}.mp4", frames, fps)
    _touch(videos / "vA", "vA-Scene-002")
    return src


def test_vript_records(tmp_path, videos):
    src = _vript_source(tmp_path, videos)
    out = tmp_path / "vript.jsonl"
    report = build_manifest("vript", src, out, _opts(videos))
    records = _read(out)
    assert list(records) == list(CLIPS)
    docs = {"vA": json.loads((src / "vA_caption.json").read_text()),
            "vB": json.loads((src / "nested" / "vB_caption.json").read_text())}
    for clip_id, (frames, fps) in CLIPS.items():
        vid = clip_id.split("-")[0]
        scene = docs[vid]["data"][clip_id]
        cap = scene["caption"]
        rec = records[clip_id]
        duration = rec["duration"]
        assert duration == pytest.approx(frames / fps, abs=1e-6)
        assert rec == {
            "video_id": clip_id, "path": _rel(videos / vid / f"{clip_id}.mp4", out), "split": "train",
            "corpus": "vript", "duration": duration,
            "meta": {"parent_video_id": vid, "title": scene["video_title"], "voiceover": scene["voiceover"]},
            "segments": [{"level": "clip", "start": 0.0, "end": duration, "caption": cap["content"], "script": {
                "shot_type": cap["shot_type"], "camera_movement": cap["camera_movement"],
                "content": cap["content"], "title": cap["scene_title"]}}],
        }
    assert report.missing == ["vB-Scene-001"]
    assert report.skipped == {UNREADABLE: 1, VRIPT_EMPTY: 1}
    _assert_valid(out)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])  # Matroska records only the container's duration
def test_probe_duration_from_metadata(tmp_path, ext):
    frames, fps = 6, 4
    _write_clip(tmp_path / f"clip.{ext}", frames, fps)
    assert probe_duration(tmp_path / f"clip.{ext}") == pytest.approx(frames / fps, abs=1e-3)
    (tmp_path / "empty.mp4").touch()
    assert probe_duration(tmp_path / "empty.mp4") is None


def test_empty_source_is_an_error(tmp_path, videos):
    with pytest.raises(BuildError, match="the source lists no videos"):
        build_manifest("howto100m", _json(tmp_path / "h.json", {}), tmp_path / "o.jsonl", _opts(videos))


def test_vript_refuses_keep_missing_before_scanning_videos(tmp_path):
    src = _json(tmp_path / "v_caption.json", _vript_doc("v", [_scene("v", 1, "x", [])]))
    with pytest.raises(VideolangError, match="--keep-missing"):
        build_manifest("vript", src, tmp_path / "o.jsonl", _opts(tmp_path / "no_videos", keep_missing=True))


def test_vript_clip_in_two_files_names_both(tmp_path, videos):
    doc = _vript_doc("vA", [_scene("vA", 1, "A dog.", [])])
    first, second = (tmp_path / "captions" / sub / "vA_caption.json" for sub in ("a", "b"))
    for file in (first, second):
        file.parent.mkdir(parents=True)
        _json(file, doc)
    _write_clip(videos / "vA" / "vA-Scene-001.mp4", 4, 4)
    with pytest.raises(BuildError) as info:
        build_manifest("vript", tmp_path / "captions", tmp_path / "o.jsonl", _opts(videos))
    assert str(first) in str(info.value) and str(second) in str(info.value)


# --------------------------------------------------------------------------------------------------
# SurgLaVi


class Cap(NamedTuple):
    video: str
    level: int  # 1 task, 2 step, 3 phase
    start: float
    end: float
    text: str
    surgical: int = 1
    descriptive: int = 1
    raw: Optional[str] = None


TASK, STEP, PHASE = 1, 2, 3
VIDEOS = [("v1", "Cholecystectomy", 25.0, 100.0, 640, 360), ("v2", "Appendectomy", 30.0, 50.0, 320, 240),
          ("v3", "No file", 25.0, 10.0, 320, 240)]
# v1: phases overlap by 2 s; S2 overlaps S1; S4 lies inside S1; S3 straddles the phase boundary but lies
# mostly in P2; T2 overlaps S1 a little and S2 a lot; T5 falls between steps; two tasks fail the filter.
P1 = Cap("v1", PHASE, 0.0, 50.0, "preparation")
P2 = Cap("v1", PHASE, 48.0, 100.0, "dissection")
S1 = Cap("v1", STEP, 0.0, 20.0, "port placement")
S2 = Cap("v1", STEP, 18.0, 45.0, "expose the triangle")
S3 = Cap("v1", STEP, 45.0, 60.0, "clip the artery")
S4 = Cap("v1", STEP, 5.0, 10.0, "insert the camera")
T1 = Cap("v1", TASK, 2.0, 8.0, "incise the skin", raw="so we make a small cut")
T2 = Cap("v1", TASK, 19.0, 30.0, "retract the fundus", raw="now lift the fundus")
T3 = Cap("v1", TASK, 31.0, 33.0, "talks about lunch", descriptive=0, raw="lunch was good")
T4 = Cap("v1", TASK, 34.0, 36.0, "shows the logo", surgical=0, raw="")
T5 = Cap("v1", TASK, 46.0, 49.0, "irrigate", raw="a bit of irrigation")
BAD_SPAN = Cap("v1", TASK, 70.0, 70.0, "zero length")
NO_TEXT = Cap("v1", TASK, 72.0, 74.0, "")
V2_PHASE = Cap("v2", PHASE, 0.0, 50.0, "not surgical", surgical=0)
V2_STEP = Cap("v2", STEP, 0.0, 30.0, "open the abdomen")
V2_TASK = Cap("v2", TASK, 10.0, 20.0, "hold the clamp")
V3_STEP = Cap("v3", STEP, 0.0, 5.0, "anything")
CAPTIONS = [P1, P2, S1, S2, S3, S4, T1, T2, T3, T4, T5, BAD_SPAN, NO_TEXT, V2_PHASE, V2_STEP, V2_TASK, V3_STEP]


def _surglavi_db(path: Path, captions=CAPTIONS, drop_column: Optional[str] = None) -> Path:
    cap_columns = ["caption_id INTEGER PRIMARY KEY", "video_id TEXT", "level_id INTEGER", "raw_narration TEXT",
                   "start_time REAL", "end_time REAL", "duration REAL", "is_surgical_content INTEGER",
                   "is_descriptive INTEGER", "caption TEXT"]
    cap_columns = [c for c in cap_columns if c.split()[0] != drop_column]
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE videos (video_id TEXT, title TEXT, fps REAL, duration REAL, width INT, height INT)")
        con.execute("CREATE TABLE levels (level_id INTEGER, name TEXT)")
        con.execute(f"CREATE TABLE captions ({', '.join(cap_columns)})")
        con.executemany("INSERT INTO videos VALUES (?, ?, ?, ?, ?, ?)", VIDEOS)
        con.executemany("INSERT INTO levels VALUES (?, ?)", [(TASK, "task"), (STEP, "step"), (PHASE, "phase")])
        names = [c.split()[0] for c in cap_columns]
        for i, c in enumerate(captions, start=1):
            row = {"caption_id": i, "video_id": c.video, "level_id": c.level, "raw_narration": c.raw,
                   "start_time": c.start, "end_time": c.end, "duration": None,
                   "is_surgical_content": c.surgical, "is_descriptive": c.descriptive, "caption": c.text}
            con.execute(f"INSERT INTO captions VALUES ({', '.join('?' * len(names))})", [row[n] for n in names])
    con.close()
    return path


def _seg(level: str, cap: Cap, start: float, end: float, children=()) -> dict:
    out = {"level": level, "start": start, "end": end, "caption": cap.text}
    if children:
        out["children"] = list(children)
    return out


def _levels(tree: list[dict]):
    for seg in tree:
        yield seg["level"]
        yield from _levels(seg.get("children", []))


def test_surglavi_tree_inference(tmp_path, videos):
    src = _surglavi_db(tmp_path / "surglavi.db")
    _touch(videos, "v1", "v2")
    out = tmp_path / "surglavi.jsonl"
    report = build_manifest("surglavi", src, out, _opts(videos))
    records = _read(out)
    assert list(records) == ["v1", "v2"]
    v1 = VIDEOS[0]
    assert {k: records["v1"][k] for k in ("video_id", "split", "corpus", "duration", "meta")} == {
        "video_id": "v1", "split": "train", "corpus": "surglavi", "duration": v1[3],
        "meta": {"title": v1[1], "fps": v1[2], "width": v1[4], "height": v1[5]}}
    # P2 starts where P1 ends; S4 (inside S1) is dropped; S2 starts where S1 ends; S3 overlaps P2 most and
    # is clipped to it; T2 overlaps S2 most and is clipped to it; T5 overlaps no step and goes under P1.
    v1_tree = [
        _seg("phase", P1, P1.start, P1.end, [
            _seg("step", S1, S1.start, S1.end, [_seg("task", T1, T1.start, T1.end)]),
            _seg("step", S2, S1.end, S2.end, [_seg("task", T2, S1.end, T2.end)]),
            _seg("task", T5, T5.start, T5.end),
        ]),
        _seg("phase", P2, P1.end, P2.end, [_seg("step", S3, P1.end, S3.end)]),
    ]
    # v2's only phase fails the filter: its step becomes a root and keeps its task.
    v2_tree = [_seg("step", V2_STEP, V2_STEP.start, V2_STEP.end, [_seg("task", V2_TASK, V2_TASK.start, V2_TASK.end)])]
    assert records["v1"]["segments"] == v1_tree
    assert records["v2"]["segments"] == v2_tree
    assert report.fixed == {"phase overlap(s) trimmed": 1, "step overlap(s) trimmed": 1,
                            "step(s) clipped to their parent phase": 1, "task(s) clipped to their parent step": 1}
    assert report.dropped == {
        FILTERED: sum(1 for c in CAPTIONS if c.video != "v3" and not (c.surgical and c.descriptive)),
        "step(s) inside an earlier overlapping step": 1, EMPTY_SPAN: 1, EMPTY_TEXT: 1}
    assert report.missing == ["v3"]
    assert report.segments == Counter(_levels(v1_tree + v2_tree))
    assert "narration" not in records["v1"]
    _assert_valid(out)


def test_surglavi_no_filter_and_narration(tmp_path, videos):
    src = _surglavi_db(tmp_path / "surglavi.db")
    _touch(videos, "v1", "v2")
    out = tmp_path / "surglavi.jsonl"
    report = build_manifest("surglavi", src, out, _opts(videos, filter=False, narration=True, limit=1))
    (rec,) = _read(out).values()
    tasks = [seg for phase in rec["segments"] for step in phase.get("children", [])
             for seg in [step] + step.get("children", []) if seg["level"] == "task"]
    assert {T3.text, T4.text} <= {t["caption"] for t in tasks}
    assert FILTERED not in report.dropped
    # The narration is the finest level's raw text, unfiltered, in time order; empty text is dropped.
    v1_tasks = sorted((c for c in CAPTIONS if c.video == "v1" and c.level == TASK), key=lambda c: c.start)
    assert rec["narration"] == [{"start": c.start, "end": c.end, "text": c.raw} for c in v1_tasks if c.raw]
    assert report.dropped[NARRATION_DROPPED] == sum(
        1 for c in v1_tasks if not c.raw)
    _assert_valid(out)


def test_build_tree_orphans_and_ties():
    report = Changes()
    phase = Segment("phase", 0.0, 10.0, caption="phase")
    first, second = Segment("step", 0.0, 5.0, caption="first"), Segment("step", 5.0, 10.0, caption="second")
    outside = Segment("step", 12.0, 15.0, caption="outside")  # overlaps no phase
    tie = Segment("task", 4.0, 6.0, caption="tie")  # as much in each step: the earliest wins
    roots = build_tree([outside, tie, second, phase, first], report)
    assert [s.caption for s in roots] == ["phase", "outside"]
    assert [s.caption for s in roots[0].children] == ["first", "second"]
    assert first.children == [tie] and (tie.start, tie.end) == (4.0, first.end)
    assert report.notes == {"step(s) outside every coarser segment, kept at the top level": 1}
    assert report.fixed == {"task(s) clipped to their parent step": 1}


def test_build_tree_tie_goes_to_the_earliest_parent_whatever_its_own_parent():
    phase = Segment("phase", 5.0, 15.0, caption="phase")
    steps = [Segment("step", 0.0, 5.0, caption="before"), Segment("step", 5.0, 15.0, caption="in the phase"),
             Segment("step", 15.0, 25.0, caption="after")]  # the first and last lie outside every phase
    task = Segment("task", 10.0, 20.0, caption="tie")
    overlap = {s.caption: min(s.end, task.end) - max(s.start, task.start) for s in steps}
    tied = [s for s in steps if overlap[s.caption] == max(overlap.values())]
    assert len(tied) == 2
    build_tree([phase, *steps, task], Changes())
    assert min(tied, key=lambda s: s.start).children == [task]


def _sql(db: Path, *statements: str) -> Path:
    with sqlite3.connect(db) as con:
        for statement in statements:
            con.execute(statement)
    con.close()
    return db


def test_surglavi_counts_narration_cut_and_only_written_videos(tmp_path, videos):
    durations = {v[0]: v[3] for v in VIDEOS}
    caps = [Cap("v1", TASK, durations["v1"] - 5, durations["v1"] + 5, "runs past the end", raw="still talking"),
            Cap("v3", TASK, durations["v3"] - 2, durations["v3"] + 3, "no file", raw="never written")]
    _touch(videos, "v1")  # v3 has no file: its cuts are not counted
    out = tmp_path / "s.jsonl"
    report = build_manifest("surglavi", _surglavi_db(tmp_path / "s.db", caps), out, _opts(videos, narration=True))
    written = [c for c in caps if c.video in _read(out)]
    assert _read(out)["v1"]["narration"] == [{"start": c.start, "end": durations[c.video], "text": c.raw}
                                             for c in written]
    assert report.fixed == {NARRATION_CUT: len(written), "task(s) cut at the video's end": len(written)}


def test_surglavi_level_ids_stored_as_text(tmp_path, videos):
    _touch(videos, "v1", "v2")
    build_manifest("surglavi", _surglavi_db(tmp_path / "int.db"), tmp_path / "int.jsonl", _opts(videos))
    text_ids = _sql(_surglavi_db(tmp_path / "text.db"), "DROP TABLE levels",
                    "CREATE TABLE levels (level_id TEXT, name TEXT)",
                    f"INSERT INTO levels VALUES ('{TASK}', 'task'), (' {STEP}', 'step'), ('{PHASE}.0', 'phase')")
    build_manifest("surglavi", text_ids, tmp_path / "text.jsonl", _opts(videos))
    assert _read(tmp_path / "text.jsonl") == _read(tmp_path / "int.jsonl")


def test_surglavi_utf8_blobs_are_text(tmp_path, videos):
    _touch(videos, "v1", "v2")
    opts = _opts(videos, narration=True)
    build_manifest("surglavi", _surglavi_db(tmp_path / "text.db"), tmp_path / "text.jsonl", opts)
    blobs = _sql(_surglavi_db(tmp_path / "blob.db"), "UPDATE videos SET title = CAST(title AS BLOB)",
                 "UPDATE captions SET caption = CAST(caption AS BLOB), raw_narration = CAST(raw_narration AS BLOB)")
    build_manifest("surglavi", blobs, tmp_path / "blob.jsonl", opts)
    assert _read(tmp_path / "blob.jsonl") == _read(tmp_path / "text.jsonl")


# --------------------------------------------------------------------------------------------------
# Malformed input: one line naming the file and the key path or row


def _howto_bad_lengths(tmp_path):
    src = _json(tmp_path / "h.json", {"ht_a": {"start": [0, 1], "end": [1, 2], "text": ["x"]}})
    return "howto100m", src, "ht_a.text"


def _howto_bad_number(tmp_path):
    src = _json(tmp_path / "h.json", {"ht_a": {"start": ["0"], "end": [1], "text": ["x"]}})
    return "howto100m", src, "ht_a.start[0]"


def _coin_bad_segment(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"]["c1"]["annotation"][2]["segment"] = [5.0, 3.0]
    return "coin", _json(tmp_path / "coin.json", db), "database.c1.annotation[2].segment"


def _coin_no_database(tmp_path):
    return "coin", _json(tmp_path / "coin.json", {"c1": {}}), "database"


def _coin_bad_subset(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"]["c2"]["subset"] = "dev"
    return "coin", _json(tmp_path / "coin.json", db), "database.c2.subset"


def _coin_invalid_json(tmp_path):
    path = tmp_path / "coin.json"
    path.write_text('{"database": {"c1": ')
    return "coin", path, "invalid JSON"


def _youcook2_bad_sentence(tmp_path):
    db = json.loads(json.dumps(YOUCOOK2))
    db["database"]["y1"]["annotations"][1]["sentence"] = 42
    return "youcook2", _json(tmp_path / "yc2.json", db), "database.y1.annotations[1].sentence"


def _vript_no_caption(tmp_path):
    clip_id, scene = _scene("vX", 1, "x", [])
    del scene["caption"]
    return "vript", _json(tmp_path / "vX_caption.json", _vript_doc("vX", [(clip_id, scene)])), f"data.{clip_id}.caption"


def _surglavi_not_sqlite(tmp_path):
    path = tmp_path / "s.db"
    path.write_text("this is not a database, just text " * 10)
    return "surglavi", path, "not a SQLite database"


def _surglavi_missing_column(tmp_path):
    return "surglavi", _surglavi_db(tmp_path / "s.db", drop_column="is_descriptive"), "table captions"


def _surglavi_bad_time(tmp_path):
    caps = [P1, S1._replace(start="soon")]
    return "surglavi", _surglavi_db(tmp_path / "s.db", caps), "captions row caption_id=2: start_time"


def _surglavi_unknown_level(tmp_path):
    src = _surglavi_db(tmp_path / "s.db", [P1, S1._replace(level=9)])
    return "surglavi", src, "captions row caption_id=2: level_id"


HUGE = 10 ** 400  # a valid JSON integer that no float can hold
FINITE = "expected a finite number"
UNICODE = "not valid Unicode text"


def _howto_lone_surrogate(tmp_path):
    src = _json(tmp_path / "h.json", {"ht_a": {"start": [0], "end": [1], "text": ["bad \ud800 text"]}})
    return "howto100m", src, f"ht_a.text[0]: {UNICODE}"


def _coin_lone_surrogate_key(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"]["c\udc00"] = db["database"].pop("c3")
    return "coin", _json(tmp_path / "coin.json", db), f"database: key 'c\\udc00' is {UNICODE}"


def _coin_lone_surrogate_meta(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"]["c1"]["class"] = "Make\udfffTea"
    return "coin", _json(tmp_path / "coin.json", db), f"database.c1.class: {UNICODE}"


def _howto_huge_time(tmp_path):
    src = _json(tmp_path / "h.json", {"ht_a": {"start": [0], "end": [HUGE], "text": ["x"]}})
    return "howto100m", src, f"ht_a.end[0]: {FINITE}"


def _coin_huge_span(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"]["c1"]["annotation"][0]["segment"] = [0, HUGE]
    return "coin", _json(tmp_path / "coin.json", db), f"database.c1.annotation[0].segment[1]: {FINITE}"


def _coin_huge_duration(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"]["c2"]["duration"] = HUGE
    return "coin", _json(tmp_path / "coin.json", db), f"database.c2.duration: {FINITE}"


def _howto_blank_id(tmp_path):
    src = _json(tmp_path / "h.json", {"ht_a": HOWTO["ht_b"], "": HOWTO["ht_b"]})
    return "howto100m", src, "blank video id ''", "--keep-missing"


def _coin_blank_id(tmp_path):
    db = json.loads(json.dumps(COIN))
    db["database"][" "] = db["database"].pop("c3")
    return "coin", _json(tmp_path / "coin.json", db), "database: blank video id ' '", "--keep-missing"


def _vript_blank_clip_id(tmp_path):
    clip_id, scene = _scene("vX", 1, "x", [])
    scene["clip_id"] = " "
    src = _json(tmp_path / "vX_caption.json", _vript_doc("vX", [(clip_id, scene)]))
    return "vript", src, f"data.{clip_id}.clip_id: blank clip id"


def _surglavi_blank_video_id(tmp_path):
    src = _sql(_surglavi_db(tmp_path / "s.db"), "UPDATE videos SET video_id = ' ' WHERE rowid = 2")
    return "surglavi", src, "videos row rowid=2: video_id: blank", "--keep-missing"


def _surglavi_null_video_id(tmp_path):
    src = _sql(_surglavi_db(tmp_path / "s.db"), "UPDATE videos SET video_id = NULL WHERE rowid = 2")
    return "surglavi", src, "videos row rowid=2: video_id: missing (NULL)", "--keep-missing"


def _surglavi_null_caption_video_id(tmp_path):
    src = _sql(_surglavi_db(tmp_path / "s.db"), "UPDATE captions SET video_id = NULL WHERE caption_id = 3")
    return "surglavi", src, "captions row caption_id=3: video_id: missing (NULL)"


def _surglavi_blob_not_utf8(tmp_path):
    src = _sql(_surglavi_db(tmp_path / "s.db"), "UPDATE captions SET caption = X'FFFE' WHERE caption_id = 1")
    return "surglavi", src, "captions row caption_id=1: caption: BLOB is not UTF-8"


def _surglavi_infinite_fps(tmp_path):
    src = _sql(_surglavi_db(tmp_path / "s.db"), "UPDATE videos SET fps = 9e999 WHERE video_id = 'v1'")
    return "surglavi", src, f"videos row video_id=v1: fps: {FINITE}"


@pytest.mark.parametrize("make", [
    _howto_bad_lengths, _howto_bad_number, _coin_bad_segment, _coin_no_database, _coin_bad_subset,
    _coin_invalid_json, _youcook2_bad_sentence, _vript_no_caption, _surglavi_not_sqlite, _surglavi_missing_column,
    _surglavi_bad_time, _surglavi_unknown_level, _howto_lone_surrogate, _coin_lone_surrogate_key,
    _coin_lone_surrogate_meta, _howto_huge_time, _coin_huge_span, _coin_huge_duration, _howto_blank_id,
    _coin_blank_id, _vript_blank_clip_id, _surglavi_blank_video_id, _surglavi_null_video_id,
    _surglavi_null_caption_video_id, _surglavi_blob_not_utf8, _surglavi_infinite_fps,
], ids=lambda f: f.__name__.strip("_"))
def test_malformed_input_is_one_line(tmp_path, videos, capsys, make):
    fmt, src, where, *extra = make(tmp_path)
    _touch(videos, "ht_a", "c1", "c2", "y1", "vX-Scene-001", "v1")
    out = tmp_path / "out.jsonl"
    line = _one_line_error(capsys, [fmt, str(src), "--videos", str(videos), "--out", str(out), *extra])
    assert line.startswith(f"videolang manifest: error: {src}: ") and where in line, line
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_help_has_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["manifest", "build", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "example:\n  videolang manifest build " in text
    assert all(fmt in text for fmt in builders.BUILDERS)


def test_cli_rejects_surglavi_flags_for_other_formats(tmp_path, videos, capsys):
    code = main(["manifest", "build", "coin", str(_coin(tmp_path)), "--videos", str(videos),
                 "--out", str(tmp_path / "o.jsonl"), "--narration"])
    assert code == 2 and "only apply to the surglavi format" in capsys.readouterr().err


def test_cli_end_to_end(tmp_path, videos):
    _touch(videos, "c1", "c2")
    out = tmp_path / "coin.jsonl"
    cmd = [sys.executable, "-m", "videolang", "manifest", "build", "coin", str(_coin(tmp_path)),
           "--videos", str(videos), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    n_steps = sum(len(COIN["database"][v]["annotation"]) for v in ("c1", "c2"))
    assert res.stdout.splitlines()[:2] == [f"wrote 2 record(s) to {out}", f"segments: step={n_steps}"]
    assert "skipped 1 video(s) with no file" in res.stdout and "c3" in res.stdout
    assert "coin" in res.stderr and "video" in res.stderr  # the progress bar
    assert main(["manifest", "validate", str(out), "--check-files"]) == 0

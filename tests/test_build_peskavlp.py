"""`videolang manifest build peskavlp`: per-video narration and keystep CSVs (either naming convention, or
recognised by header) become narration + `step` segments; ASR noise is dropped and counted, curated
keysteps are fixed only where the schema needs it, and a bad cell is `FILE:LINE: FIELD: message`."""

from __future__ import annotations

from pathlib import Path

import pytest

from videolang.cli import main
from videolang.data.builders import BuildError, build_manifest
from videolang.data.builders.peskavlp import NARRATION_CUT, NARRATION_DROPPED, NARRATION_LATE, find_videos
from videolang.data.manifest import check_manifest, clip_pairs
from build_helpers import (
    assert_valid as _assert_valid,
    options as _opts,
    read_out as _read,
    rel as _rel,
    touch as _touch,
    write_clip as _write_clip,
)



# --------------------------------------------------------------------------------------------------
# Helpers (copied from test_manifest_build.py)


def _csv(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------------------------------
# A small corpus using every convention

ABSTRACT = "Laparoscopic cholecystectomy in a patient with acute cholecystitis."


def _source(tmp_path: Path, videos: Path) -> Path:
    src = tmp_path / "peskavlp"
    # lap01: suffix convention, with a real 12 s video (48 frames at 4 fps), so spans are cut at its end.
    _csv(src / "lap01_narration.csv", "start,end,text",
         "0,4.5,we start by opening the peritoneum",
         "5,5,zero length",
         "6,9,   ",
         "8,11,now the cystic duct is dissected",
         "10,14,clipping the cystic artery",  # cut at 12
         "13,15,after the end")  # dropped
    _csv(src / "lap01_keysteps.csv", "start,end,step,text",
         "0,5,1,dissection of Calot's triangle",
         "4,8,2,clipping and cutting",  # overlaps step 1: starts at 5
         "8,14,3,gallbladder dissection",  # cut at 12
         "12.5,13,4,gallbladder packaging")  # starts after the end: dropped
    (src / "lap01_abstract.txt").write_text(f"\n{ABSTRACT}\n")
    # lap02: folder convention; its video file cannot be probed, so it has no duration and nothing is cut.
    _csv(src / "narration" / "lap02.csv", "Start,End,Text", "1.5,3.25,hello everyone", "20,30,late but kept")
    _csv(src / "keysteps" / "lap02.csv", "start,end,step,text", "0,10,preparation,", "10,40,closure,suturing")
    # lap03 / lap04: plain names, recognised by header; lap03 has keysteps only, lap04 narration only.
    _csv(src / "more" / "lap03.csv", "start,end,step,text", "2,6,7,irrigation")
    _csv(src / "more" / "lap04.csv", "start,end,text", "0,2,only narration here")
    # lap05: no video file at all.
    _csv(src / "lap05_keysteps.csv", "start,end,step,text", "0,1,1,nothing to see")
    _write_clip(videos / "lap01.mp4", 48, 4)
    _touch(videos / "sub", "lap02", "lap03")
    _touch(videos, "lap04")
    return src


def test_pairs_files_by_either_convention(tmp_path, videos):
    src = _source(tmp_path, videos)
    found = find_videos(src)
    assert sorted(found) == ["lap01", "lap02", "lap03", "lap04", "lap05"]
    assert found["lap01"].tables == {"narration": src / "lap01_narration.csv", "keysteps": src / "lap01_keysteps.csv"}
    assert found["lap01"].abstract == src / "lap01_abstract.txt"
    assert found["lap02"].tables == {"narration": src / "narration" / "lap02.csv",
                                     "keysteps": src / "keysteps" / "lap02.csv"}
    assert found["lap03"].tables == {"keysteps": src / "more" / "lap03.csv"}
    assert found["lap04"].tables == {"narration": src / "more" / "lap04.csv"}
    # A CSV that neither its name nor its header marks as ours (a split list) is left out, and listed.
    _csv(src / "splits.csv", "video,split", "lap01,train")
    ignored: list = []
    assert sorted(find_videos(src, ignored)) == sorted(found) and ignored == [src / "splits.csv"]


def test_peskavlp_records(tmp_path, videos):
    src = _source(tmp_path, videos)
    out = tmp_path / "out" / "peskavlp.jsonl"
    report = build_manifest("peskavlp", src, out, _opts(videos))
    records = _read(out)
    assert list(records) == ["lap01", "lap02", "lap03", "lap04"]

    lap01 = records["lap01"]
    duration = lap01["duration"]
    assert duration == pytest.approx(12.0, abs=1e-3)
    assert lap01 == {
        "video_id": "lap01", "path": _rel(videos / "lap01.mp4", out), "split": "train", "corpus": "peskavlp",
        "duration": duration, "meta": {"abstract": ABSTRACT},
        "segments": [
            {"level": "step", "start": 0.0, "end": 5.0, "label": "1", "caption": "dissection of Calot's triangle"},
            {"level": "step", "start": 5.0, "end": 8.0, "label": "2", "caption": "clipping and cutting"},
            {"level": "step", "start": 8.0, "end": duration, "label": "3", "caption": "gallbladder dissection"},
        ],
        "narration": [
            {"start": 0.0, "end": 4.5, "text": "we start by opening the peritoneum"},
            {"start": 8.0, "end": 11.0, "text": "now the cystic duct is dissected"},
            {"start": 10.0, "end": duration, "text": "clipping the cystic artery"},
        ],
    }
    assert records["lap02"] == {
        "video_id": "lap02", "path": _rel(videos / "sub" / "lap02.mp4", out), "split": "train", "corpus": "peskavlp",
        "segments": [
            {"level": "step", "start": 0.0, "end": 10.0, "label": "preparation"},  # empty text: label only
            {"level": "step", "start": 10.0, "end": 40.0, "label": "closure", "caption": "suturing"},
        ],
        "narration": [{"start": 1.5, "end": 3.25, "text": "hello everyone"},
                      {"start": 20.0, "end": 30.0, "text": "late but kept"}],
    }
    assert records["lap03"]["segments"] == [
        {"level": "step", "start": 2.0, "end": 6.0, "label": "7", "caption": "irrigation"}]
    assert "narration" not in records["lap03"] and "meta" not in records["lap03"]
    assert records["lap04"]["narration"] == [{"start": 0.0, "end": 2.0, "text": "only narration here"}]
    assert "segments" not in records["lap04"]

    assert report.missing == ["lap05"]
    assert report.dropped == {NARRATION_DROPPED: 2, NARRATION_LATE: 1, "step(s) starting after the video's end": 1}
    assert report.fixed == {NARRATION_CUT: 1, "step(s) cut at the video's end": 1, "step overlap(s) trimmed": 1}
    assert report.segments == {"step": 6} and report.narration == 6
    _assert_valid(out)
    # The steps serve both retrieval (captioned ones) and recognition (all, by label).
    loaded, _, _ = check_manifest(out)
    assert [p.caption for p in clip_pairs(loaded, "step") if p.video_id == "lap02"] == ["suturing"]


def test_cli_build_with_split_and_single_file(tmp_path, videos, capsys):
    _source(tmp_path, videos)
    out = tmp_path / "cli.jsonl"
    src = tmp_path / "peskavlp" / "more" / "lap03.csv"
    assert main(["manifest", "build", "peskavlp", str(src), "--videos", str(videos), "--out", str(out),
                 "--split", "test", "--no-progress"]) == 0
    assert "wrote 1 record(s)" in capsys.readouterr().out
    records = _read(out)
    assert list(records) == ["lap03"] and records["lap03"]["split"] == "test"
    _assert_valid(out)


# --------------------------------------------------------------------------------------------------
# Errors name the file and line


def _build_error(tmp_path: Path, videos: Path, files: dict[str, list[str]]) -> str:
    src = tmp_path / "bad"
    for name, lines in files.items():
        _csv(src / name, *lines)
    _touch(videos, "v1")
    with pytest.raises(BuildError) as e:
        build_manifest("peskavlp", src, tmp_path / "o.jsonl", _opts(videos))
    assert not (tmp_path / "o.jsonl").exists()
    return str(e.value)


@pytest.mark.parametrize("name, lines, where, message", [
    ("v1_keysteps.csv", ["start,end,step,text", "0,1,1,a", "1,2,2,b", "x,4,3,c"], 4,
     "start: expected a number, got 'x'"),
    ("v1_keysteps.csv", ["start,end,step,text", "", "5,2,1,a"], 3, "end: end 2 must be greater than start 5"),
    ("v1_keysteps.csv", ["start,end,step,text", "0,1,,a"], 2, "step: empty"),
    ("v1_keysteps.csv", ["start,end,step,text", "-1,1,1,a"], 2, "start: negative time -1"),
    ("v1_keysteps.csv", ["start,end,step", "0,1,1"], 1, "header: expected columns start, end, step, text"),
    ("v1_narration.csv", ["start,end,text", "0,1,ok", "0,soon,bad"], 3, "end: expected a number, got 'soon'"),
    ("v1_narration.csv", ["start,end,text", "0,1"], 2, "text: missing"),
    ("v1_narration.csv", ["start,end,step,text", "0,1,1,a"], 1, "header: the file's name says narration"),
    ("keysteps/v1.csv", ["start,end,text", "0,1,a"], 1, "header: the file's name says keysteps"),
])
def test_bad_cell_is_file_line_field(tmp_path, videos, name, lines, where, message):
    error = _build_error(tmp_path, videos, {name: lines})
    assert error.startswith(f"{tmp_path / 'bad' / name}:{where}: {message}"), error


def test_two_files_of_one_kind_is_an_error(tmp_path, videos):
    error = _build_error(tmp_path, videos, {"v1_narration.csv": ["start,end,text", "0,1,a"],
                                            "narration/v1.csv": ["start,end,text", "0,1,a"]})
    assert "second narration file for video 'v1'" in error and "v1_narration.csv" in error


def test_folder_without_csv_is_an_error(tmp_path, videos):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="no \\*.csv files"):
        build_manifest("peskavlp", tmp_path / "empty", tmp_path / "o.jsonl", _opts(videos))

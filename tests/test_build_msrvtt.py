"""`videolang manifest build msrvtt`: the annotation JSON and the 1k-A test CSV become one record per clip
with one whole-clip `clip` segment captioned by its first sentence and every sentence in `meta.captions`,
so retrieval sees one candidate and one query per video; bad values name their key path or line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from videolang.cli import main
from videolang.data.builders import BuildError, build_manifest
from videolang.data.builders.msrvtt import DUPLICATE, EMPTY, NO_CAPTION, UNKNOWN_VIDEO, UNREADABLE
from videolang.data.manifest import check_manifest, clip_pairs
from videolang.errors import VideolangError
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
# Helpers (copied from test_manifest_build.py)


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------------------------------
# The annotation JSON


def _video(n: int, start: float, end: float, split: str, category: int) -> dict:
    return {"category": category, "url": f"https://www.youtube.com/watch?v=yt{n}", "video_id": f"video{n}",
            "start time": start, "end time": end, "split": split, "id": n}


def _sentences(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"caption": c, "video_id": v, "sen_id": i} for i, (v, c) in enumerate(pairs)]


VIDEOS = [
    _video(0, 137.72, 149.44, "train", 9),
    _video(1, 184.33, 206.89, "validate", 16),
    _video(2, 31.17, 41.24, "test", 9),  # no sentence: skipped
    _video(3, 0.0, 15.5, "test", 3),  # no file: missing
    _video(4, 10.0, 20.0, "test", 14),
]
SENTENCES = _sentences([
    ("video0", "a car is shown"),
    ("video1", "a woman is cooking in a kitchen"),
    ("video0", "a red car drives down the road "),  # stripped
    ("video99", "nobody owns me"),  # unknown video id
    ("video1", "a woman is cooking in a kitchen"),  # repeat, merged
    ("video1", "   "),  # empty, dropped
    ("video3", "no file for me"),
    ("video1", "someone prepares food"),
    ("video4", "a man talks"),
    ("video0", "a car commercial"),
])


def _source(tmp_path: Path, videos: Path) -> Path:
    _touch(videos, "video0", "video1", "video2")
    _touch(videos / "test", "video4")
    return _json(tmp_path / "MSRVTT_data.json", {"info": {"year": 2016}, "videos": VIDEOS, "sentences": SENTENCES})


def _clip(end: float, caption: str) -> list[dict]:
    return [{"level": "clip", "start": 0.0, "end": end, "caption": caption}]


def test_msrvtt_json_records(tmp_path, videos):
    src = _source(tmp_path, videos)
    out = tmp_path / "out" / "msrvtt.jsonl"
    report = build_manifest("msrvtt", src, out, _opts(videos))
    records = _read(out)
    assert list(records) == ["video0", "video1", "video4"]
    captions0 = ["a car is shown", "a red car drives down the road", "a car commercial"]
    assert records["video0"] == {
        "video_id": "video0", "path": _rel(videos / "video0.mp4", out), "split": "train", "corpus": "msrvtt",
        "duration": 11.72,
        "meta": {"source_span": [137.72, 149.44], "category": 9, "url": "https://www.youtube.com/watch?v=yt0",
                 "captions": captions0},
        "segments": _clip(11.72, "a car is shown"),
    }
    video1 = records["video1"]
    assert video1["split"] == "val" and video1["duration"] == 22.56
    assert video1["meta"]["captions"] == ["a woman is cooking in a kitchen", "someone prepares food"]
    assert video1["segments"] == _clip(22.56, "a woman is cooking in a kitchen")
    assert records["video4"]["split"] == "test" and records["video4"]["meta"]["category"] == 14
    assert records["video4"]["path"] == _rel(videos / "test" / "video4.mp4", out)

    assert report.missing == ["video3"]
    assert report.skipped == {NO_CAPTION: 1}
    assert report.dropped == {UNKNOWN_VIDEO: 1, DUPLICATE: 1, EMPTY: 1}
    assert report.segments == {"clip": 3}
    _assert_valid(out)


def test_cli_build_with_split_override(tmp_path, videos, capsys):
    src = _source(tmp_path, videos)
    out = tmp_path / "cli.jsonl"
    assert main(["manifest", "build", "msrvtt", str(src), "--videos", str(videos), "--out", str(out),
                 "--split", "all", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 record(s)" in printed and "1 video(s) with no caption" in printed
    assert {r["split"] for r in _read(out).values()} == {"all"}
    _assert_valid(out)


# --------------------------------------------------------------------------------------------------
# Several captions per video, as retrieval sees them


def test_clip_pairs_give_one_pair_per_video_with_its_first_caption(tmp_path, videos):
    out = tmp_path / "m.jsonl"
    build_manifest("msrvtt", _source(tmp_path, videos), out, _opts(videos))
    loaded, _, _ = check_manifest(out)
    pairs = clip_pairs(loaded, "clip")
    assert [(p.video_id, p.caption, p.start, p.end) for p in pairs] == [
        ("video0", "a car is shown", 0.0, 11.72),
        ("video1", "a woman is cooking in a kitchen", 0.0, 22.56),
        ("video4", "a man talks", 0.0, 10.0),
    ]
    assert [p.video_id for p in clip_pairs(loaded, "clip", split="val")] == ["video1"]
    # Every caption is still there for training that samples one per step.
    assert {r.video_id: len(r.meta["captions"]) for r in loaded} == {"video0": 3, "video1": 2, "video4": 1}


def test_run_retrieval_scores_a_perfect_model_100(tmp_path, videos, monkeypatch):
    """An oracle that knows every caption of a video: with one candidate and one query per video, R@1 is
    100 both ways (one segment per caption would make identical candidates that count as misses)."""
    from videolang.eval import tasks

    out = tmp_path / "m.jsonl"
    build_manifest("msrvtt", _source(tmp_path, videos), out, _opts(videos))
    loaded, _, _ = check_manifest(out)
    index = {r.video_id: i for i, r in enumerate(loaded)}
    owner = {c: index[r.video_id] for r in loaded for c in r.meta["captions"]}
    seen: dict[str, list] = {}

    def fake_clip_embeddings(encode, pairs, **_):
        seen["clips"] = [p.video_id for p in pairs]
        return SimpleNamespace(embeddings=torch.eye(len(loaded))[[index[p.video_id] for p in pairs]],
                               kept=list(range(len(pairs))), failed={})

    def fake_text_embeddings(encode, captions, batch_size):
        seen["captions"] = list(captions)
        return torch.eye(len(loaded))[[owner[c] for c in captions]]

    monkeypatch.setattr(tasks, "clip_embeddings", fake_clip_embeddings)
    monkeypatch.setattr(tasks, "text_embeddings", fake_text_embeddings)
    model = SimpleNamespace(require_text=lambda why: SimpleNamespace(encode_text=None), encode_video=None,
                            image_size=32)
    results = tasks.run_retrieval(model, loaded, tasks.EvalOptions(level="clip", progress=False), tmp_path)
    assert seen["clips"] == ["video0", "video1", "video4"]
    assert seen["captions"] == ["a car is shown", "a woman is cooking in a kitchen", "a man talks"]
    assert results["clips"] == 3 and results["captions"] == 3
    assert results["t2v"]["R@1"] == 100.0 and results["v2t"]["R@1"] == 100.0


# --------------------------------------------------------------------------------------------------
# The 1k-A test CSV


def _test_csv(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "MSRVTT_JSFUSION_test.csv"
    path.write_text("\n".join(["key,vid_key,video_id,sentence", *rows]) + "\n")
    return path


def test_msrvtt_1k_a_csv(tmp_path, videos):
    src = _test_csv(tmp_path,
                    "ret0,msr9770,video9770,a person is connecting something to system",
                    "ret1,msr7024,video7024,a little girl does gymnastics",  # empty file: unreadable
                    'ret2,msr9731,video9731,"a woman, singing on stage"',  # no file
                    "ret3,msr9770,video9770,someone plugs in a cable")  # second caption of video9770
    _write_clip(videos / "video9770.mp4", 10, 4)
    _touch(videos, "video7024")
    out = tmp_path / "1k.jsonl"
    report = build_manifest("msrvtt", src, out, _opts(videos))
    records = _read(out)
    assert list(records) == ["video9770"]
    rec = records["video9770"]
    duration = rec["duration"]
    assert duration == pytest.approx(2.5, abs=1e-3)
    assert rec == {
        "video_id": "video9770", "path": _rel(videos / "video9770.mp4", out), "split": "test", "corpus": "msrvtt",
        "duration": duration,
        "meta": {"captions": ["a person is connecting something to system", "someone plugs in a cable"]},
        "segments": _clip(duration, "a person is connecting something to system"),
    }
    assert report.missing == ["video9731"] and report.skipped == {UNREADABLE: 1}
    _assert_valid(out)


def test_csv_refuses_keep_missing(tmp_path, videos):
    src = _test_csv(tmp_path, "ret0,msr1,video1,a cat")
    with pytest.raises(VideolangError, match="--keep-missing"):
        build_manifest("msrvtt", src, tmp_path / "o.jsonl", _opts(videos, keep_missing=True))


@pytest.mark.parametrize("rows, where, message", [
    (["ret0,msr1,video1,a cat", ",msr2,,a dog"], 3, "video_id: empty"),
    (["ret0,msr1,video1,a cat", "ret1,msr2,video2,a dog", "ret2,msr3,video3,a,b"], 4, "sentence: 5 cells"),
    (["ret0,msr1,video1"], 2, "sentence: missing"),
])
def test_csv_bad_row_is_file_line_field(tmp_path, videos, rows, where, message):
    src = _test_csv(tmp_path, *rows)
    with pytest.raises(BuildError) as e:
        build_manifest("msrvtt", src, tmp_path / "o.jsonl", _opts(videos))
    assert str(e.value).startswith(f"{src}:{where}: {message}"), str(e.value)


# --------------------------------------------------------------------------------------------------
# JSON errors name the key path


def _with(video: dict, sentence: dict) -> dict:
    """The fixture with `{index: (key, value)}` changes to its videos and sentences."""
    doc = {"videos": json.loads(json.dumps(VIDEOS)), "sentences": json.loads(json.dumps(SENTENCES))}
    for part, changes in (("videos", video), ("sentences", sentence)):
        for index, (key, value) in changes.items():
            doc[part][index][key] = value
    return doc


@pytest.mark.parametrize("video, sentence, where, message", [
    ({1: ("start time", "184.33")}, {}, "videos[1].start time", "expected a number, got a string"),
    ({0: ("end time", 137.72)}, {}, "videos[0].end time", "must be greater than start time 137.72, got 137.72"),
    ({3: ("split", "dev")}, {}, "videos[3].split", "unknown split 'dev'; expected one of train, validate, test"),
    ({2: ("video_id", "video0")}, {}, "videos[2].video_id",
     "video id 'video0' appears twice (also videos[0].video_id)"),
    ({4: ("video_id", None)}, {}, "videos[4].video_id", "missing required key"),
    ({}, {2: ("caption", None)}, "sentences[2].caption", "missing required key"),
    ({}, {5: ("video_id", 1)}, "sentences[5].video_id", "expected a string, got a number"),
])
def test_json_error_names_key_path(tmp_path, videos, video, sentence, where, message):
    src = _json(tmp_path / "bad.json", _with(video, sentence))
    _touch(videos, "video0", "video1", "video2", "video4")
    with pytest.raises(BuildError) as e:
        build_manifest("msrvtt", src, tmp_path / "o.jsonl", _opts(videos))
    assert str(e.value) == f"{src}: {where}: {message}"


def test_json_without_sentences_is_an_error(tmp_path, videos):
    src = _json(tmp_path / "bad.json", {"videos": VIDEOS})
    with pytest.raises(BuildError, match="sentences: missing required key"):
        build_manifest("msrvtt", src, tmp_path / "o.jsonl", _opts(videos))

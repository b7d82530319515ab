"""Manifest validation: every malformed case names the exact line and field; valid trees round-trip."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videolang.cli import main
from videolang.data.manifest import (
    LEVELS,
    clip_pairs,
    frame_labels,
    frame_times,
    load_manifest,
    validate_manifest,
    write_manifest,
)
from videolang.errors import ManifestError

GOOD = {
    "video_id": "v0",
    "path": "v0.mp4",
    "split": "train",
    "duration": 100.0,
    "segments": [
        {
            "level": "phase", "start": 0.0, "end": 50.0, "label": "a", "caption": "phase a",
            "children": [
                {"level": "step", "start": 0.0, "end": 20.0, "caption": "step one",
                 "children": [{"level": "task", "start": 1.0, "end": 5.0, "caption": "task x"}]},
                {"level": "step", "start": 20.0, "end": 50.0, "caption": "step two"},
            ],
        },
        {"level": "phase", "start": 50.0, "end": 100.0, "label": "b", "caption": "phase b"},
    ],
    "narration": [{"start": 1.0, "end": 3.0, "text": "hello"}],
}


def _write(tmp_path: Path, records: list, name: str = "m.jsonl") -> Path:
    path = tmp_path / name
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def _bad(mutate) -> dict:
    rec = copy.deepcopy(GOOD)
    rec["video_id"] = "v1"
    mutate(rec)
    return rec


def _problems_on_line2(tmp_path: Path, bad, **kw) -> list[str]:
    path = _write(tmp_path, [GOOD, bad])
    problems, _ = validate_manifest(path, **kw)
    assert problems, "expected a problem"
    prefix = f"{path}:2: "
    assert all(p.startswith(prefix) for p in problems), problems
    return [p[len(prefix):] for p in problems]


def _fields(problems: list[str]) -> list[str]:
    return [p.split(": ", 1)[0] for p in problems]


def test_good_manifest_has_no_problems(tmp_path):
    (tmp_path / "v0.mp4").write_bytes(b"x")
    path = _write(tmp_path, [GOOD])
    problems, warnings = validate_manifest(path, check_files=True)
    assert problems == [] and warnings == []
    (video,) = load_manifest(path)
    assert video.resolved_path == (tmp_path / "v0.mp4").resolve() or video.resolved_path == tmp_path / "v0.mp4"
    assert [s.segment_id for s in video.iter_segments()] == ["0", "0.0", "0.0.0", "0.1", "1"]


def test_invalid_json(tmp_path):
    (p,) = _problems_on_line2(tmp_path, '{"video_id": "v1", "path": }')
    assert p.startswith("<json>: invalid JSON")


def test_not_an_object(tmp_path):
    assert _fields(_problems_on_line2(tmp_path, "[1, 2]")) == ["<record>"]


@pytest.mark.parametrize("key", ["video_id", "path"])
def test_missing_required(tmp_path, key):
    problems = _problems_on_line2(tmp_path, _bad(lambda r: r.pop(key)))
    assert problems == [f"{key}: missing required field"]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.update(duration="long"), "duration"),
        (lambda r: r.update(video_id=7), "video_id"),
        (lambda r: r["segments"][0].update(start="0"), "segments[0].start"),
        (lambda r: r["segments"][0]["children"][1].update(caption=3), "segments[0].children[1].caption"),
        (lambda r: r.update(segments={"level": "phase"}), "segments"),
        (lambda r: r.update(meta=[1]), "meta"),
        (lambda r: r["narration"][0].update(end=None), "narration[0].end"),
    ],
)
def test_mistyped_fields(tmp_path, mutate, field):
    assert _fields(_problems_on_line2(tmp_path, _bad(mutate))) == [field]


def test_duplicate_video_id(tmp_path):
    problems = _problems_on_line2(tmp_path, _bad(lambda r: r.update(video_id="v0")))
    assert problems == ["video_id: duplicate video_id 'v0' (first on line 1)"]


def test_end_not_after_start(tmp_path):
    bad = _bad(lambda r: r["segments"][1].update(start=60.0, end=60.0))
    assert _fields(_problems_on_line2(tmp_path, bad)) == ["segments[1].end"]


def test_negative_time(tmp_path):
    bad = _bad(lambda r: r["narration"][0].update(start=-1.0))
    assert _fields(_problems_on_line2(tmp_path, bad)) == ["narration[0].start"]


def test_segment_past_duration(tmp_path):
    bad = _bad(lambda r: r["segments"][1].update(end=120.0))
    problems = _problems_on_line2(tmp_path, bad)
    assert _fields(problems) == ["segments[1].end"]
    assert "duration" in problems[0]


def test_unknown_level_suggests(tmp_path):
    bad = _bad(lambda r: r["segments"][1].update(level="phsae"))
    (p,) = _problems_on_line2(tmp_path, bad)
    assert p.startswith("segments[1].level: unknown level 'phsae'") and "did you mean 'phase'" in p


def test_child_not_finer(tmp_path):
    bad = _bad(lambda r: r["segments"][0]["children"][0].update(level="phase"))
    fields = _fields(_problems_on_line2(tmp_path, bad))
    assert "segments[0].children[0].level" in fields


def test_child_outside_parent(tmp_path):
    bad = _bad(lambda r: r["segments"][0]["children"][1].update(end=55.0))
    assert _fields(_problems_on_line2(tmp_path, bad)) == ["segments[0].children[1].end"]
    bad = _bad(lambda r: r["segments"][0]["children"][0]["children"][0].update(start=0.0, end=25.0))
    assert _fields(_problems_on_line2(tmp_path, bad)) == ["segments[0].children[0].children[0].end"]


def test_overlapping_siblings(tmp_path):
    bad = _bad(lambda r: r["segments"][1].update(start=40.0))
    (p,) = _problems_on_line2(tmp_path, bad)
    assert p.startswith("segments[1].start: phase [40.0, 100.0) overlaps sibling segments[0]")


def test_overlapping_clips_are_allowed(tmp_path):
    rec = {"video_id": "c", "path": "c.mp4", "segments": [
        {"level": "clip", "start": 0, "end": 10, "caption": "a"},
        {"level": "clip", "start": 5, "end": 15, "caption": "b"}]}
    problems, _ = validate_manifest(_write(tmp_path, [rec]))
    assert problems == []


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_caption(tmp_path, text):
    bad = _bad(lambda r: r["segments"][0]["children"][0].update(caption=text))
    assert _problems_on_line2(tmp_path, bad) == ["segments[0].children[0].caption: must not be empty"]


def test_segment_needs_caption_or_label(tmp_path):
    bad = _bad(lambda r: r["segments"][1].pop("caption") and r["segments"][1].pop("label"))
    assert _fields(_problems_on_line2(tmp_path, bad)) == ["segments[1]"]
    bad = _bad(lambda r: r["segments"][1].update(caption=None, label=None))
    assert _fields(_problems_on_line2(tmp_path, bad)) == ["segments[1]"]


def test_huge_number_is_a_problem_not_a_crash(tmp_path):
    bad = _bad(lambda r: r.update(duration=10**400))
    assert _problems_on_line2(tmp_path, bad) == ["duration: must be a finite number"]


def test_missing_file_is_warning_unless_checked(tmp_path):
    path = _write(tmp_path, [GOOD])
    problems, warnings = validate_manifest(path)
    assert problems == [] and len(warnings) == 1 and f"{path}:1: path: file not found" in warnings[0]
    problems, _ = validate_manifest(path, check_files=True)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:1: path: file not found")


def test_video_root_overrides_base(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "v0.mp4").write_bytes(b"x")
    path = _write(tmp_path, [GOOD])
    assert validate_manifest(path, check_files=True, video_root=root)[0] == []


def test_every_problem_is_reported(tmp_path):
    def mutate(r):
        r["segments"][0].update(end=-5.0)
        r["segments"][1].update(level="stage")
        r["narration"][0].update(text="")
        r.pop("path")

    fields = _fields(_problems_on_line2(tmp_path, _bad(mutate)))
    assert sorted(fields) == sorted(["path", "segments[0].end", "segments[1].level", "narration[0].text"])


def test_unknown_field_warns_with_suggestion(tmp_path):
    rec = copy.deepcopy(GOOD)
    rec["segments"][0]["captoin"] = "typo"
    problems, warnings = validate_manifest(_write(tmp_path, [rec]))
    assert problems == []
    assert any("segments[0].captoin: unknown field, ignored (did you mean 'caption'?)" in w for w in warnings)


def test_empty_and_missing_manifest(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert validate_manifest(empty)[0] == [f"{empty}:0: <file>: manifest is empty"]
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")


def test_load_raises_with_all_problems(tmp_path):
    path = _write(tmp_path, [GOOD, "{", _bad(lambda r: r.pop("path"))])
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [p.split(": ")[0] for p in info.value.problems] == [f"{path}:2", f"{path}:3"]


def test_cli_validate_exit_codes(tmp_path, capsys):
    good = _write(tmp_path, [GOOD], "good.jsonl")
    bad = _write(tmp_path, [GOOD, _bad(lambda r: r["segments"][1].update(end=10.0))], "bad.jsonl")
    assert main(["manifest", "validate", str(good), "--quiet"]) == 0
    assert main(["manifest", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: segments[1].end: end 10.0 must be greater than start 50.0" in err
    assert main(["manifest", "stats", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"videolang manifest: error: {bad}:2: segments[1].end")


def test_cli_stats(tmp_path, capsys):
    path = _write(tmp_path, [GOOD])
    assert main(["manifest", "stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["videos"] == 1
    assert stats["levels"]["phase"]["segments"] == 2 and stats["levels"]["task"]["segments"] == 1
    assert stats["narration"]["sentences"] == 1


def test_shipped_examples_are_valid():
    root = Path(__file__).resolve().parents[1] / "data_manifests"
    files = sorted(root.glob("*.jsonl"))
    assert len(files) >= 3
    for f in files:
        assert validate_manifest(f)[0] == [], f


def test_shipped_examples_match_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    root = Path(__file__).resolve().parents[1] / "data_manifests"
    schema = json.loads((root / "schema.json").read_text())
    for f in sorted(root.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            jsonschema.validate(json.loads(line), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"video_id": "x", "path": "p", "segments": [{"level": "scene", "start": 0, "end": 1}]}, schema)


# --------------------------------------------------------------------------------------------------
# Derived views


def test_clip_pairs_per_level(tmp_path):
    videos = load_manifest(_write(tmp_path, [GOOD]))
    assert [p.caption for p in clip_pairs(videos, "phase")] == ["phase a", "phase b"]
    assert [p.caption for p in clip_pairs(videos, "step")] == ["step one", "step two"]
    (task,) = clip_pairs(videos, "task")
    assert (task.start, task.end, task.segment_id) == (1.0, 5.0, "0.0.0")
    assert [p.caption for p in clip_pairs(videos, "narration")] == ["hello"]
    assert clip_pairs(videos, "phase", split="val") == []
    with pytest.raises(ValueError):
        clip_pairs(videos, "scene")


def _labels_brute_force(video, level, fps, background="background"):
    out = []
    for t in frame_times(video.span_end, fps):
        hits = [s.label or s.caption for s in video.iter_segments(level) if s.start <= t < s.end]
        out.append(hits[0] if hits else background)
    return out


@pytest.mark.parametrize("level, fps", [("phase", 1.0), ("step", 2.0), ("task", 4.0), ("phase", 0.3)])
def test_frame_labels_match_brute_force(tmp_path, level, fps):
    (video,) = load_manifest(_write(tmp_path, [GOOD]))
    labels = frame_labels(video, level, fps)
    assert len(labels) == int(100 * fps)
    assert labels == _labels_brute_force(video, level, fps)


# --------------------------------------------------------------------------------------------------
# Property test: random valid hierarchies round-trip through write -> validate -> load -> to_dict

_times = st.integers(min_value=0, max_value=10_000).map(lambda x: x / 8)  # exact binary fractions


@st.composite
def _segments(draw, level_idx: int, start: float, end: float, depth: int) -> list[dict]:
    """Non-overlapping children of [start, end) at a level at or finer than LEVELS[level_idx]."""
    n = draw(st.integers(0, 3 if depth < 3 else 0))
    cuts = sorted(draw(st.lists(st.floats(start, end), min_size=2 * n, max_size=2 * n, unique=True)))
    out = []
    for i in range(n):
        s, e = round(cuts[2 * i], 3), round(cuts[2 * i + 1], 3)
        if e - s < 0.01:
            continue
        level = LEVELS[draw(st.integers(level_idx, 2))]  # phase/step/task, never overlapping
        seg = {"level": level, "start": s, "end": e}
        if draw(st.booleans()):
            seg["label"] = draw(st.sampled_from(["cut", "clip", "suture", "idle"]))
        if draw(st.booleans()) or "label" not in seg:
            seg["caption"] = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(str.strip))
        if draw(st.booleans()):
            seg["script"] = {"shot_type": "close-up", "camera_movement": "static"}
        children = draw(_segments(LEVELS.index(level) + 1, s, e, depth + 1)) if LEVELS.index(level) < 2 else []
        if children:
            seg["children"] = children
        out.append(seg)
    return out


@st.composite
def _records(draw) -> list[dict]:
    n = draw(st.integers(1, 4))
    records = []
    for i in range(n):
        duration = draw(st.integers(10, 2000)) / 4
        rec = {"video_id": f"vid-{i}", "path": f"videos/{i}.mp4", "split": draw(st.sampled_from(["train", "val"])),
               "duration": duration}
        segs = draw(_segments(0, 0.0, duration, 0))
        if segs:
            rec["segments"] = segs
        if draw(st.booleans()):
            s = draw(st.floats(0, duration / 2))
            rec["narration"] = [{"start": round(s, 3), "end": round(s, 3) + 1.0, "text": "so now we cut"}]
        records.append(rec)
    return records


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records())
def test_random_hierarchies_round_trip(tmp_path, records):
    path = tmp_path / "rt.jsonl"
    write_manifest(records, path)
    problems, _ = validate_manifest(path)
    assert problems == []
    loaded = load_manifest(path)
    assert [v.to_dict() for v in loaded] == records
    write_manifest(loaded, tmp_path / "rt2.jsonl")
    assert (tmp_path / "rt2.jsonl").read_text() == path.read_text()


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    from videolang.data.manifest import validate_manifest

    path = tmp_path / "m.jsonl"
    good = b'{"video_id": "a", "path": "a.mp4", "narration": [{"start": 0, "end": 1, "text": "hi"}]}\n'
    path.write_bytes(good + b'{"video_id": "b\xff", "path": "b.mp4"}\n' + good.replace(b'"a', b'"c'))
    problems, _ = validate_manifest(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2: <file>: not UTF-8 text")
    from videolang.data.manifest import check_manifest

    records, _, _ = check_manifest(path)
    assert [r.video_id for r in records] == ["a", "c"]  # reading goes on after the bad line

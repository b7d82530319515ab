"""`videolang manifest build mstcn`: an MS-TCN action-segmentation folder (groundTruth/, mapping.txt,
splits/) becomes one record per video of labelled `step`s at frame / fps; background labels are left
uncovered (and counted), the fold's bundles give the split, and every bad line is `FILE:LINE: FIELD`."""

from __future__ import annotations

from pathlib import Path

import pytest

from videolang.cli import main
from videolang.data.builders import build_manifest
from videolang.data.builders.common import BuildError
from videolang.data.builders.mstcn import BACKGROUND_NOTE, NO_FOLD
from build_helpers import assert_valid as _assert_valid, options as _opts, read_out as _read, touch as _touch



# --------------------------------------------------------------------------------------------------
# Helpers (copied from test_manifest_build.py)


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _frames(runs: list[tuple[str, int]]) -> list[str]:
    return [label for label, n in runs for _ in range(n)]


def _steps(record: dict) -> list[tuple]:
    assert all(s["level"] == "step" and "children" not in s for s in record["segments"])
    return [(s["label"], s["caption"], s["start"], s["end"]) for s in record["segments"]]


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------------------------------
# A Breakfast-like folder

MAPPING = ["0 SIL", "1 take_bowl", "2 pour_cereals", "3 pour_milk", "4 stir_cereals"]
P03 = "P03_cam01_P03_cereals"  # SIL at the start, in the middle and at the end
P04 = "P04_webcam02_P04_cereals"  # no background
P05 = "P05_cam01_P05_cereals"  # SIL, one step, SIL
P06 = "P06_cam01_P06_cereals"  # only SIL: no step, skipped
GT = {
    P03: [("SIL", 5), ("take_bowl", 10), ("pour_cereals", 20), ("SIL", 3), ("pour_milk", 12), ("stir_cereals", 7),
          ("SIL", 4)],
    P04: [("take_bowl", 8), ("pour_cereals", 6), ("pour_milk", 9)],
    P05: [("SIL", 6), ("pour_milk", 5), ("SIL", 2)],
    P06: [("SIL", 9)],
}


def _breakfast(tmp_path: Path) -> Path:
    src = tmp_path / "breakfast"
    _lines(src / "mapping.txt", MAPPING)
    for video, runs in GT.items():
        _lines(src / "groundTruth" / f"{video}.txt", _frames(runs))
    _lines(src / "splits" / "train.split1.bundle", [f"{P03}.txt", f"{P04}.txt", f"{P06}.txt"])
    _lines(src / "splits" / "test.split1.bundle", [f"{P05}.txt"])
    _lines(src / "splits" / "train.split2.bundle", [f"{P05}.txt", f"{P04}.txt", f"{P06}.txt"])
    _lines(src / "splits" / "test.split2.bundle", [f"{P03}.txt"])
    _lines(src / "features" / "README", ["I3D features are not read"])
    return src


def test_breakfast_records(tmp_path, videos):
    src = _breakfast(tmp_path)
    _touch(videos, P03, P04, P05, P06)
    out = tmp_path / "breakfast.jsonl"
    report = build_manifest("mstcn", src, out, _opts(videos))
    _assert_valid(out)
    records = _read(out)
    assert list(records) == [P03, P04, P05]  # P06 has no step left
    assert sum(report.skipped.values()) == 1 and report.segments["step"] == 4 + 3 + 1

    p03 = records[P03]
    assert _steps(p03) == [  # frames at 15 fps; the SIL runs (0-4, 35-37, 57-60) are left uncovered
        ("take_bowl", "take bowl", 5 / 15, 15 / 15),
        ("pour_cereals", "pour cereals", 15 / 15, 35 / 15),
        ("pour_milk", "pour milk", 38 / 15, 50 / 15),
        ("stir_cereals", "stir cereals", 50 / 15, 57 / 15),
    ]
    assert p03["duration"] == 61 / 15 and p03["split"] == "train" and p03["corpus"] == "mstcn"
    assert p03["meta"] == {"dataset": "breakfast", "feature_fps": 15.0, "frames": 61}
    assert _steps(records[P04]) == [
        ("take_bowl", "take bowl", 0.0, 8 / 15),
        ("pour_cereals", "pour cereals", 8 / 15, 14 / 15),
        ("pour_milk", "pour milk", 14 / 15, 23 / 15),
    ]
    assert records[P04]["duration"] == 23 / 15 and records[P04]["split"] == "train"
    assert _steps(records[P05]) == [("pour_milk", "pour milk", 6 / 15, 11 / 15)]
    assert records[P05]["split"] == "test" and records[P05]["meta"]["frames"] == 13
    # Background frames of the written records only: P03 5 + 3 + 4, P05 6 + 2 (not P06's 9).
    assert report.notes == {BACKGROUND_NOTE: 12 + 8}


def test_fold_two_and_fps(tmp_path, videos):
    src = _breakfast(tmp_path)
    _touch(videos, P03, P04, P05)
    out = tmp_path / "b2.jsonl"
    build_manifest("mstcn", src, out, _opts(videos, fold=2, fps=30.0))
    records = _read(out)
    assert {v: r["split"] for v, r in records.items()} == {P03: "test", P04: "train", P05: "train"}
    assert _steps(records[P05]) == [("pour_milk", "pour milk", 6 / 30, 11 / 30)]
    assert records[P03]["duration"] == 61 / 30 and records[P03]["meta"]["feature_fps"] == 30.0
    _assert_valid(out)


def test_video_in_no_bundle_is_skipped_and_split_override_reads_no_bundle(tmp_path, videos):
    src = _breakfast(tmp_path)
    _lines(src / "splits" / "train.split1.bundle", [f"{P03}.txt"])  # P04 and P06 now in no bundle
    _touch(videos, P03, P04, P05)
    report = build_manifest("mstcn", src, tmp_path / "o.jsonl", _opts(videos))
    assert report.records == 2 and report.skipped[NO_FOLD] == 2
    (src / "splits" / "test.split1.bundle").unlink()
    out = tmp_path / "all.jsonl"
    build_manifest("mstcn", src, out, _opts(videos, split="val"))
    assert {v: r["split"] for v, r in _read(out).items()} == {P03: "val", P04: "val", P05: "val"}


def test_gtea_without_splits_via_cli(tmp_path, videos, capsys):
    """GTEA's background label, no splits folder (every video train), bundle-free CLI run."""
    src = tmp_path / "gtea"
    _lines(src / "mapping.txt", ["0 take", "1 open", "2 scoop", "3 background"])
    _lines(src / "groundTruth" / "S1_Coffee_C1.txt",
           _frames([("background", 4), ("take", 3), ("open", 2), ("background", 1), ("scoop", 5)]))
    _touch(videos, "S1_Coffee_C1")
    out = tmp_path / "gtea.jsonl"
    assert main(["manifest", "build", "mstcn", str(src), "--videos", str(videos), "--out", str(out),
                 "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[:2] == [f"wrote 1 record(s) to {out}", "segments: step=3"]
    assert f"notes: 5 {BACKGROUND_NOTE}" in stdout
    record = _read(out)["S1_Coffee_C1"]
    assert _steps(record) == [("take", "take", 4 / 15, 7 / 15), ("open", "open", 7 / 15, 9 / 15),
                              ("scoop", "scoop", 10 / 15, 15 / 15)]
    assert record["split"] == "train" and record["meta"] == {"dataset": "gtea", "feature_fps": 15.0, "frames": 15}
    assert main(["manifest", "validate", str(out), "--check-files"]) == 0


def test_50salads_action_start_end(tmp_path, videos):
    src = tmp_path / "50salads"
    _lines(src / "mapping.txt", ["0 cut_tomato", "1 place_tomato_into_bowl", "17 action_start", "18 action_end"])
    _lines(src / "groundTruth" / "rgb-01-1.txt",
           _frames([("action_start", 30), ("cut_tomato", 60), ("place_tomato_into_bowl", 15), ("action_end", 45)]))
    _touch(videos, "rgb-01-1", ext="avi")
    out = tmp_path / "s.jsonl"
    report = build_manifest("mstcn", src, out, _opts(videos, fps=30.0))
    record = _read(out)["rgb-01-1"]
    assert _steps(record) == [("cut_tomato", "cut tomato", 1.0, 3.0),
                              ("place_tomato_into_bowl", "place tomato into bowl", 3.0, 3.5)]
    assert record["duration"] == 5.0 and report.notes[BACKGROUND_NOTE] == 75


# --------------------------------------------------------------------------------------------------
# Malformed input


def _error(tmp_path: Path, videos: Path, src: Path, **kw) -> str:
    with pytest.raises(BuildError) as info:
        build_manifest("mstcn", src, tmp_path / "o.jsonl", _opts(videos, keep_missing=True, **kw))
    assert not (tmp_path / "o.jsonl").exists()
    return str(info.value)


def test_label_not_in_mapping_names_file_and_line(tmp_path, videos):
    src = _breakfast(tmp_path)
    frames = _frames(GT[P04])
    frames[16] = "pour_juice"
    gt = _lines(src / "groundTruth" / f"{P04}.txt", frames)
    assert _error(tmp_path, videos, src) == f"{gt}:17: label: 'pour_juice' is not in mapping.txt"


def test_blank_lines_do_not_count_as_frames(tmp_path, videos):
    src = _breakfast(tmp_path)
    gt = src / "groundTruth" / f"{P04}.txt"
    gt.write_text(gt.read_text() + "\n\n")
    _touch(videos, P04)
    out = tmp_path / "o.jsonl"
    build_manifest("mstcn", src, out, _opts(videos))
    assert _read(out)[P04]["meta"]["frames"] == 23


@pytest.mark.parametrize("mapping, line, where", [
    (MAPPING + ["5 SIL"], 6, "label: 'SIL' already listed on line 1"),
    (MAPPING + ["4 add_sugar"], 6, "index: 4 already used on line 5"),
    (MAPPING[:2] + ["two pour_cereals"], 3, "index: expected an integer, got 'two'"),
    (MAPPING[:2] + ["2"], 3, "label: missing"),
])
def test_bad_mapping_line(tmp_path, videos, mapping, line, where):
    src = _breakfast(tmp_path)
    path = _lines(src / "mapping.txt", mapping)
    assert _error(tmp_path, videos, src).startswith(f"{path}:{line}: {where}")


def test_bad_bundles(tmp_path, videos):
    src = _breakfast(tmp_path)
    bundle = _lines(src / "splits" / "test.split1.bundle", [f"{P05}.txt", "P99_cam01_P99_tea.txt"])
    assert _error(tmp_path, videos, src) == f"{bundle}:2: file: no groundTruth/P99_cam01_P99_tea.txt"
    _lines(bundle, [f"{P05}", P03])  # `.txt` may be left out; P03 is also in train
    train = src / "splits" / "train.split1.bundle"
    assert _error(tmp_path, videos, src) == f"{bundle}:2: file: '{P03}.txt' is already listed at {train}:1"


def test_missing_fold_and_folders(tmp_path, videos):
    src = _breakfast(tmp_path)
    assert "train.split3.bundle: not found (fold 3" in _error(tmp_path, videos, src, fold=3)
    other = tmp_path / "nosplits"
    _lines(other / "mapping.txt", MAPPING)
    _lines(other / "groundTruth" / f"{P04}.txt", _frames(GT[P04]))
    assert _error(tmp_path, videos, other, fold=2).endswith("--fold 2 given but there is no splits folder")
    (other / "mapping.txt").unlink()
    assert _error(tmp_path, videos, other) == f"{other / 'mapping.txt'}: file not found"
    bare = tmp_path / "bare"
    _lines(bare / "mapping.txt", MAPPING)
    assert _error(tmp_path, videos, bare) == f"{bare}: not an MS-TCN dataset folder: no groundTruth folder"

"""`videolang manifest build cholec80|autolaparo|m2cai16`: per-video `Frame<TAB>Phase` files become one
record of `phase` segments per video, with times = frame / fps, the documented splits, and every bad row
reported as `FILE:LINE: COLUMN: message`."""

from __future__ import annotations

from pathlib import Path

import pytest

from videolang.cli import main
from videolang.data.builders import build_manifest
from videolang.data.builders.common import BuildError
from build_helpers import assert_valid as _assert_valid, options as _opts, read_out as _read, touch as _touch



CHOLEC_NAMES = ("Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
                "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction")

# --------------------------------------------------------------------------------------------------
# Helpers (copied from test_manifest_build.py)


def _write(path: Path, rows: list[tuple], header: str = "Frame\tPhase", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


def _per_frame(runs: list[tuple[str, int]], first: int = 0, step: int = 1) -> list[tuple[int, str]]:
    """Rows for consecutive runs of (phase, number of rows), frames `first, first + step, ...`."""
    rows, frame = [], first
    for phase, n in runs:
        for _ in range(n):
            rows.append((frame, phase))
            frame += step
    return rows


def _phases(record: dict) -> list[tuple]:
    assert all(s["level"] == "phase" and "children" not in s for s in record["segments"])
    return [(s["label"], s["caption"], s["start"], s["end"]) for s in record["segments"]]


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------------------------------
# Cholec80

# video01: 300 per-frame rows over three phases at 25 fps: frames 0-99, 100-249, 250-299.
VIDEO01 = [("Preparation", 100), ("CalotTriangleDissection", 150), ("ClippingCutting", 50)]
# video41 (val): subsampled to every 25th frame, one row (frame 150) missing, back to Preparation at the end.
VIDEO41 = [(f, "Preparation") for f in (0, 25, 50, 75, 100, 125, 175)] + \
          [(f, "GallbladderDissection") for f in (200, 225, 250)] + [(275, "Preparation"), (300, "Preparation")]


def _cholec80(tmp_path: Path) -> Path:
    src = tmp_path / "cholec80"
    _write(src / "phase_annotations" / "video01-phase.txt", _per_frame(VIDEO01))
    _write(src / "phase_annotations" / "sub" / "video41-phase.txt", VIDEO41, newline="\r\n")
    # video49 (test): phases out of the documented order, header in another case, one row only at the end.
    _write(src / "phase_annotations" / "video49-phase.txt",
           _per_frame([("GallbladderRetraction", 3), ("CleaningCoagulation", 2), ("GallbladderPackaging", 1)], 10),
           header="frame\tphase")
    _write(src / "phase_annotations" / "video50-phase.txt", _per_frame([("Preparation", 4)]))  # no video file
    _write(src / "tool_annotations" / "video01-tool.txt", [(0, 1, 0, 0, 0, 0, 0, 0)],
           header="Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag")
    return src


def test_cholec80_records(tmp_path, videos):
    src = _cholec80(tmp_path)
    _touch(videos, "video01", "video41", "video49")
    out = tmp_path / "cholec80.jsonl"
    report = build_manifest("cholec80", src, out, _opts(videos))
    _assert_valid(out)
    records = _read(out)
    assert list(records) == ["video01", "video41", "video49"]
    assert report.missing == ["video50"]
    assert report.segments["phase"] == 3 + 3 + 3 and report.records == 3

    v1 = records["video01"]
    assert _phases(v1) == [
        ("Preparation", "Preparation", 0.0, 4.0),  # frames 0..99 -> [0/25, 100/25)
        ("CalotTriangleDissection", "Calot triangle dissection", 4.0, 10.0),
        ("ClippingCutting", "Clipping and cutting", 10.0, 12.0),  # last frame 299 + stride 1 = 300
    ]
    assert v1["duration"] == 12.0 and v1["split"] == "train" and v1["corpus"] == "cholec80"
    assert v1["meta"] == {"procedure": "cholecystectomy", "annotation_fps": 25.0}
    assert v1["path"] == "videos/video01.mp4"

    # Stride 25 (the usual gap; the 50-frame gap where a row is missing does not change it).
    v41 = records["video41"]
    assert _phases(v41) == [
        ("Preparation", "Preparation", 0.0, 200 / 25),
        ("GallbladderDissection", "Gallbladder dissection", 200 / 25, 275 / 25),
        ("Preparation", "Preparation", 275 / 25, (300 + 25) / 25),
    ]
    assert v41["duration"] == 13.0 and v41["split"] == "val"

    v49 = records["video49"]
    assert _phases(v49) == [
        ("GallbladderRetraction", "Gallbladder retraction", 10 / 25, 13 / 25),
        ("CleaningCoagulation", "Cleaning and coagulation", 13 / 25, 15 / 25),
        ("GallbladderPackaging", "Gallbladder packaging", 15 / 25, 16 / 25),
    ]
    assert v49["duration"] == 16 / 25 and v49["split"] == "test"


def test_fps_and_split_override(tmp_path, videos):
    src = _cholec80(tmp_path)
    _touch(videos, "video01", "video41", "video49")
    out = tmp_path / "cholec80.jsonl"
    build_manifest("cholec80", src, out, _opts(videos, fps=1.0, split="val"))
    records = _read(out)
    assert [s["end"] for s in records["video01"]["segments"]] == [100.0, 250.0, 300.0]
    assert records["video41"]["duration"] == 325.0
    assert {r["split"] for r in records.values()} == {"val"}
    assert records["video49"]["meta"]["annotation_fps"] == 1.0
    _assert_valid(out)


def test_single_file_source_and_one_row(tmp_path, videos):
    src = _write(tmp_path / "video07-phase.txt", [(40, "ClippingCutting")])
    _touch(videos, "video07")
    out = tmp_path / "one.jsonl"
    build_manifest("cholec80", src, out, _opts(videos))
    record = _read(out)["video07"]
    assert _phases(record) == [("ClippingCutting", "Clipping and cutting", 40 / 25, 41 / 25)]  # stride 1
    assert record["duration"] == 41 / 25


def test_header_only_file_is_skipped(tmp_path, videos):
    src = tmp_path / "c80"
    _write(src / "video01-phase.txt", _per_frame(VIDEO01))
    _write(src / "video02-phase.txt", [])
    _touch(videos, "video01", "video02")
    report = build_manifest("cholec80", src, tmp_path / "o.jsonl", _opts(videos))
    assert report.records == 1 and sum(report.skipped.values()) == 1


def test_same_video_in_two_folders_is_an_error(tmp_path, videos):
    src = tmp_path / "c80"
    _write(src / "a" / "video01-phase.txt", _per_frame(VIDEO01))
    _write(src / "b" / "video01-phase.txt", _per_frame(VIDEO01))
    _touch(videos, "video01")
    with pytest.raises(BuildError, match="video01' appears twice"):
        build_manifest("cholec80", src, tmp_path / "o.jsonl", _opts(videos))


def test_folder_without_phase_files_is_an_error(tmp_path, videos):
    src = tmp_path / "empty"
    _write(src / "video01-tool.txt", [(0, 1)])
    with pytest.raises(BuildError, match="no phase files"):
        build_manifest("cholec80", src, tmp_path / "o.jsonl", _opts(videos))


# --------------------------------------------------------------------------------------------------
# AutoLaparo and M2CAI16


def test_autolaparo_numeric_and_named_phases(tmp_path, videos):
    src = tmp_path / "autolaparo" / "labels"
    # label_03 (train): frames from 1, numeric phases, "5" and its name in one run.
    rows = _per_frame([("1", 4), ("2", 6), ("5", 2), ("Specimen Removal", 3), ("7", 2)], first=1)
    _write(src / "label_03.txt", rows)
    _write(src / "label_12.txt", _per_frame([("Suturing", 5), ("6", 1), ("3", 2)]))  # val
    _write(src / "label_15.txt", _per_frame([("4", 9)]))  # test
    _touch(videos, "03", "12", "15")
    out = tmp_path / "al.jsonl"
    report = build_manifest("autolaparo", src.parent, out, _opts(videos))
    _assert_valid(out)
    records = _read(out)
    assert list(records) == ["03", "12", "15"] and report.segments["phase"] == 4 + 2 + 1
    assert _phases(records["03"]) == [
        ("Preparation", "Preparation", 1.0, 5.0),  # frames 1..4 at 1 fps
        ("Dividing Ligament and Peritoneum", "Dividing ligament and peritoneum", 5.0, 11.0),
        ("Specimen Removal", "Specimen removal", 11.0, 16.0),
        ("Washing", "Washing", 16.0, 18.0),
    ]
    assert _phases(records["12"]) == [
        ("Suturing", "Suturing", 0.0, 6.0),
        ("Dividing Uterine Vessels and Ligament", "Dividing uterine vessels and ligament", 6.0, 8.0),
    ]
    assert _phases(records["15"]) == [("Transecting the Vagina", "Transecting the vagina", 0.0, 9.0)]
    assert [records[v]["split"] for v in records] == ["train", "val", "test"]
    assert [records[v]["duration"] for v in records] == [18.0, 8.0, 9.0]
    assert records["15"]["meta"] == {"procedure": "hysterectomy", "annotation_fps": 1.0}


def test_m2cai16_records(tmp_path, videos):
    src = tmp_path / "m2cai16"
    _write(src / "train_dataset" / "workflow_video_01.txt",
           _per_frame([("TrocarPlacement", 30), ("Preparation", 20), ("CalotTriangleDissection", 25)]))
    _write(src / "test_dataset" / "test_workflow_video_01.txt",
           _per_frame([("GallbladderPackaging", 10), ("CleaningCoagulation", 15)], step=25))
    _write(src / "train_dataset" / "workflow_video_01_timestamp.txt", [(0, "00:00:00")], header="Frame\tTime")
    _touch(videos, "workflow_video_01", "test_workflow_video_01")
    out = tmp_path / "m2.jsonl"
    build_manifest("m2cai16", src, out, _opts(videos))
    _assert_valid(out)
    records = _read(out)
    assert list(records) == ["test_workflow_video_01", "workflow_video_01"]
    train, test = records["workflow_video_01"], records["test_workflow_video_01"]
    assert _phases(train) == [
        ("TrocarPlacement", "Trocar placement", 0.0, 30 / 25),
        ("Preparation", "Preparation", 30 / 25, 50 / 25),
        ("CalotTriangleDissection", "Calot triangle dissection", 50 / 25, 75 / 25),
    ]
    assert _phases(test) == [
        ("GallbladderPackaging", "Gallbladder packaging", 0.0, 250 / 25),
        ("CleaningCoagulation", "Cleaning and coagulation", 250 / 25, (24 * 25 + 25) / 25),
    ]
    assert (train["split"], test["split"]) == ("train", "test")
    assert train["meta"] == {"procedure": "cholecystectomy", "annotation_fps": 25.0}


def test_cholec80_via_cli(tmp_path, videos, capsys):
    src = _cholec80(tmp_path)
    _touch(videos, "video01", "video41", "video49")
    out = tmp_path / "cli.jsonl"
    code = main(["manifest", "build", "cholec80", str(src), "--videos", str(videos), "--out", str(out),
                 "--fps", "50", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert stdout.splitlines()[:2] == [f"wrote 3 record(s) to {out}", "segments: phase=9"]
    assert "video50" in stdout
    assert _read(out)["video01"]["duration"] == 300 / 50
    assert main(["manifest", "validate", str(out), "--check-files"]) == 0


# --------------------------------------------------------------------------------------------------
# Malformed rows: FILE:LINE: COLUMN: message


def _rows_with(line: int, row: tuple) -> list[tuple]:
    """VIDEO01's rows with data line `line` (the header is line 1) replaced by `row`."""
    rows = _per_frame(VIDEO01)
    rows[line - 2] = row
    return rows


@pytest.mark.parametrize("row, line, where", [
    ((55, "Dissection"), 57, "phase: unknown phase 'Dissection'; expected one of " + ", ".join(CHOLEC_NAMES)),
    ((55, "preparation"), 57, "phase: unknown phase 'preparation'"),
    ((55, "3"), 57, "phase: unknown phase '3'; expected one of Preparation, "),  # numbers: AutoLaparo only
    (("12.5", "Preparation"), 14, "frame: expected an integer, got '12.5'"),
    ((11, "Preparation"), 14, "frame: 11 is not after the previous row's frame 11 (line 13)"),
    ((3, "Preparation"), 14, "frame: 3 is not after the previous row's frame 11 (line 13)"),
    ((-1, "Preparation"), 2, "frame: negative frame -1"),
    (("7",), 9, "phase: missing"),
    ((7, " "), 9, "phase: empty"),
    ((7, "Preparation", "x"), 9, "phase: 3 cells but the header names 2 columns"),
], ids=["unknown-phase", "phase-case", "phase-number", "float-frame", "repeated-frame", "decreasing-frame",
        "negative-frame", "missing-cell", "empty-cell", "extra-cell"])
def test_bad_row_names_file_line_and_column(tmp_path, videos, capsys, row, line, where):
    file = _write(tmp_path / "c80" / "video01-phase.txt", _rows_with(line, row))
    _touch(videos, "video01")
    out = tmp_path / "o.jsonl"
    assert main(["manifest", "build", "cholec80", str(file.parent), "--videos", str(videos), "--out", str(out),
                 "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"videolang manifest: error: {file}:{line}: {where}"), lines
    assert not out.exists()


def test_autolaparo_phase_number_out_of_range(tmp_path, videos):
    file = _write(tmp_path / "label_01.txt", _per_frame([("1", 3), ("8", 1)]))
    with pytest.raises(BuildError) as info:
        build_manifest("autolaparo", file, tmp_path / "o.jsonl", _opts(videos, keep_missing=True))
    assert str(info.value).startswith(f"{file}:5: phase: unknown phase '8'; expected 1..7 or one of Preparation, ")


def test_missing_header_column(tmp_path, videos):
    file = _write(tmp_path / "video01-phase.txt", [(0, "Preparation")], header="Frame\tLabel")
    with pytest.raises(BuildError, match=r"video01-phase.txt:1: header: expected columns frame, phase"):
        build_manifest("cholec80", file, tmp_path / "o.jsonl", _opts(videos, keep_missing=True))


def test_single_file_with_another_name_is_an_error(tmp_path, videos):
    file = _write(tmp_path / "video01.txt", [(0, "Preparation")])
    with pytest.raises(BuildError, match="expected a name like videoNN-phase.txt"):
        build_manifest("cholec80", file, tmp_path / "o.jsonl", _opts(videos))

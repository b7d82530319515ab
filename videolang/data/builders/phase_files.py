"""Per-video surgical phase files (Cholec80, AutoLaparo, M2CAI16) -> one record per video of `phase` segments.

The three datasets share one layout: a tab-separated `Frame<TAB>Phase` file per video, one row per
annotated frame (every frame at 25 fps, or one a second for AutoLaparo). They differ only in file names,
rate, phase vocabulary and documented splits, so each is a small `PhaseLayout` and one reader serves all.

Consecutive rows with the same phase become one segment, from its first frame to the frame of the next
row with another phase; the last one ends one row stride (the usual gap between rows: 1 for per-frame
files, 25 for files subsampled to 1 fps at 25 fps) after the last row. Rows are curated ground truth, so a
frame out of order, a non-integer frame or an unknown phase is an error naming `FILE:LINE: COLUMN`;
files are streamed, holding only one video's runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from videolang.data.builders.common import BuildContext, BuildError, Built, Changes, Row, new_record, read_table
from videolang.data.manifest import Segment

COLUMNS = ("frame", "phase")

CHOLEC_PHASES = (
    ("Preparation", "Preparation"),
    ("CalotTriangleDissection", "Calot triangle dissection"),
    ("ClippingCutting", "Clipping and cutting"),
    ("GallbladderDissection", "Gallbladder dissection"),
    ("GallbladderPackaging", "Gallbladder packaging"),
    ("CleaningCoagulation", "Cleaning and coagulation"),
    ("GallbladderRetraction", "Gallbladder retraction"),
)


@dataclass(frozen=True)
class PhaseLayout:
    """How one dataset names its phase files and what a row's phase means."""

    example: str  # a file name, for messages
    file_name: re.Pattern  # the whole name; group `id` = video id, `number` = the video's number, `test` = test set
    fps: float  # documented annotation rate
    phases: tuple[tuple[str, str], ...]  # (the dataset's name, a readable caption), in the dataset's numbering
    numbered: bool  # a row may give the phase as its 1-based number
    procedure: str
    splits: tuple[tuple[int, int, str], ...] = ()  # (first, last video number, split); others are train

    def video(self, file: Path) -> Optional[re.Match]:
        return self.file_name.fullmatch(file.name)

    def phase(self, row: Row) -> int:
        """The row's phase as an index into `phases`."""
        raw = row.text("phase")
        if self.numbered and raw.isdigit() and 1 <= int(raw) <= len(self.phases):
            return int(raw) - 1
        for i, (name, _) in enumerate(self.phases):
            if raw == name:
                return i
        names = ", ".join(name for name, _ in self.phases)
        numbers = f"1..{len(self.phases)} or " if self.numbered else ""
        row.fail("phase", f"unknown phase {raw[:40]!r}; expected {numbers}one of {names}")

    def split(self, match: re.Match) -> str:
        if match.groupdict().get("test"):
            return "test"
        number = int(match.group("number"))
        return next((split for first, last, split in self.splits if first <= number <= last), "train")


CHOLEC80 = PhaseLayout(
    example="videoNN-phase.txt",
    file_name=re.compile(r"(?P<id>video(?P<number>\d+))-phase\.txt"),
    fps=25.0,
    phases=CHOLEC_PHASES,
    numbered=False,
    procedure="cholecystectomy",
    splits=((1, 40, "train"), (41, 48, "val"), (49, 80, "test")),
)
M2CAI16 = PhaseLayout(
    example="workflow_video_NN.txt or test_workflow_video_NN.txt",
    file_name=re.compile(r"(?P<id>(?P<test>test_)?workflow_video_(?P<number>\d+))\.txt"),
    fps=25.0,
    phases=(("TrocarPlacement", "Trocar placement"),) + CHOLEC_PHASES,
    numbered=False,
    procedure="cholecystectomy",
)
AUTOLAPARO = PhaseLayout(
    example="label_NN.txt",
    file_name=re.compile(r"label_(?P<id>(?P<number>\d+))\.txt"),
    fps=1.0,
    phases=(
        ("Preparation", "Preparation"),
        ("Dividing Ligament and Peritoneum", "Dividing ligament and peritoneum"),
        ("Dividing Uterine Vessels and Ligament", "Dividing uterine vessels and ligament"),
        ("Transecting the Vagina", "Transecting the vagina"),
        ("Specimen Removal", "Specimen removal"),
        ("Suturing", "Suturing"),
        ("Washing", "Washing"),
    ),
    numbered=True,
    procedure="hysterectomy",
    splits=((1, 10, "train"), (11, 14, "val"), (15, 21, "test")),
)


def build_cholec80(source: Path, ctx: BuildContext) -> Iterator[Built]:
    return _build(source, ctx, CHOLEC80)


def build_autolaparo(source: Path, ctx: BuildContext) -> Iterator[Built]:
    return _build(source, ctx, AUTOLAPARO)


def build_m2cai16(source: Path, ctx: BuildContext) -> Iterator[Built]:
    return _build(source, ctx, M2CAI16)


def _build(source: Path, ctx: BuildContext, layout: PhaseLayout) -> Iterator[Built]:
    fps = ctx.options.fps or layout.fps
    for file, match in ctx.videos(phase_files(source, layout)):
        yield _record(file, match, layout, fps)


def phase_files(source: Path, layout: PhaseLayout) -> list[tuple[Path, re.Match]]:
    """SOURCE is one phase file or a folder searched recursively for them, in file-name order."""
    if source.is_file():
        match = layout.video(source)
        if match is None:
            raise BuildError(source, "", f"not a phase file: expected a name like {layout.example}")
        return [(source, match)]
    if not source.is_dir():
        raise BuildError(source, "", "not found")
    found = [(f, m) for f in source.rglob("*.txt") if f.is_file() and (m := layout.video(f)) is not None]
    found.sort(key=lambda fm: (fm[0].name, str(fm[0])))
    if not found:
        raise BuildError(source, "", f"no phase files (named like {layout.example}) in this folder")
    return found


def _record(file: Path, match: re.Match, layout: PhaseLayout, fps: float) -> Built:
    segments = [_segment(layout, phase, start / fps, end / fps) for phase, start, end in _runs(file, layout)]
    record = new_record(
        match.group("id"), split=layout.split(match), duration=segments[-1].end if segments else None,
        meta={"procedure": layout.procedure, "annotation_fps": fps}, segments=segments,
    )
    return Built(record, Changes())


def _segment(layout: PhaseLayout, phase: int, start: float, end: float) -> Segment:
    name, caption = layout.phases[phase]
    return Segment("phase", start, end, caption=caption, label=name)


def _runs(file: Path, layout: PhaseLayout) -> list[tuple[int, int, int]]:
    """(phase, first frame, end frame) of each run of rows with one phase, streamed: only the runs are kept."""
    starts: list[tuple[int, int]] = []  # (phase, first frame) of each run
    gaps: Counter = Counter()
    previous: Optional[tuple[int, int]] = None  # (frame, line) of the previous row
    for row in read_table(file, delimiter="\t", require=COLUMNS):
        frame = _frame(row, previous)
        phase = layout.phase(row)
        if previous is not None:
            gaps[frame - previous[0]] += 1
        if not starts or starts[-1][0] != phase:
            starts.append((phase, frame))
        previous = (frame, row.line)
    if previous is None:
        return []
    ends = [first for _, first in starts[1:]] + [previous[0] + _stride(gaps)]
    return [(phase, first, end) for (phase, first), end in zip(starts, ends)]


def _frame(row: Row, previous: Optional[tuple[int, int]]) -> int:
    frame = row.integer("frame")
    if frame < 0:
        row.fail("frame", f"negative frame {frame}")
    if previous is not None and frame <= previous[0]:
        row.fail("frame", f"{frame} is not after the previous row's frame {previous[0]} (line {previous[1]}); "
                 "rows must be in increasing frame order")
    return frame


def _stride(gaps: Counter) -> int:
    """The usual gap between rows (the most frequent; the smallest on a tie), 1 for a one-row file."""
    if not gaps:
        return 1
    return max(gaps.items(), key=lambda kv: (kv[1], -kv[0]))[0]

"""CAMMA's SurgVLP / HecVL / PeskaVLP layout: per-video CSVs of noisy lecture narration (`start,end,text`)
and curated keysteps (`start,end,step,text`), times in seconds -> one record per video with its narration
track and `step` segments (label = `step`, caption = `text`).

SOURCE is a folder searched recursively for `*.csv` (or one such file). A file's video id and kind come
from one of two conventions, so both common layouts work unchanged:

- `<video_id>_narration.csv` / `<video_id>_keysteps.csv` (also `_keystep.csv`), anywhere under SOURCE;
- `narration/<video_id>.csv` / `keysteps/<video_id>.csv` (also `keystep/`): the folder names the kind.

Any other `<video_id>.csv` is recognised by its header: a `step` column makes it keysteps, else narration.
A name or folder that contradicts the header is an error (usually a file saved in the wrong place). A video
may have either file or both; two files of one kind for one video are an error naming both. An optional
`<video_id>_abstract.txt` (or `abstract/<video_id>.txt`) becomes `meta.abstract`: the lecture-level text
that HecVL pairs with the whole video.

Narration is ASR, noisy by nature: sentences with `end <= start` or empty text are dropped and counted.
Keysteps are curated: a malformed span is an error naming its row; steps that overlap or run past the
video's end are fixed and counted, since our `step` level is a partition. The CSVs carry no duration, so
it is read from the video file's container metadata when the file is there (no frame is decoded); without
one the record has no duration and nothing is cut. Every record's split is `train` unless `--split` says.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from videolang.data.builders.common import (
    BuildContext,
    BuildError,
    Built,
    Changes,
    Row,
    RowError,
    clip_to_duration,
    is_utf8,
    new_record,
    printable,
    read_table,
    resolve_overlaps,
)
from videolang.data.builders.vript import probe_duration
from videolang.data.manifest import Narration, Segment

NARRATION, KEYSTEPS = "narration", "keysteps"
COLUMNS = {NARRATION: ("start", "end", "text"), KEYSTEPS: ("start", "end", "step", "text")}
# File-name suffixes and folder names that say which kind a CSV is.
KIND_NAMES = {"narration": NARRATION, "keysteps": KEYSTEPS, "keystep": KEYSTEPS}
ABSTRACT_SUFFIX = "_abstract.txt"
ABSTRACT_FOLDERS = ("abstract", "abstracts")
NARRATION_DROPPED = "narration sentence(s) with end <= start or empty text"
NARRATION_CUT = "narration sentence(s) cut at the video's end"
NARRATION_LATE = "narration sentence(s) starting after the video's end"


@dataclass
class VideoFiles:
    """One video's source files, found by name."""

    tables: dict[str, Path] = field(default_factory=dict)  # kind -> CSV
    abstract: Optional[Path] = None


IGNORED = "CSV file(s) under SOURCE whose name and header are neither narration nor keysteps (ignored)"


def build_peskavlp(source: Path, ctx: BuildContext) -> Iterator[Built]:
    ignored: list[Path] = []
    videos = find_videos(source, ignored)
    if ignored:
        ctx.report.skipped[IGNORED] += len(ignored)
    for video_id in ctx.videos(sorted(videos)):
        yield _record(video_id, videos[video_id], ctx)


# --------------------------------------------------------------------------------------------------
# Finding and pairing files


def find_videos(source: Path, ignored: Optional[list[Path]] = None) -> dict[str, VideoFiles]:
    """Video id -> its narration/keysteps CSVs and abstract, from SOURCE (a folder, or one CSV). A CSV in a
    folder that neither its name nor its header marks as narration or keysteps (a split list, metadata)
    is left out and appended to `ignored`."""
    if source.is_file():
        csvs, texts = [source], []
    elif source.is_dir():
        csvs = sorted(p for p in source.rglob("*") if p.suffix.lower() == ".csv" and p.is_file())
        texts = sorted(p for p in source.rglob("*.txt") if p.is_file() and _abstract_id(p) is not None)
    else:
        raise BuildError(source, "", "not found")
    if not csvs:
        raise BuildError(source, "", "no *.csv files in this folder")
    videos: dict[str, VideoFiles] = {}
    for path in csvs:
        video_id, hint = _name(path)
        if hint is None and source.is_dir() and not _looks_like_ours(path):
            if ignored is not None:
                ignored.append(path)
            continue
        _check_id(video_id, path)
        kind = _kind(path, hint)
        files = videos.setdefault(video_id, VideoFiles())
        if kind in files.tables:
            raise BuildError(path, "", f"second {kind} file for video '{video_id}' (also {files.tables[kind]}); "
                             "keep one")
        files.tables[kind] = path
    for path in texts:
        video_id = _abstract_id(path)
        _check_id(video_id, path)
        files = videos.setdefault(video_id, VideoFiles())
        if files.abstract is not None:
            raise BuildError(path, "", f"second abstract for video '{video_id}' (also {files.abstract}); keep one")
        files.abstract = path
    return videos


def _name(path: Path) -> tuple[str, Optional[str]]:
    """(video id, kind named by the file or its folder, or None)."""
    stem = path.stem
    for name, kind in KIND_NAMES.items():
        if stem.lower().endswith(f"_{name}"):
            return stem[: -len(name) - 1], kind
    return stem, KIND_NAMES.get(path.parent.name.lower())


def _abstract_id(path: Path) -> Optional[str]:
    if path.name.lower().endswith(ABSTRACT_SUFFIX):
        return path.name[: -len(ABSTRACT_SUFFIX)]
    if path.parent.name.lower() in ABSTRACT_FOLDERS:
        return path.stem
    return None


def _check_id(video_id: str, path: Path) -> None:
    if not is_utf8(video_id):
        raise BuildError(printable(str(path)), "", "file name is not valid UTF-8, so it cannot name a video; "
                         "rename the file")
    if not video_id.strip():
        raise BuildError(path, "", f"blank video id {video_id!r} (from the file name)")


def _kind(path: Path, hint: Optional[str]) -> str:
    """The CSV's kind: its header's (a `step` column means keysteps), which must agree with its name's."""
    line, columns = _header(path)
    if not columns:
        return hint or NARRATION  # empty: read_table reports what is wrong, or there is nothing to read
    kind = KEYSTEPS if "step" in columns else NARRATION
    if hint is not None and hint != kind:
        raise RowError(path, line, "header", f"the file's name says {hint}, but its columns "
                       f"({', '.join(columns)}) are {kind} columns ({','.join(COLUMNS[kind])})")
    return kind


def _looks_like_ours(path: Path) -> bool:
    """Whether a CSV's header has the narration columns (start, end, text; keysteps add step)."""
    _, columns = _header(path)
    return not columns or all(c in columns for c in COLUMNS[NARRATION])


def _header(path: Path) -> tuple[int, list[str]]:
    """(line number, lower-cased column names) of the first non-blank line; (0, []) when there is none
    or the file cannot be read (`read_table` then reports why, worded like every other table error)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for cells in reader:
                if any(c.strip() for c in cells):
                    return reader.line_num, [c.strip().lower() for c in cells]
    except (UnicodeDecodeError, csv.Error, OSError):
        pass
    return 0, []


# --------------------------------------------------------------------------------------------------
# One video


def _record(video_id: str, files: VideoFiles, ctx: BuildContext) -> Built:
    changes = Changes()
    duration = _duration(video_id, ctx)
    steps: list[Segment] = []
    if KEYSTEPS in files.tables:
        steps = [_step(row) for row in read_table(files.tables[KEYSTEPS], require=COLUMNS[KEYSTEPS])]
        steps = resolve_overlaps(clip_to_duration(steps, duration, changes), changes)
    narration: list[Narration] = []
    if NARRATION in files.tables:
        narration = _narration(read_table(files.tables[NARRATION], require=COLUMNS[NARRATION]), duration, changes)
    meta = {}
    if files.abstract is not None:
        abstract = _read_text(files.abstract).strip()
        if abstract:
            meta["abstract"] = abstract
    record = new_record(video_id, duration=duration, meta=meta, segments=steps, narration=narration)
    return Built(record, changes)


def _duration(video_id: str, ctx: BuildContext) -> Optional[float]:
    """Seconds of the video file's content, or None when there is no file or it cannot be probed."""
    file = ctx.index.find(video_id)
    return probe_duration(file) if file is not None else None


def _step(row: Row) -> Segment:
    """A curated keystep: a bad span is an error; empty text leaves a label-only step (no caption)."""
    start, end = row.time("start"), row.time("end")
    if end <= start:
        row.fail("end", f"end {end:g} must be greater than start {start:g}")
    text = _cell(row, "text")
    return Segment("step", start, end, label=row.text("step"), caption=text or None)


def _narration(rows: Iterator[Row], duration: Optional[float], changes: Changes) -> list[Narration]:
    """ASR sentences in file order: empty or backwards ones dropped, ones past the video's end cut."""
    out = []
    for row in rows:
        start, end, text = row.time("start"), row.time("end"), _cell(row, "text")
        if end <= start or not text:
            changes.dropped[NARRATION_DROPPED] += 1
            continue
        if duration is not None and end > duration:
            if start >= duration:
                changes.dropped[NARRATION_LATE] += 1
                continue
            end = duration
            changes.fixed[NARRATION_CUT] += 1
        out.append(Narration(start, end, text))
    return out


def _cell(row: Row, column: str) -> str:
    """The cell stripped, possibly empty; a row too short to have it is still an error."""
    value = row.cells.get(column)
    if value is None:
        row.text(column)  # raises: missing
    return value.strip()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise BuildError(path, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise BuildError(path, "", f"cannot read: {e.strerror}") from None

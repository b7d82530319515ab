"""SurgLaVi: a SQLite database of LLM-segmented surgical narration at three levels (phase > step > task)
-> one record per video with a phase/step/task tree.

The database has no parent links, so the tree is inferred from time: each step goes under the phase it
overlaps most (the one containing it, when one does), each task under the step it overlaps most (else
the phase), ties going to the earliest, and a child's span is clipped to its parent's. LLM segmentation
leaves small overlaps between siblings, which our schema forbids: in time order, a sibling that starts
before the previous one ends is trimmed to start where it ends, and dropped if nothing is left. Every
such fix is counted.

SQLite columns hold any type, so values are normalised as read: text stored as a UTF-8 BLOB is text,
a level id stored as 3, 3.0 or '3' is one level; a NULL or blank video id, a BLOB that is not UTF-8 and
a non-finite number are errors naming the row.

Dual-modality filtering keeps, by default, only captions marked both surgical (`is_surgical_content`)
and descriptive (`is_descriptive`). With `--narration`, the finest level's `raw_narration` (before the
filter: the narration track is meant to be the noisy transcript) becomes the video's narration.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from videolang.data.builders.common import (
    BuildContext,
    BuildError,
    Built,
    Changes,
    clip_to_duration,
    new_record,
    resolve_overlaps,
)
from videolang.data.manifest import LEVEL_RANK, Narration, Segment

TREE_LEVELS = ("phase", "step", "task")
VIDEO_COLUMNS = ("video_id", "duration")
VIDEO_META_COLUMNS = ("title", "fps", "width", "height")
CAPTION_COLUMNS = ("caption_id", "video_id", "level_id", "start_time", "end_time", "caption")
FILTER_COLUMNS = ("is_surgical_content", "is_descriptive")
FILTERED = "caption(s) not both surgical and descriptive (dual-modality filter; --no-filter keeps them)"
EMPTY_SPAN = "caption(s) with end_time <= start_time"
EMPTY_TEXT = "caption(s) with empty text"
NARRATION_DROPPED = "narration sentence(s) with end <= start or empty text"
NARRATION_CUT = "narration sentence(s) cut at the video's end"


@dataclass
class Caption:
    """One row of `captions`, typed."""

    caption_id: Any
    level: str
    start: float
    end: float
    text: str
    narration: str
    relevant: bool  # passes the dual-modality filter


class Database:
    """A read-only SurgLaVi database; every complaint names the file and the table (and row)."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise BuildError(path, "", "file not found" if not path.exists() else "not a file")
        self.con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        self.con.row_factory = sqlite3.Row
        try:
            self.con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as e:
            self.con.close()
            raise BuildError(path, "", f"not a SQLite database ({e})") from None

    def close(self) -> None:
        self.con.close()

    def fail(self, where: str, message: str) -> BuildError:
        return BuildError(self.path, where, message)

    def columns(self, table: str, required: tuple[str, ...]) -> set[str]:
        """The table's columns, checked to include `required`."""
        found = {row["name"] for row in self.con.execute(f"PRAGMA table_info({table})")}
        if not found:
            raise self.fail(f"table {table}", "missing")
        absent = [c for c in required if c not in found]
        if absent:
            raise self.fail(f"table {table}", f"missing column(s) {', '.join(absent)}")
        return found

    def query(self, sql: str) -> list[sqlite3.Row]:
        try:
            return self.con.execute(sql).fetchall()
        except sqlite3.DatabaseError as e:
            raise self.fail("", f"cannot read: {e}") from None


def build_surglavi(source: Path, ctx: BuildContext) -> Iterator[Built]:
    with closing(Database(source)) as db:
        levels = _levels(db)
        videos, captions = _videos(db), _captions(db, ctx)
    for video in ctx.videos(videos):
        video_id = _video_id(db, video, f"videos row rowid={video['rowid']}")
        rows = captions.get(video_id, [])
        yield _record(db, video_id, video, [_caption(db, row, levels) for row in rows], ctx)


def _levels(db: Database) -> dict[Any, str]:
    """level_id (normalised by `_level_key`) -> our level name, from the `levels` table."""
    db.columns("levels", ("level_id", "name"))
    out = {}
    for row in db.query("SELECT level_id, name FROM levels"):
        where = f"levels row level_id={row['level_id']}"
        name = (_text(db, row, "name", where) or "").strip().lower()
        if name not in TREE_LEVELS:
            raise db.fail(where, f"unknown level name {row['name']!r}; expected one of {', '.join(TREE_LEVELS)}")
        out[_level_key(row["level_id"])] = name
    return out


def _level_key(value: Any) -> Any:
    """A level id comparable across column types: SQLite may store one id as INTEGER 3 in `levels` and
    as TEXT '3' (or REAL 3.0) in `captions`, which are the same level."""
    if isinstance(value, str):
        value = _parse_number(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _parse_number(text: str) -> int | float | str:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _videos(db: Database) -> list[sqlite3.Row]:
    present = db.columns("videos", VIDEO_COLUMNS)
    columns = list(VIDEO_COLUMNS) + [c for c in VIDEO_META_COLUMNS if c in present]
    return db.query(f"SELECT rowid, {', '.join(columns)} FROM videos ORDER BY rowid")


def _captions(db: Database, ctx: BuildContext) -> dict[str, list[sqlite3.Row]]:
    """Caption rows grouped by video id (as text), read in one pass rather than one query per video."""
    required = CAPTION_COLUMNS + (FILTER_COLUMNS if ctx.options.filter else ())
    required += ("raw_narration",) if ctx.options.narration else ()
    present = db.columns("captions", required)
    columns = list(CAPTION_COLUMNS) + [c for c in FILTER_COLUMNS + ("raw_narration",) if c in present]
    groups: dict[str, list[sqlite3.Row]] = {}
    for row in db.query(f"SELECT {', '.join(columns)} FROM captions ORDER BY rowid"):
        video_id = _video_id(db, row, f"captions row caption_id={row['caption_id']}")
        groups.setdefault(video_id, []).append(row)
    return groups


def _text(db: Database, row: sqlite3.Row, column: str, where: str) -> Optional[str]:
    """A text column as `str`, or None for NULL. A BLOB is decoded as UTF-8 (never written as "b'...'"),
    and one that is not UTF-8 is an error naming the row."""
    value = row[column]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise db.fail(where, f"{column}: BLOB is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return None if value is None else str(value)


def _video_id(db: Database, row: sqlite3.Row, where: str) -> str:
    """The row's video_id as text; NULL or blank names no video (not the video "None"), so it is an error."""
    video_id = _text(db, row, "video_id", where)
    if video_id is None:
        raise db.fail(where, "video_id: missing (NULL)")
    if not video_id.strip():
        raise db.fail(where, f"video_id: blank {video_id!r}")
    return video_id


def _number(db: Database, row: sqlite3.Row, column: str, where: str, required: bool) -> Optional[float]:
    value = row[column]
    if value is None:
        if required:
            raise db.fail(where, f"{column}: missing (NULL)")
        return None
    if isinstance(value, (bytes, str)) or not math.isfinite(float(value)):
        raise db.fail(where, f"{column}: expected a finite number, got {value!r}")
    return float(value)


def _caption(db: Database, row: sqlite3.Row, levels: dict[Any, str]) -> Caption:
    where = f"captions row caption_id={row['caption_id']}"
    level = levels.get(_level_key(row["level_id"]))
    if level is None:
        raise db.fail(where, f"level_id: {row['level_id']!r} is not in table levels")
    start = _number(db, row, "start_time", where, True)
    end = _number(db, row, "end_time", where, True)
    if start < 0 or end < 0:
        raise db.fail(where, f"{'start_time' if start < 0 else 'end_time'}: negative time")
    keys = row.keys()
    relevant = all(_flag(row[c]) for c in FILTER_COLUMNS if c in keys)
    narration = _text(db, row, "raw_narration", where) if "raw_narration" in keys else None
    return Caption(row["caption_id"], level, start, end, _text(db, row, "caption", where) or "",
                   narration or "", relevant)


def _flag(value: Any) -> bool:
    return value == 1 or str(value).strip().lower() in ("1", "true")


def _record(db: Database, video_id: str, video: sqlite3.Row, captions: list[Caption], ctx: BuildContext) -> Built:
    changes = Changes()
    where = f"videos row video_id={video_id}"
    duration = _number(db, video, "duration", where, False)
    duration = duration if duration and duration > 0 else None
    narration = _narration(captions, duration, changes) if ctx.options.narration else []
    segments = clip_to_duration(_segments(captions, ctx.options.filter, changes), duration, changes)
    record = new_record(video_id, duration=duration, meta=_meta(db, video, where),
                        segments=build_tree(segments, changes), narration=narration)
    return Built(record, changes)


def _meta(db: Database, video: sqlite3.Row, where: str) -> dict[str, Any]:
    """The video's title, fps, width and height when present; numbers must be finite (JSON has no Infinity)."""
    meta: dict[str, Any] = {}
    for column in VIDEO_META_COLUMNS:
        if column not in video.keys() or video[column] is None:
            continue
        if column == "title":
            meta[column] = _text(db, video, column, where)
        else:
            _number(db, video, column, where, False)
            meta[column] = video[column]
    return meta


def _segments(captions: list[Caption], use_filter: bool, changes: Changes) -> list[Segment]:
    """Captions that pass the filter and have a span and text, as flat segments."""
    out = []
    for cap in captions:
        if use_filter and not cap.relevant:
            changes.dropped[FILTERED] += 1
        elif cap.end <= cap.start:
            changes.dropped[EMPTY_SPAN] += 1
        elif not cap.text.strip():
            changes.dropped[EMPTY_TEXT] += 1
        else:
            out.append(Segment(cap.level, cap.start, cap.end, caption=cap.text))
    return out


def _narration(captions: list[Caption], duration: Optional[float], changes: Changes) -> list[Narration]:
    """The finest level's raw narration in time order, cut at the video's end (counted)."""
    present = {c.level for c in captions}
    if not present:
        return []
    finest = max(present, key=LEVEL_RANK.__getitem__)
    out = []
    for cap in sorted((c for c in captions if c.level == finest), key=lambda c: (c.start, c.end)):
        end = min(cap.end, duration) if duration is not None else cap.end
        if end <= cap.start or not cap.narration.strip():
            changes.dropped[NARRATION_DROPPED] += 1
            continue
        if end < cap.end:
            changes.fixed[NARRATION_CUT] += 1
        out.append(Narration(cap.start, end, cap.narration))
    return out


# --------------------------------------------------------------------------------------------------
# Tree inference


def _overlap(a: Segment, b: Segment) -> float:
    return min(a.end, b.end) - max(a.start, b.start)


def _best_parent(seg: Segment, placed: dict[str, list[Segment]]) -> Optional[Segment]:
    """The coarser segment `seg` overlaps most, looking at the next-coarser level first (a task goes
    under a step when it overlaps any, else under a phase); ties go to the earliest, since `placed` is
    kept in (start, end) order."""
    for level in reversed(TREE_LEVELS[: TREE_LEVELS.index(seg.level)]):
        best, best_overlap = None, 0.0
        for candidate in placed.get(level, []):
            overlap = _overlap(seg, candidate)
            if overlap > best_overlap:
                best, best_overlap = candidate, overlap
        if best is not None:
            return best
    return None


def _clip_to_parent(seg: Segment, parent: Segment, changes: Changes) -> None:
    start, end = max(seg.start, parent.start), min(seg.end, parent.end)
    if (start, end) != (seg.start, seg.end):
        seg.start, seg.end = start, end
        changes.fixed[f"{seg.level}(s) clipped to their parent {parent.level}"] += 1


def build_tree(segments: list[Segment], changes: Changes) -> list[Segment]:
    """Nest flat phase/step/task segments by time (coarse levels first, so a child is matched against
    its parent's final span), clip children to parents and trim sibling overlaps; see the module doc."""
    roots: list[Segment] = []
    placed: dict[str, list[Segment]] = {}
    for level in TREE_LEVELS:
        groups: dict[int, tuple[Optional[Segment], list[Segment]]] = {}
        for seg in sorted((s for s in segments if s.level == level), key=lambda s: (s.start, s.end)):
            parent = _best_parent(seg, placed)
            if parent is not None:
                _clip_to_parent(seg, parent, changes)
            elif level != TREE_LEVELS[0] and any(placed.values()):
                changes.notes[f"{level}(s) outside every coarser segment, kept at the top level"] += 1
            groups.setdefault(id(parent), (parent, []))[1].append(seg)
        placed[level] = []
        for parent, siblings in groups.values():
            kept = resolve_overlaps(siblings, changes)
            (parent.children if parent is not None else roots).extend(kept)
            placed[level].extend(kept)
        placed[level].sort(key=lambda s: (s.start, s.end))  # for `_best_parent`'s tie-break
    _sort(roots)
    return roots


def _sort(segments: list[Segment]) -> None:
    segments.sort(key=lambda s: (s.start, s.end, LEVEL_RANK[s.level]))
    for seg in segments:
        _sort(seg.children)

"""Shared plumbing for `videolang manifest build`: reading sources with exact error locations, finding
video files, fixing overlaps, counting every change, and writing a manifest that is checked before use.

Each builder (one module per source family) turns one public corpus's annotation files into
`Built(record, changes)` items; everything the builders have in common lives here so each stays a short reading of
its source format.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, NoReturn, Optional, Sequence, TypeVar

from videolang.data.manifest import LEVELS, Segment, VideoRecord
from videolang.errors import VideolangError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
# How many missing ids the summary names before it just counts.
SHOW_IDS = 5

T = TypeVar("T")


class BuildError(VideolangError):
    """A source file is unreadable or malformed: one line naming the file and the key path or table row."""

    def __init__(self, file: str | os.PathLike, where: str, message: str):
        self.file, self.where = str(file), where
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")


# --------------------------------------------------------------------------------------------------
# Reading JSON with key paths


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (JSON `"\\ud800"`, undecodable file names), which cannot be
    written as UTF-8: checking where text is read lets the error name its source instead of the writer crashing."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """`text` with lone surrogates shown as `\\udXXX`, safe in any message."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _short(value: Any) -> str:
    """A value as JSON, cut so a 400-digit number or a long list does not flood the error line."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(value: int | float) -> Optional[float]:
    """`value` as a finite float, or None (infinite, NaN, or an integer too large for a float)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


@dataclass(frozen=True)
class Field:
    """A JSON value plus the file and key path it came from, so every complaint can say exactly where.

    Accessors check the type they promise and raise `BuildError` (`FILE: KEY.PATH[i]: message`) instead
    of letting a `KeyError` or `TypeError` surface from deep inside a builder.
    """

    value: Any
    file: str
    where: str = ""

    def fail(self, message: str) -> NoReturn:
        raise BuildError(self.file, self.where or "<top level>", message)

    def child(self, key: str | int) -> "Field":
        if isinstance(key, int):
            where = f"{self.where}[{key}]"
        else:
            where = f"{self.where}.{key}" if self.where else key
        if isinstance(self.value, dict):
            value = self.value.get(key)
        elif isinstance(self.value, list) and isinstance(key, int) and 0 <= key < len(self.value):
            value = self.value[key]
        else:
            value = None
        return Field(value, self.file, where)

    def mapping(self) -> dict:
        if not isinstance(self.value, dict):
            self.fail(f"expected an object, got {_type_name(self.value)}")
        return self.value

    def sequence(self) -> list:
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {_type_name(self.value)}")
        return self.value

    def optional(self, key: str) -> Optional["Field"]:
        """The child at `key`, or None when it is absent or null."""
        value = self.mapping().get(key)
        return None if value is None else self.child(key)

    def required(self, key: str) -> "Field":
        found = self.optional(key)
        if found is None:
            self.child(key).fail("missing required key")
        return found

    def items(self) -> Iterator[tuple[str, "Field"]]:
        for key in self.mapping():
            if not is_utf8(key):
                self.fail(f"key '{printable(key)}' is not valid Unicode text (lone surrogate)")
            yield key, self.child(key)

    def video_ids(self) -> list[tuple[str, "Field"]]:
        """(video id, entry) pairs of an object keyed by video id; a blank id names no file, so it is an error."""
        pairs = list(self.items())
        for key, _ in pairs:
            if not key.strip():
                self.fail(f"blank video id {key!r} (a key of this object)")
        return pairs

    def elements(self) -> Iterator["Field"]:
        for i in range(len(self.sequence())):
            yield self.child(i)

    def text(self) -> str:
        """A string, possibly empty (callers decide whether empty text is dropped or an error)."""
        if not isinstance(self.value, str):
            self.fail(f"expected a string, got {_type_name(self.value)}")
        if not is_utf8(self.value):
            self.fail(f"not valid Unicode text (lone surrogate): '{printable(self.value)[:60]}'")
        return self.value

    def one_of(self, names: dict[str, T], what: str) -> T:
        """The value of text naming one of `names` (e.g. a source's split names -> ours)."""
        text = self.text()
        if text not in names:
            self.fail(f"unknown {what} '{text}'; expected one of {', '.join(names)}")
        return names[text]

    def plain(self) -> Any:
        """The value as is, for copying into `meta`: checked to hold only writable text and finite numbers."""
        value = self.value
        if isinstance(value, str):
            self.text()
        elif _is_number(value):
            self.number()
        elif isinstance(value, dict):
            for _, child in self.items():
                child.plain()
        elif isinstance(value, list):
            for child in self.elements():
                child.plain()
        return value

    def number(self) -> float:
        if not _is_number(self.value):
            self.fail(f"expected a number, got {_type_name(self.value)}")
        value = _finite(self.value)
        if value is None:
            self.fail(f"expected a finite number, got {_short(self.value)}")
        return value

    def time(self) -> float:
        value = self.number()
        if value < 0:
            self.fail(f"negative time {value}")
        return value

    def span(self) -> tuple[float, float]:
        """A `[start, end]` pair of seconds with `0 <= start < end`."""
        value = self.value
        if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
            self.fail(f"expected [start, end] with 0 <= start < end, got {_short(value)}")
        start, end = self.child(0).number(), self.child(1).number()
        if not 0 <= start < end:
            self.fail(f"expected [start, end] with 0 <= start < end, got {_short(value)}")
        return start, end


def read_json(path: Path) -> Field:
    """The parsed file as a `Field`; unreadable or invalid JSON is a one-line `BuildError`."""
    if not path.is_file():
        raise BuildError(path, "", "file not found" if not path.exists() else "not a file")
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: files saved by Windows tools start with a BOM
            return Field(json.load(f), str(path))
    except json.JSONDecodeError as e:
        raise BuildError(path, "", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise BuildError(path, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise BuildError(path, "", f"invalid JSON: {e}") from None
    except RecursionError:
        raise BuildError(path, "", "invalid JSON: nested too deeply") from None
    except OSError as e:
        raise BuildError(path, "", f"cannot read: {e.strerror}") from None


# --------------------------------------------------------------------------------------------------
# Reading delimited text tables (CSV, tab-separated label files) with line numbers


class RowError(BuildError):
    """A bad cell: `FILE:LINE: FIELD: message`."""

    def __init__(self, file: str | os.PathLike, line: int, column: str, message: str):
        super().__init__(f"{file}:{line}", column, message)


@dataclass(frozen=True)
class Row:
    """One data row of a table, with its file and 1-based line number, so any complaint names the cell."""

    cells: dict[str, str]
    file: str
    line: int

    def fail(self, column: str, message: str) -> NoReturn:
        raise RowError(self.file, self.line, column, message)

    def text(self, column: str) -> str:
        """The cell, stripped; a missing column or an empty cell is an error."""
        value = self.cells.get(column)
        if value is None:
            self.fail(column, "missing (the row has fewer cells than the header)")
        value = value.strip()
        if not value:
            self.fail(column, "empty")
        return value

    def number(self, column: str) -> float:
        raw = self.text(column)
        try:
            value = float(raw)
        except ValueError:
            self.fail(column, f"expected a number, got {raw[:40]!r}")
        if not math.isfinite(value):
            self.fail(column, f"expected a finite number, got {raw[:40]!r}")
        return value

    def integer(self, column: str) -> int:
        raw = self.text(column)
        try:
            return int(raw)
        except ValueError:
            self.fail(column, f"expected an integer, got {raw[:40]!r}")

    def time(self, column: str) -> float:
        value = self.number(column)
        if value < 0:
            self.fail(column, f"negative time {value:g}")
        return value


def read_table(path: Path, *, delimiter: str = ",", header: Optional[Sequence[str]] = None,
               require: Sequence[str] = ()) -> Iterator[Row]:
    """Rows of a delimited text file, streamed (constant memory on million-line files).

    With `header=None` the first line names the columns (matched case-insensitively and stripped, so
    `Frame\tPhase` gives `frame`, `phase`) and must contain `require`; otherwise `header` names the columns
    of a file without one. Blank lines are skipped. Unreadable files and bad headers are one-line errors."""
    import csv

    if not path.is_file():
        raise BuildError(path, "", "file not found" if not path.exists() else "not a file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            columns = list(header) if header is not None else None
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if columns is None:
                    columns = [c.strip().lower() for c in cells]
                    missing = [c for c in require if c not in columns]
                    if missing:
                        raise RowError(path, line, "header", f"expected columns {', '.join(require)}; "
                                       f"got {', '.join(columns) or 'none'} (missing {', '.join(missing)})")
                    continue
                while len(cells) > len(columns) and not cells[-1].strip():
                    cells = cells[:-1]  # a trailing delimiter (tab or space at the end of a line)
                if len(cells) > len(columns):
                    raise RowError(path, line, columns[-1],
                                   f"{len(cells)} cells but the header names {len(columns)} columns")
                yield Row(dict(zip(columns, cells)), str(path), line)
    except UnicodeDecodeError as e:
        raise BuildError(path, "", f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise BuildError(path, "", f"not a valid delimited table: {e}") from None
    except OSError as e:
        raise BuildError(path, "", f"cannot read: {e.strerror}") from None


# --------------------------------------------------------------------------------------------------
# Options, counts and the summary


@dataclass(frozen=True)
class BuildOptions:
    """What `videolang manifest build` was asked for (format-specific switches are ignored elsewhere)."""

    videos: Path
    split: Optional[str] = None  # overrides every record's split
    corpus: Optional[str] = None  # default: the format name
    limit: Optional[int] = None  # first N source videos
    keep_missing: bool = False
    filter: bool = True  # surglavi: keep only surgical, descriptive captions
    narration: bool = False  # surglavi: raw_narration becomes the narration track
    fps: Optional[float] = None  # phase files / mstcn: frames per second of the annotation
    fold: int = 1  # mstcn: which splits/*.splitN.bundle gives train/test
    progress: bool = True


@dataclass
class Changes:
    """What building one record dropped, fixed or noted, by reason. Kept with the record and added to the
    report only when the record is written, so the summary never counts videos that were skipped."""

    dropped: Counter = field(default_factory=Counter)  # reason -> annotations
    fixed: Counter = field(default_factory=Counter)  # reason -> annotations
    notes: Counter = field(default_factory=Counter)  # reason -> annotations, kept as they are


class Built(NamedTuple):
    """A builder's output: one record and the changes made to build it."""

    record: VideoRecord
    changes: Changes


@dataclass
class BuildReport:
    """Every count the summary prints: builders add to `skipped` (videos); `dropped`, `fixed` and `notes`
    are the sums of the written records' `Changes`."""

    format: str
    out: Path
    videos_root: Path
    records: int = 0
    segments: Counter = field(default_factory=Counter)  # level -> count
    narration: int = 0
    missing: list[str] = field(default_factory=list)  # ids skipped for want of a file
    kept_missing: list[str] = field(default_factory=list)  # ids kept with a guessed path
    skipped: Counter = field(default_factory=Counter)  # reason -> videos
    dropped: Counter = field(default_factory=Counter)  # reason -> annotations
    fixed: Counter = field(default_factory=Counter)  # reason -> annotations
    notes: Counter = field(default_factory=Counter)  # reason -> annotations, kept as they are

    def count(self, record: VideoRecord, changes: Changes) -> None:
        """Add a record that is being written, with the changes made to build it."""
        self.records += 1
        self.segments.update(seg.level for seg in record.iter_segments())
        self.narration += len(record.narration)
        self.dropped.update(changes.dropped)
        self.fixed.update(changes.fixed)
        self.notes.update(changes.notes)

    def lines(self) -> list[str]:
        """The human summary: what was written, then why anything was left out or changed."""
        return self.totals() + self.changes()

    def totals(self) -> list[str]:
        levels = " ".join(f"{lv}={self.segments[lv]}" for lv in LEVELS if self.segments[lv])
        parts = [f"segments: {levels or 'none'}"]
        if self.narration:
            parts.append(f"narration sentences: {self.narration}")
        return [f"wrote {self.records} record(s) to {self.out}", "; ".join(parts)]

    def changes(self) -> list[str]:
        out = []
        if self.missing:
            out.append(
                f"skipped {len(self.missing)} video(s) with no file under {self.videos_root}: "
                f"{_first_ids(self.missing)} (--keep-missing keeps them)"
            )
        if self.kept_missing:
            out.append(
                f"kept {len(self.kept_missing)} video(s) with no file, path guessed as "
                f"{self.videos_root}/<id>.mp4: {_first_ids(self.kept_missing)}"
            )
        for title, counts in (("skipped videos", self.skipped), ("dropped", self.dropped), ("fixed", self.fixed),
                              ("notes", self.notes)):
            if counts:
                out.append(f"{title}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())))
        return out


def _first_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOW_IDS])
    return shown + (f", ... ({len(ids) - SHOW_IDS} more)" if len(ids) > SHOW_IDS else "")


# --------------------------------------------------------------------------------------------------
# Video files


class VideoIndex:
    """Video files under a folder by stem, found in one recursive walk so a million lookups stay cheap."""

    def __init__(self, root: Path, files: dict[str, list[Path]]):
        self.root = root
        self._files = files

    @classmethod
    def scan(cls, root: Path) -> "VideoIndex":
        if not root.is_dir():
            raise BuildError(root, "", "--videos must be a folder" + ("" if root.exists() else " (not found)"))
        files: dict[str, list[Path]] = {}
        seen_dirs: set[tuple[int, int]] = set()
        for folder, dirs, names in os.walk(root, followlinks=True):
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop
                dirs[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            dirs.sort()
            for name in sorted(names):
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    files.setdefault(stem, []).append(Path(folder) / name)
        return cls(root, files)

    def find(self, video_id: str) -> Optional[Path]:
        """The one file whose stem is `video_id`; two candidates are an error, since guessing is unsafe."""
        found = self._files.get(video_id)
        if not found:
            return None
        if len(found) > 1:
            raise BuildError(
                self.root, "", f"two video files for id '{video_id}': {found[0]} and {found[1]}; keep one"
            )
        return found[0]


def reserve_draft(out: Path) -> Path:
    """A new, uniquely named file next to `out` to write into: two writers never share it, no user file is
    ever removed in its place, and an unwritable folder fails here, before any work."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent)
    except OSError as e:
        raise BuildError(out, "", f"--out cannot be written: {e.strerror}") from None
    os.close(fd)
    return Path(name)


def relative_to_manifest(file: Path, out: Path) -> str:
    """`file` relative to the manifest's folder (so the corpus can move as a whole), absolute otherwise.

    The folder is taken resolved, as readers resolve it (`path.resolve().parent`): when `--out`'s folder is
    reached through a symlink, `..` must climb from where the manifest really is."""
    try:
        return os.path.relpath(file.absolute(), out.absolute().parent.resolve())
    except ValueError:  # another drive on Windows
        return str(file.absolute())


@dataclass
class BuildContext:
    """What a builder needs besides its source: options, the video index and the report to count into."""

    format: str
    options: BuildOptions
    index: VideoIndex
    report: BuildReport

    def videos(self, items: Sequence[T] | Iterable[T], total: Optional[int] = None) -> Iterator[T]:
        """The source's videos in order, cut to `--limit`, with a progress bar on stderr."""
        from tqdm import tqdm

        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        limit = self.options.limit
        if limit is not None:
            items = islice(items, limit)
            total = limit if total is None else min(total, limit)
        yield from tqdm(items, total=total, desc=self.format, unit="video", disable=not self.options.progress)

    def find_video(self, video_id: str) -> Optional[Path]:
        """The video's file, or None (counted as missing) when there is none."""
        found = self.index.find(video_id)
        if found is None:
            self.report.missing.append(video_id)
        return found

    def attach_path(self, record: VideoRecord) -> bool:
        """Fill `path`/`resolved_path`; False when the record must be skipped for want of a file."""
        found = self.index.find(record.video_id)
        if found is None:
            if not self.options.keep_missing:
                self.report.missing.append(record.video_id)
                return False
            self.report.kept_missing.append(record.video_id)
            found = self.index.root / f"{record.video_id}.mp4"
        record.resolved_path = found.absolute()
        record.path = relative_to_manifest(found, self.report.out)
        if not is_utf8(record.path):
            raise BuildError(printable(str(found)), "", "file name is not valid UTF-8, so a manifest cannot "
                             "hold its path; rename the file or folder")
        return True


# --------------------------------------------------------------------------------------------------
# Segment fixes shared by the builders


def new_record(video_id: str, **fields: Any) -> VideoRecord:
    """A record whose path is filled in later, once the video file is found."""
    return VideoRecord(video_id=video_id, path="", resolved_path=Path(), **fields)


def clip_to_duration(segments: list[Segment], duration: Optional[float], changes: Changes) -> list[Segment]:
    """Cut segments that run past the video's end (rounding in the source); drop those left empty."""
    if duration is None:
        return segments
    kept = []
    for seg in segments:
        if seg.end > duration:
            if seg.start >= duration:
                changes.dropped[f"{seg.level}(s) starting after the video's end"] += 1
                continue
            seg.end = duration
            changes.fixed[f"{seg.level}(s) cut at the video's end"] += 1
        kept.append(seg)
    return kept


def resolve_overlaps(siblings: list[Segment], changes: Changes) -> list[Segment]:
    """Make same-level siblings a partition of time, deterministically: in (start, end) order, a segment
    that starts before the previous one ends is trimmed to start where it ends; one left empty is dropped.

    Assumes all siblings share one level (the schema only forbids overlaps within a level)."""
    kept: list[Segment] = []
    for seg in sorted(siblings, key=lambda s: (s.start, s.end)):
        if kept and seg.start < kept[-1].end:
            if seg.end <= kept[-1].end:
                changes.dropped[f"{seg.level}(s) inside an earlier overlapping {seg.level}"] += 1
                continue
            seg.start = kept[-1].end
            changes.fixed[f"{seg.level} overlap(s) trimmed"] += 1
        kept.append(seg)
    return kept


Builder = Callable[[Path, BuildContext], Iterator[Built]]

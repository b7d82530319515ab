"""Hierarchical JSONL manifests (`videolang.manifest/1`): typed records, a validator, derived views.

One JSON object per line, one line per source video, with a tree of time segments
(`phase` > `step` > `task`, or flat `clip`s) and an optional noisy `narration` track. The validator
collects *every* problem as `FILE:LINE: FIELD: message` before anything trains, so a user fixes a
manifest in one pass instead of one crash at a time.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from videolang.errors import ManifestError

SCHEMA_VERSION = "videolang.manifest/1"
# Coarse to fine. `clip` is the level of flat corpora and is finer than everything else.
LEVEL_RANK = {"phase": 0, "step": 1, "task": 2, "clip": 3}
LEVELS = tuple(LEVEL_RANK)
# Curated procedural levels are partitions of time; clips (scenes, dense captions) may overlap.
NON_OVERLAPPING_LEVELS = frozenset({"phase", "step", "task"})
TOP_KEYS = ("video_id", "path", "split", "corpus", "duration", "meta", "segments", "narration")
SEGMENT_KEYS = ("level", "start", "end", "label", "caption", "script", "children")
NARRATION_KEYS = ("start", "end", "text")
SCRIPT_KEYS = ("shot_type", "camera_movement", "content", "title")
# Float slack when checking containment/overlap: timestamps often come from fps rounding.
TIME_TOL = 1e-3


@dataclass
class Segment:
    level: str
    start: float
    end: float
    caption: Optional[str] = None
    label: Optional[str] = None
    script: Optional[dict[str, str]] = None
    children: list["Segment"] = field(default_factory=list)
    segment_id: str = ""  # index path inside the video, e.g. "0.2.1"

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level, "start": self.start, "end": self.end}
        for key in ("label", "caption", "script"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out


@dataclass
class Narration:
    start: float
    end: float
    text: str


@dataclass
class VideoRecord:
    video_id: str
    path: str  # as written in the manifest
    resolved_path: Path  # absolute, after applying the manifest folder / --video-root
    split: str = "train"
    corpus: str = ""
    duration: Optional[float] = None
    meta: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    narration: list[Narration] = field(default_factory=list)
    source: str = ""  # "FILE:LINE", for error messages downstream

    def iter_segments(self, level: Optional[str] = None) -> Iterator[Segment]:
        """Depth-first, time-ordered walk; `level` keeps only that level."""
        stack = list(reversed(self.segments))
        while stack:
            seg = stack.pop()
            if level is None or seg.level == level:
                yield seg
            stack.extend(reversed(seg.children))

    @property
    def span_end(self) -> float:
        """The video's duration, or the latest annotated time when the duration is not given."""
        if self.duration is not None:
            return self.duration
        ends = [s.end for s in self.iter_segments()] + [n.end for n in self.narration]
        return max(ends, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"video_id": self.video_id, "path": self.path, "split": self.split}
        if self.corpus:
            out["corpus"] = self.corpus
        if self.duration is not None:
            out["duration"] = self.duration
        if self.meta:
            out["meta"] = self.meta
        if self.segments:
            out["segments"] = [s.to_dict() for s in self.segments]
        if self.narration:
            out["narration"] = [{"start": n.start, "end": n.end, "text": n.text} for n in self.narration]
        return out


# --------------------------------------------------------------------------------------------------
# Validation


class _Checker:
    """Collects problems and warnings for one manifest file."""

    def __init__(self, file: str, check_files: bool, base: Path):
        self.file = file
        self.check_files = check_files
        self.base = base
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.line = 0

    def problem(self, fld: str, msg: str) -> None:
        self.problems.append(f"{self.file}:{self.line}: {fld}: {msg}")

    def warn(self, fld: str, msg: str) -> None:
        self.warnings.append(f"{self.file}:{self.line}: {fld}: {msg}")

    def unknown_keys(self, obj: dict, allowed: tuple[str, ...], where: str) -> None:
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.warn(_join(where, str(key)), f"unknown field, ignored{hint}")

    def _present(self, obj: dict, key: str, fld: str, required: bool) -> Any:
        """The field's value, or None (reporting it if required) when absent or null."""
        value = obj.get(key)
        if value is None and required:
            self.problem(fld, "missing required field")
        return value

    def string(self, obj: dict, key: str, where: str, required: bool) -> Optional[str]:
        fld = _join(where, key)
        value = self._present(obj, key, fld, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(fld, f"expected a string, got {type(value).__name__}")
            return None
        if not value.strip():
            self.problem(fld, "must not be empty")
            return None
        return value

    def number(self, obj: dict, key: str, where: str, required: bool) -> Optional[float]:
        fld = _join(where, key)
        value = self._present(obj, key, fld, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(fld, f"expected a number, got {type(value).__name__}")
            return None
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            self.problem(fld, "must be a finite number")
            return None
        return value

    def span(self, obj: dict, where: str, duration: Optional[float]) -> Optional[tuple[float, float]]:
        start = self.number(obj, "start", where, True)
        end = self.number(obj, "end", where, True)
        ok = True
        if start is not None and start < 0:
            self.problem(_join(where, "start"), f"negative time {start}")
            ok = False
        if end is not None and end < 0:
            self.problem(_join(where, "end"), f"negative time {end}")
            ok = False
        if start is None or end is None or not ok:
            return None
        if end <= start:
            self.problem(_join(where, "end"), f"end {end} must be greater than start {start}")
            return None
        if duration is not None and end > duration + TIME_TOL:
            self.problem(_join(where, "end"), f"end {end} is past the video's duration {duration}")
        return start, end

    # -- records ------------------------------------------------------------------------------

    def record(self, obj: Any, seen_ids: dict[str, int], video_root: Optional[Path]) -> Optional[VideoRecord]:
        if not isinstance(obj, dict):
            self.problem("<record>", f"expected a JSON object, got {type(obj).__name__}")
            return None
        n_before = len(self.problems)
        self.unknown_keys(obj, TOP_KEYS, "")
        video_id = self.string(obj, "video_id", "", True)
        if video_id is not None:
            if video_id in seen_ids:
                self.problem("video_id", f"duplicate video_id '{video_id}' (first on line {seen_ids[video_id]})")
            else:
                seen_ids[video_id] = self.line
        path = self.string(obj, "path", "", True)
        resolved = None
        if path is not None:
            resolved = _resolve(path, video_root or self.base)
            if not resolved.is_file():
                (self.problem if self.check_files else self.warn)("path", f"file not found: {resolved}")
        split = self.string(obj, "split", "", False) or "train"
        corpus = self.string(obj, "corpus", "", False) or ""
        duration = self.number(obj, "duration", "", False)
        if duration is not None and duration <= 0:
            self.problem("duration", f"must be positive, got {duration}")
            duration = None
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            self.problem("meta", f"expected an object, got {type(meta).__name__}")
            meta = {}

        segments = self.segment_list(obj.get("segments"), "segments", None, duration)
        narration = self.narration(obj.get("narration"), duration)
        if "segments" not in obj and "narration" not in obj:
            self.warn("segments", "video has neither segments nor narration; it yields no training pairs")
        if len(self.problems) > n_before or video_id is None or path is None:
            return None
        return VideoRecord(
            video_id=video_id,
            path=path,
            resolved_path=resolved,
            split=split,
            corpus=corpus,
            duration=duration,
            meta=meta,
            segments=segments,
            narration=narration,
            source=f"{self.file}:{self.line}",
        )

    def segment_list(
        self, value: Any, where: str, parent: Optional[tuple[str, float, float]], duration: Optional[float]
    ) -> list[Segment]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(where, f"expected a list, got {type(value).__name__}")
            return []
        out: list[Segment] = []
        placed: list[tuple[str, float, float, str]] = []  # (level, start, end, field) for overlap checks
        for i, item in enumerate(value):
            seg = self.segment(item, f"{where}[{i}]", parent, duration)
            if seg is None:
                continue
            seg_where = f"{where}[{i}]"
            if seg.level in NON_OVERLAPPING_LEVELS:
                for level, s, e, other in placed:
                    if level == seg.level and seg.start < e - TIME_TOL and s < seg.end - TIME_TOL:
                        self.problem(
                            _join(seg_where, "start"),
                            f"{seg.level} [{seg.start}, {seg.end}) overlaps sibling {other} [{s}, {e})",
                        )
                        break
                placed.append((seg.level, seg.start, seg.end, seg_where))
            out.append(seg)
        return out

    def segment(
        self, obj: Any, where: str, parent: Optional[tuple[str, float, float]], duration: Optional[float]
    ) -> Optional[Segment]:
        if not isinstance(obj, dict):
            self.problem(where, f"expected an object, got {type(obj).__name__}")
            return None
        n_before = len(self.problems)
        self.unknown_keys(obj, SEGMENT_KEYS, where)
        level = self.string(obj, "level", where, True)
        if level is not None and level not in LEVEL_RANK:
            close = difflib.get_close_matches(level, LEVELS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.problem(_join(where, "level"), f"unknown level '{level}'; expected one of {', '.join(LEVELS)}{hint}")
            level = None
        span = self.span(obj, where, duration)
        if parent is not None and level is not None:
            p_level, p_start, p_end = parent
            if LEVEL_RANK[level] <= LEVEL_RANK[p_level]:
                self.problem(_join(where, "level"), f"'{level}' is not finer than its parent's level '{p_level}'")
            if span is not None and (span[0] < p_start - TIME_TOL or span[1] > p_end + TIME_TOL):
                self.problem(
                    _join(where, "start" if span[0] < p_start - TIME_TOL else "end"),
                    f"[{span[0]}, {span[1]}) lies outside its parent's span [{p_start}, {p_end})",
                )
        caption = self.string(obj, "caption", where, False)
        label = self.string(obj, "label", where, False)
        if obj.get("caption") is None and obj.get("label") is None:
            self.problem(where, "a segment needs a caption or a label")
        script = self.script(obj.get("script"), _join(where, "script"))
        children: list[Segment] = []
        if level is not None and span is not None:
            children = self.segment_list(obj.get("children"), _join(where, "children"), (level, *span), duration)
        elif obj.get("children"):
            # Still report the children's own problems, without a parent to check them against.
            self.segment_list(obj.get("children"), _join(where, "children"), None, duration)
        if len(self.problems) > n_before:
            return None
        return Segment(level, span[0], span[1], caption, label, script, children)

    def script(self, value: Any, where: str) -> Optional[dict[str, str]]:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(where, f"expected an object, got {type(value).__name__}")
            return None
        self.unknown_keys(value, SCRIPT_KEYS, where)
        out = {}
        for key in SCRIPT_KEYS:
            v = self.string(value, key, where, False)
            if v is not None:
                out[key] = v
        return out

    def narration(self, value: Any, duration: Optional[float]) -> list[Narration]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem("narration", f"expected a list, got {type(value).__name__}")
            return []
        out = []
        for i, item in enumerate(value):
            where = f"narration[{i}]"
            if not isinstance(item, dict):
                self.problem(where, f"expected an object, got {type(item).__name__}")
                continue
            n_before = len(self.problems)
            self.unknown_keys(item, NARRATION_KEYS, where)
            span = self.span(item, where, duration)
            text = self.string(item, "text", where, True)
            if len(self.problems) == n_before and span is not None and text is not None:
                out.append(Narration(span[0], span[1], text))
        return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p)


def _assign_ids(segments: list[Segment], prefix: str = "") -> None:
    for i, seg in enumerate(segments):
        seg.segment_id = f"{prefix}{i}"
        _assign_ids(seg.children, f"{seg.segment_id}.")


def check_manifest(
    path: str | Path, *, video_root: str | Path | None = None, check_files: bool = False
) -> tuple[list[VideoRecord], list[str], list[str]]:
    """Parse and validate one manifest: (valid records, problems, warnings). Never raises on content."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError([f"{path}:0: <file>: manifest not found"])
    checker = _Checker(str(path), check_files, path.resolve().parent)
    root = Path(video_root).expanduser().resolve() if video_root is not None else None
    records: list[VideoRecord] = []
    seen: dict[str, int] = {}
    n_lines = 0
    for lineno, line in _lines(path):
        checker.line = lineno
        if isinstance(line, UnicodeError):
            n_lines += 1
            checker.problem("<file>", str(line))
            continue
        line = line.rstrip("\r")
        if not line.strip():
            continue
        n_lines += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            checker.problem("<json>", f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        rec = checker.record(obj, seen, root)
        if rec is not None:
            _assign_ids(rec.segments)
            records.append(rec)
    if n_lines == 0:
        checker.line = 0
        checker.problem("<file>", "manifest is empty")
    return records, checker.problems, checker.warnings


def _lines(path: Path) -> Iterator[tuple[int, str | UnicodeError]]:
    """(line number, text) of a JSONL file, streamed: memory does not grow with the file. Lines end at
    "\n" only (str.splitlines() would also break at U+0085/U+2028, which captions may contain)."""
    lineno = 0
    with open(path, "rb") as f:
        for raw in f:
            lineno += 1
            try:
                yield lineno, raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as e:  # reported as that line's problem; the other lines are still checked
                yield lineno, UnicodeError(f"not UTF-8 text ({e.reason} at byte {e.start} of the line)")


def validate_manifest(
    path: str | Path, *, video_root: str | Path | None = None, check_files: bool = False
) -> tuple[list[str], list[str]]:
    """(problems, warnings) as `FILE:LINE: FIELD: message` lines; no problems means loadable."""
    try:
        _, problems, warnings = check_manifest(path, video_root=video_root, check_files=check_files)
    except ManifestError as e:
        return e.problems, []
    return problems, warnings


def manifest_files(pattern: str | Path) -> list[Path]:
    """The manifest files a path names: the file itself, or every file a glob (`shards/*.jsonl`) matches,
    sorted so the corpus order never depends on the filesystem."""
    text = str(pattern)
    if not any(ch in text for ch in "*?["):
        return [Path(text)]
    import glob

    files = sorted(Path(p) for p in glob.glob(text, recursive=True))
    if not files:
        raise ManifestError(f"{text}: no manifest file matches this pattern")
    return files


def load_manifest(
    path: str | Path, *, video_root: str | Path | None = None, check_files: bool = False
) -> list[VideoRecord]:
    """Typed records of a valid manifest; raises `ManifestError` listing every problem otherwise."""
    records, problems, _ = check_manifest(path, video_root=video_root, check_files=check_files)
    if problems:
        raise ManifestError(problems)
    return records


def load_manifests(
    sources: str | Path | Iterable[str | Path], *, video_root: str | Path | None = None, check_files: bool = False
) -> list[VideoRecord]:
    """Records of several manifests (files or globs such as `shards/*.jsonl`), in order; every problem of
    every file is reported together. A video id may appear in only one of them."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    records: list[VideoRecord] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for source in sources:
        for file in manifest_files(source):
            found, file_problems, _ = check_manifest(file, video_root=video_root, check_files=check_files)
            problems += file_problems
            for rec in found:
                if rec.video_id in seen:
                    problems.append(f"{rec.source}: video_id: '{rec.video_id}' also appears at {seen[rec.video_id]}")
                seen.setdefault(rec.video_id, rec.source)
            records += found
    if problems:
        raise ManifestError(problems)
    return records


def write_manifest(records: Iterable[VideoRecord | dict], path: str | Path) -> Path:
    """Write records (typed or plain dicts) as JSONL, atomically."""
    from videolang.utils.io import atomic_open

    with atomic_open(path, "w") as f:
        for rec in records:
            obj = rec.to_dict() if isinstance(rec, VideoRecord) else rec
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return Path(path)


# --------------------------------------------------------------------------------------------------
# Derived views


@dataclass(frozen=True)
class ClipPair:
    """One clip-caption pair: the unit of contrastive training and retrieval."""

    video_id: str
    path: Path
    start: float
    end: float
    caption: str
    level: str
    segment_id: str
    label: Optional[str] = None
    script: Optional[dict] = None


def clip_pairs(
    videos: Iterable[VideoRecord], level: str, *, split: Optional[str] = None
) -> list[ClipPair]:
    """Clip-caption pairs at one level (`phase`/`step`/`task`/`clip`), or `narration` sentences.

    Segments without a caption are skipped (they still serve recognition through their label).
    """
    if level not in LEVEL_RANK and level != "narration":
        raise ValueError(f"unknown level '{level}'; expected one of {', '.join(LEVELS)}, narration")
    out = []
    for video in videos:
        if split is not None and video.split != split:
            continue
        if level == "narration":
            for i, n in enumerate(video.narration):
                out.append(ClipPair(video.video_id, video.resolved_path, n.start, n.end, n.text, level, f"n{i}"))
            continue
        for seg in video.iter_segments(level):
            if seg.caption is not None:
                out.append(
                    ClipPair(
                        video.video_id, video.resolved_path, seg.start, seg.end, seg.caption, level,
                        seg.segment_id, seg.label, seg.script,
                    )
                )
    return out


def frame_times(duration: float, fps: float) -> list[float]:
    """Sample times at a fixed rate: the middle of each 1/fps interval of [0, duration)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = int(math.floor(duration * fps + 1e-9))
    return [(i + 0.5) / fps for i in range(n)]


def frame_labels(video: VideoRecord, level: str, fps: float, background: str = "background") -> list[str]:
    """Per-frame labels at `level` sampled at `fps` (see `frame_times`); unlabelled time is `background`.

    A segment's class is its `label`, falling back to its caption, so flat captioned corpora still yield
    sequences.
    """
    segs = sorted(
        ((s.start, s.end, s.label or s.caption or background) for s in video.iter_segments(level)),
        key=lambda x: x[0],
    )
    labels = []
    j = 0
    for t in frame_times(video.span_end, fps):
        while j < len(segs) and segs[j][1] <= t:
            j += 1
        # Segments at one level do not overlap (validated), so the first one covering t is the one.
        k = j
        label = background
        while k < len(segs) and segs[k][0] <= t:
            if segs[k][1] > t:
                label = segs[k][2]
                break
            k += 1
        labels.append(label)
    return labels


def manifest_stats(videos: list[VideoRecord]) -> dict[str, Any]:
    """Counts and durations per split, corpus and level, for `videolang manifest stats`."""
    stats: dict[str, Any] = {
        "videos": len(videos),
        "hours": round(sum(v.span_end for v in videos) / 3600, 3),
        "splits": {},
        "corpora": {},
        "levels": {},
        "narration": {"sentences": 0, "videos_with_narration": 0, "mean_words": 0.0},
    }
    words_total = 0
    for v in videos:
        stats["splits"][v.split] = stats["splits"].get(v.split, 0) + 1
        if v.corpus:
            stats["corpora"][v.corpus] = stats["corpora"].get(v.corpus, 0) + 1
        if v.narration:
            stats["narration"]["videos_with_narration"] += 1
            stats["narration"]["sentences"] += len(v.narration)
            words_total += sum(len(n.text.split()) for n in v.narration)
        for seg in v.iter_segments():
            lv = stats["levels"].setdefault(
                seg.level, {"segments": 0, "mean_seconds": 0.0, "mean_caption_words": 0.0, "labels": set()}
            )
            lv["segments"] += 1
            lv["mean_seconds"] += seg.duration
            lv["mean_caption_words"] += len(seg.caption.split()) if seg.caption else 0
            if seg.label:
                lv["labels"].add(seg.label)
    for lv in stats["levels"].values():
        n = max(lv["segments"], 1)
        lv["mean_seconds"] = round(lv["mean_seconds"] / n, 3)
        lv["mean_caption_words"] = round(lv["mean_caption_words"] / n, 2)
        lv["labels"] = len(lv["labels"])
    n_sent = stats["narration"]["sentences"]
    stats["narration"]["mean_words"] = round(words_total / n_sent, 2) if n_sent else 0.0
    return stats

"""Time-stamped transcripts -> narration units (`videolang curate segment`).

ASR tools emit segments cut wherever the recogniser paused, often mid-sentence and up to 30 s long;
training pairs want one sentence-sized unit per clip. With word timings (WhisperX `words[]`) units are cut
at sentence ends and at pauses, then held between a minimum and a maximum duration; without them each ASR
segment is a unit, split at its sentence ends with times shared out by character count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from videolang.data.builders.common import BuildError, Field, read_json
from videolang.data.manifest import Narration

SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*$")


@dataclass(frozen=True)
class SegmentRules:
    pause: float = 1.0  # a silence at least this long ends a unit (once it has min_seconds)
    min_seconds: float = 1.0  # shorter units are merged with their neighbour
    max_seconds: float = 15.0  # longer units are cut at the word boundary before this length

    def check(self) -> None:
        if not (self.pause > 0 and self.min_seconds >= 0 and self.max_seconds > 0):
            raise ValueError("pause and max_seconds must be positive, min_seconds non-negative")
        if self.min_seconds >= self.max_seconds:
            raise ValueError(f"min_seconds ({self.min_seconds}) must be below max_seconds ({self.max_seconds})")


@dataclass
class Word:
    text: str
    start: float
    end: float


def transcript_words(doc: Field) -> Iterator[list[Word]]:
    """Per ASR segment, its timed words (WhisperX `segments[].words[]`; words without times, such as
    numbers WhisperX could not align, take their neighbours' times). A segment without `words` is one
    'word' spanning the segment, split at sentence ends by `_split_untimed`."""
    for seg in doc.required("segments").elements():
        start, end = seg.required("start").time(), seg.required("end").time()
        if end < start:
            seg.child("end").fail(f"ends before it starts ({end:g} < {start:g})")
        text = seg.required("text").text().strip()
        words_field = seg.optional("words")
        if words_field is None or not words_field.sequence():
            if text:
                yield _split_untimed(text, start, end)
            continue
        words: list[Word] = []
        for w in words_field.elements():
            token = w.required("word").text().strip()
            if not token:
                continue
            ws, we = w.optional("start"), w.optional("end")
            words.append(Word(token, ws.time() if ws else float("nan"), we.time() if we else float("nan")))
        if words:
            yield _fill_times(words, start)


def _fill_times(words: list[Word], start: float) -> list[Word]:
    """Untimed words take the end of the previous timed word (the segment start for the first) as both
    start and end, so order is kept and no duration is invented."""
    last = start
    for w in words:
        if w.start != w.start:  # NaN
            w.start = last
        if w.end != w.end:
            w.end = max(w.start, last)
        w.end = max(w.end, w.start)
        last = w.end
    return words


def _split_untimed(text: str, start: float, end: float) -> list[Word]:
    """An ASR segment without word times as sentence 'words', with times shared out by character count."""
    sentences = [s for s in re.split(r"(?<=[.!?…])\s+", text) if s.strip()]
    total = sum(len(s) for s in sentences) or 1
    out, t = [], start
    for s in sentences:
        t_end = t + (end - start) * len(s) / total
        out.append(Word(s, t, t_end))
        t = t_end
    return out


def segment_words(words: list[Word], rules: SegmentRules) -> list[Narration]:
    """Cut a time-ordered word stream into units (see the module docstring)."""
    units: list[list[Word]] = []
    current: list[Word] = []

    def span(ws: list[Word]) -> float:
        return ws[-1].end - ws[0].start

    for w in words:
        if current:
            pause = w.start - current[-1].end
            if pause >= rules.pause and span(current) >= rules.min_seconds:
                units.append(current)
                current = []
            elif w.end - current[0].start > rules.max_seconds:
                units.append(current)
                current = []
        current.append(w)
        if SENTENCE_END.search(w.text) and span(current) >= rules.min_seconds:
            units.append(current)
            current = []
    if current:
        units.append(current)
    # A short unit (a lone "okay." or the tail) joins a neighbour when the result stays within max.
    merged: list[list[Word]] = []
    for unit in units:
        if merged and (span(unit) < rules.min_seconds or span(merged[-1]) < rules.min_seconds) \
                and unit[-1].end - merged[-1][0].start <= rules.max_seconds:
            merged[-1] = merged[-1] + unit
        else:
            merged.append(unit)
    return [Narration(round(u[0].start, 3), round(u[-1].end, 3), " ".join(w.text for w in u)) for u in merged
            if u[-1].end > u[0].start]


def segment_transcript(path: Path, rules: SegmentRules, duration: Optional[float] = None) -> list[Narration]:
    """Narration units of one transcript file; errors name the file and key path."""
    doc = read_json(path)
    words = [w for seg in transcript_words(doc) for w in seg]
    words.sort(key=lambda w: (w.start, w.end))
    units = segment_words(words, rules)
    if duration is not None:
        units = [Narration(u.start, min(u.end, duration), u.text) for u in units if u.start < duration]
    return units


def transcript_files(source: Path) -> dict[str, Path]:
    """`{video_id: file}` for SOURCE: one `.json` file or a folder searched recursively (id = file stem)."""
    if source.is_file():
        return {source.stem: source}
    if not source.is_dir():
        raise BuildError(source, "", "transcripts not found (give a .json file or a folder of them)")
    found: dict[str, Path] = {}
    for file in sorted(source.rglob("*.json")):
        if file.stem in found:
            raise BuildError(file, "", f"a second transcript for video '{file.stem}' (first: {found[file.stem]})")
        found[file.stem] = file
    if not found:
        raise BuildError(source, "", "no .json transcripts in this folder")
    return found

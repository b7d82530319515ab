"""COIN and YouCook2: both ship one JSON file `{"database": {video_id: {...}}}` of curated step
annotations with a `subset` and a `duration`; they differ only in key names and in whether a step
carries a class label (COIN) or a sentence (YouCook2).

Annotations are curated, so a malformed span is an error naming its key path; steps that overlap or run
past the video's end (rounding in the source) are fixed and counted, since our `step` level is a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from videolang.data.builders.common import (
    BuildContext,
    Built,
    Changes,
    Field,
    clip_to_duration,
    new_record,
    read_json,
    resolve_overlaps,
)
from videolang.data.manifest import Segment

SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
UNTEXTED = "video(s) whose steps have no {text_key} (e.g. YouCook2's test split)"


@dataclass(frozen=True)
class DatabaseFormat:
    """Where one corpus keeps its steps and what a step's text means."""

    steps_key: str  # list of {"segment": [start, end], text_key: "..."}
    text_key: str
    text_is_label: bool  # COIN: a class name (also used as caption); YouCook2: a free sentence
    meta_keys: tuple[tuple[str, str], ...]  # (source key, meta key) copied when present


COIN = DatabaseFormat("annotation", "label", True, (("class", "task"), ("recipe_type", "recipe_type")))
YOUCOOK2 = DatabaseFormat("annotations", "sentence", False, (("recipe_type", "recipe_type"),))


def build_coin(source: Path, ctx: BuildContext) -> Iterator[Built]:
    return _build(source, ctx, COIN)


def build_youcook2(source: Path, ctx: BuildContext) -> Iterator[Built]:
    return _build(source, ctx, YOUCOOK2)


def _build(source: Path, ctx: BuildContext, fmt: DatabaseFormat) -> Iterator[Built]:
    database = read_json(source).required("database")
    for video_id, entry in ctx.videos(database.video_ids()):
        if _untexted(entry, fmt):
            ctx.report.skipped[UNTEXTED.format(text_key=fmt.text_key)] += 1
            continue
        yield _record(video_id, entry, fmt, ctx)


def _record(video_id: str, entry: Field, fmt: DatabaseFormat, ctx: BuildContext) -> Built:
    changes = Changes()
    duration = _duration(entry)
    steps = [s for s in (_step(a, fmt, changes) for a in _steps(entry, fmt)) if s is not None]
    steps = resolve_overlaps(clip_to_duration(steps, duration, changes), changes)
    split = ctx.options.split or _split(entry)  # with --split, the source's subset is neither needed nor read
    record = new_record(video_id, split=split, duration=duration, meta=_meta(entry, fmt), segments=steps)
    return Built(record, changes)


def _steps(entry: Field, fmt: DatabaseFormat) -> Iterator[Field]:
    """The step annotations; absent means none (YouCook2's test videos ship without them)."""
    steps = entry.optional(fmt.steps_key)
    return iter(()) if steps is None else steps.elements()


def _untexted(entry: Field, fmt: DatabaseFormat) -> bool:
    """True when the video has steps but none carries text: YouCook2's official test file gives only
    segments. Such a video cannot be used, but it is not malformed, so it is skipped and counted."""
    steps = list(_steps(entry, fmt))
    return bool(steps) and all(step.optional(fmt.text_key) is None for step in steps)


def _step(annotation: Field, fmt: DatabaseFormat, changes: Changes) -> Optional[Segment]:
    start, end = annotation.required("segment").span()
    text = annotation.required(fmt.text_key).text()
    if not text.strip():
        changes.dropped[f"step(s) with an empty {fmt.text_key}"] += 1
        return None
    return Segment("step", start, end, caption=text, label=text if fmt.text_is_label else None)


def _meta(entry: Field, fmt: DatabaseFormat) -> dict[str, Any]:
    """The format's meta keys that are present, copied as they are (checked to be writable)."""
    found = ((name, entry.optional(key)) for key, name in fmt.meta_keys)
    return {name: value.plain() for name, value in found if value is not None}


def _split(entry: Field) -> str:
    return entry.required("subset").one_of(SUBSETS, "subset")


def _duration(entry: Field) -> Optional[float]:
    found = entry.optional("duration")
    if found is None:
        return None
    value = found.number()
    if value <= 0:
        found.fail(f"must be positive, got {value}")
    return value

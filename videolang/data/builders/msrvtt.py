"""MSR-VTT -> one record per video clip with one `clip` segment spanning it whole, captioned by the clip's
first sentence; all its sentences (the first included, in file order, duplicates merged) go to
`meta.captions`.

Why one segment and not one per sentence: the schema lets `clip`s overlap, but `clip_pairs` makes every
captioned segment its own retrieval candidate. Twenty identical spans per video would cost twenty clip
embeddings per video and, worse, leave each caption with nineteen identical-looking wrong candidates
(and each clip with nineteen of its own captions counted wrong in video-to-text). One segment per video
is also the standard 1k-A protocol (one sentence per test video). Segments have no `meta`, so the full
list lives in the record's `meta`, for training that samples a caption per step (nothing reads it yet).

SOURCE is either
- the annotation JSON (`train_val_videodatainfo.json`, `test_videodatainfo.json`, or the merged
  `MSRVTT_data.json`): `videos` (`video_id`, `start time`, `end time`, `split`, `category`, `url`) and
  `sentences` (`video_id`, `caption`), grouped by video id in one pass. The distributed videos are already
  trimmed (`video0.mp4`), so a clip starts at 0 and lasts `end time - start time`; the span in the YouTube
  original is kept as `meta.source_span`. Splits train/validate/test become train/val/test. Sentences of
  video ids absent from `videos` are dropped and counted; a video without a caption is skipped and counted.
- the 1k-A test list CSV (`MSRVTT_JSFUSION_test.csv`: `key,vid_key,video_id,sentence`), whose rows are all
  split `test`. It gives no times, so each clip's duration is read from its file's container metadata, and
  `--keep-missing` cannot be used.

Captions are crowd-sourced free text: an empty one is dropped and counted, not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from videolang.data.builders.common import (
    BuildContext,
    Built,
    Changes,
    Field,
    new_record,
    read_json,
    read_table,
)
from videolang.data.builders.vript import probe_duration
from videolang.data.manifest import Segment, VideoRecord
from videolang.errors import VideolangError

SPLITS = {"train": "train", "validate": "val", "test": "test"}
CSV_COLUMNS = ("video_id", "sentence")
UNKNOWN_VIDEO = "caption(s) of video ids not listed in `videos`"
EMPTY = "empty caption(s)"
DUPLICATE = "repeated caption(s) of one video"
NO_CAPTION = "video(s) with no caption"
UNREADABLE = "clip(s) whose duration could not be read from the file"


def build_msrvtt(source: Path, ctx: BuildContext) -> Iterator[Built]:
    if source.suffix.lower() == ".csv":
        return _build_csv(source, ctx)
    return _build_json(source, ctx)


# --------------------------------------------------------------------------------------------------
# The annotation JSON


def _build_json(source: Path, ctx: BuildContext) -> Iterator[Built]:
    top = read_json(source)
    videos = _videos(top.required("videos"))
    captions = _captions(top.required("sentences"), {video_id for video_id, _ in videos}, ctx)
    for video_id, entry in ctx.videos(videos):
        changes = Changes()
        texts = _distinct(captions.get(video_id, []), changes)
        if not texts:
            ctx.report.skipped[NO_CAPTION] += 1
            continue
        yield Built(_json_record(video_id, entry, texts, ctx), changes)


def _videos(videos: Field) -> list[tuple[str, Field]]:
    """(video id, entry) in file order; a blank or repeated id is an error naming its key path."""
    out, first = [], {}
    for entry in videos.elements():
        found = entry.required("video_id")
        video_id = found.text()
        if not video_id.strip():
            found.fail(f"blank video id {video_id!r}")
        if video_id in first:
            found.fail(f"video id '{video_id}' appears twice (also {first[video_id]})")
        first[video_id] = found.where
        out.append((video_id, entry))
    return out


def _captions(sentences: Field, known: set[str], ctx: BuildContext) -> dict[str, list[str]]:
    """Video id -> its captions in file order, in one pass; those of unknown videos are counted and dropped
    (they belong to no record, so they are counted straight into the report)."""
    out: dict[str, list[str]] = {}
    for sentence in sentences.elements():
        video_id = sentence.required("video_id").text()
        caption = sentence.required("caption").text()
        if video_id not in known:
            ctx.report.dropped[UNKNOWN_VIDEO] += 1
            continue
        out.setdefault(video_id, []).append(caption)
    return out


def _json_record(video_id: str, entry: Field, captions: list[str], ctx: BuildContext) -> VideoRecord:
    start, end = _source_span(entry)
    duration = round(end - start, 6)  # 149.44 - 137.72 is 11.719999999999999
    if duration <= 0:
        entry.child("end time").fail(f"must be greater than start time {start:g}, got {end:g}")
    meta: dict = {"source_span": [start, end]}
    for key in ("category", "url"):
        found = entry.optional(key)
        if found is not None:
            meta[key] = found.plain()
    meta["captions"] = captions
    split = ctx.options.split or _split(entry)  # with --split, the source's split is neither needed nor read
    return _clip_record(video_id, duration, split, meta)


def _source_span(entry: Field) -> tuple[float, float]:
    return entry.required("start time").time(), entry.required("end time").time()


def _split(entry: Field) -> str:
    return entry.required("split").one_of(SPLITS, "split")


# --------------------------------------------------------------------------------------------------
# The 1k-A test list


def _build_csv(source: Path, ctx: BuildContext) -> Iterator[Built]:
    if ctx.options.keep_missing:
        raise VideolangError("--keep-missing cannot be used with the MSR-VTT CSV: clip durations come from the files")
    captions: dict[str, list[str]] = {}
    for row in read_table(source, require=CSV_COLUMNS):
        text = row.cells.get("sentence")
        if text is None:
            row.text("sentence")  # raises: the row is too short
        captions.setdefault(row.text("video_id"), []).append(text)
    for video_id, texts in ctx.videos(list(captions.items())):
        changes = Changes()
        texts = _distinct(texts, changes)
        if not texts:
            ctx.report.skipped[NO_CAPTION] += 1
            continue
        duration = _file_duration(video_id, ctx)
        if duration is not None:
            yield Built(_clip_record(video_id, duration, "test", {"captions": texts}), changes)


def _file_duration(video_id: str, ctx: BuildContext) -> Optional[float]:
    """The clip file's duration; None (counted) when there is no file or it cannot be probed."""
    file = ctx.find_video(video_id)
    if file is None:
        return None
    duration = probe_duration(file)
    if duration is None:
        ctx.report.skipped[UNREADABLE] += 1
    return duration


# --------------------------------------------------------------------------------------------------
# Both


def _distinct(captions: list[str], changes: Changes) -> list[str]:
    """Captions stripped, in order; empty ones dropped, repeats merged (they would be one retrieval query)."""
    out: dict[str, None] = {}
    for caption in captions:
        text = caption.strip()
        if not text:
            changes.dropped[EMPTY] += 1
        elif text in out:
            changes.dropped[DUPLICATE] += 1
        else:
            out[text] = None
    return list(out)


def _clip_record(video_id: str, duration: float, split: str, meta: dict) -> VideoRecord:
    segment = Segment("clip", 0.0, duration, caption=meta["captions"][0])
    return new_record(video_id, split=split, duration=duration, meta=meta, segments=[segment])

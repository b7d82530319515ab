"""Vript: per-video `<vid>_caption.json` files of dense, script-style scene captions -> one record per
scene clip.

Vript ships every scene as its own trimmed clip (`<clips_root>/<vid>/<vid>-Scene-NNN.mp4`), so a record's
video is the clip and its one `clip` segment spans it whole. Scene times in the original video live in
`<vid>_cut_meta.json`, whose layout is undocumented, so the clip's duration is read from the clip file's
container metadata instead (no frame is decoded). A clip that cannot be probed is skipped and counted.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

from videolang.data.builders.common import BuildContext, BuildError, Built, Changes, Field, new_record, read_json
from videolang.data.manifest import Segment

CAPTION_SUFFIX = "_caption.json"
UNREADABLE = "clip(s) whose duration could not be read from the file"
EMPTY = "scene(s) with an empty content caption"
# Vript caption key -> our script key.
SCRIPT_KEYS = (("shot_type", "shot_type"), ("camera_movement", "camera_movement"),
               ("content", "content"), ("scene_title", "title"))


def caption_files(source: Path) -> list[Path]:
    """SOURCE is a folder searched recursively for `*_caption.json` (in file-name order, so video-id
    order whatever the sub-folders), or one such file."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise BuildError(source, "", "not found")
    files = sorted(source.rglob(f"*{CAPTION_SUFFIX}"), key=lambda p: (p.name, str(p)))
    if not files:
        raise BuildError(source, "", f"no *{CAPTION_SUFFIX} files in this folder")
    return files


def build_vript(source: Path, ctx: BuildContext) -> Iterator[Built]:
    first_file: dict[str, str] = {}  # clip id -> the caption file that first listed it
    for file in ctx.videos(caption_files(source)):
        yield from _video(read_json(file), ctx, first_file)


def _video(doc: Field, ctx: BuildContext, first_file: dict[str, str]) -> Iterator[Built]:
    """The records of one source video's scenes, in file order."""
    meta = doc.optional("meta")  # the parent video's; each scene repeats what matters
    data = doc.required("data")
    for key, scene in data.items():
        clip_id = _clip_id(key, scene, data, first_file)
        caption = scene.required("caption")
        content = caption.required("content").text()
        if not content.strip():
            ctx.report.skipped[EMPTY] += 1
            continue
        file = ctx.find_video(clip_id)
        if file is None:
            continue
        duration = probe_duration(file)
        if duration is None:
            ctx.report.skipped[UNREADABLE] += 1
            continue
        segment = Segment("clip", 0.0, duration, caption=content, script=_script(caption))
        yield Built(new_record(clip_id, duration=duration, meta=_meta(meta, scene), segments=[segment]), Changes())


def _clip_id(key: str, scene: Field, data: Field, first_file: dict[str, str]) -> str:
    """The scene's `clip_id` (else its key), checked to be non-blank and new; a repeat names both files,
    since the same clip in two caption files is the usual cause."""
    found = scene.optional("clip_id")
    clip_id = found.text() if found is not None else key
    where = found if found is not None else data
    if not clip_id.strip():
        where.fail(f"blank clip id {clip_id!r}")
    if clip_id in first_file:
        where.fail(f"clip id '{clip_id}' appears twice: also in {first_file[clip_id]}")
    first_file[clip_id] = where.file
    return clip_id


def _script(caption: Field) -> dict[str, str]:
    """Vript's caption fields as our script, keeping only the ones present and non-empty."""
    script = {}
    for source_key, key in SCRIPT_KEYS:
        found = caption.optional(source_key)
        if found is not None and found.text().strip():
            script[key] = found.text()
    return script


def _meta(video_meta: Optional[Field], scene: Field) -> dict:
    """The parent video's id and title, and the scene's voiceover (ASR of the clip, kept as given)."""
    out = {}
    for key, source_key in (("parent_video_id", "video_id"), ("title", "video_title")):
        found = scene.optional(source_key) or (video_meta.optional(source_key) if video_meta is not None else None)
        if found is not None:
            out[key] = found.text()
    voiceover = scene.optional("voiceover")
    if voiceover is not None:
        out["voiceover"] = voiceover.plain()
    return out


def probe_duration(path: Path) -> Optional[float]:
    """Seconds of video in `path` from container/stream metadata, or None if unreadable or unknown.

    Prefers the video stream's own duration, then its frame count over its average rate, then the
    container's duration (Matroska often records only that)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            seconds: Optional[Fraction | float] = None
            if stream.duration and stream.time_base:
                seconds = stream.duration * stream.time_base
            elif stream.frames and stream.average_rate:
                seconds = stream.frames / stream.average_rate
            elif container.duration:
                seconds = Fraction(container.duration, av.time_base)
    except (av.FFmpegError, OSError, ValueError):
        return None
    return float(seconds) if seconds is not None and seconds > 0 else None

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

from videolang.data.builders.common import BuildContext, BuildError, Field, new_record, read_json
from videolang.data.manifest import Segment, VideoRecord

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


def build_vript(source: Path, ctx: BuildContext) -> Iterator[VideoRecord]:
    if ctx.options.keep_missing:
        raise BuildError(source, "", "--keep-missing cannot be used with vript: clip durations come from the files")
    for file in ctx.videos(caption_files(source)):
        yield from _video(read_json(file), ctx)


def _video(doc: Field, ctx: BuildContext) -> Iterator[VideoRecord]:
    """The records of one source video's scenes, in file order."""
    meta = doc.optional("meta")  # the parent video's; each scene repeats what matters
    for key, scene in doc.required("data").items():
        clip_id = scene.optional("clip_id")
        clip_id_text = clip_id.text() if clip_id is not None else key
        caption = scene.required("caption")
        content = caption.required("content").text()
        if not content.strip():
            ctx.report.skipped[EMPTY] += 1
            continue
        file = ctx.find_video(clip_id_text)
        if file is None:
            continue
        duration = probe_duration(file)
        if duration is None:
            ctx.report.skipped[UNREADABLE] += 1
            continue
        segment = Segment("clip", 0.0, duration, caption=content, script=_script(caption))
        yield new_record(clip_id_text, duration=duration, meta=_meta(meta, scene), segments=[segment])


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
        out["voiceover"] = voiceover.value
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

"""Hand captions to an external LLM and take its rewrites back (`videolang curate enrich export|merge`).

SurgLaVi enriches captions with an LLM that sees each caption's context. videolang does not call a hosted
model: `export` writes one JSON line per caption with the context an LLM needs (the video's title, the
parent's caption, the neighbours' captions, the narration said during the segment); `merge` reads the
edited lines back and changes captions only. An edited id, start or end means the file no longer
describes the manifest, so merge refuses it, naming the line.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from videolang.data.builders.common import BuildError, RowError
from videolang.data.manifest import Segment, VideoRecord

TIME_TOL = 1e-6


def _walk(segments: list[Segment], parent: Optional[Segment]) -> Iterator[tuple[Segment, Optional[Segment], list[Segment]]]:
    for seg in segments:
        yield seg, parent, segments
        yield from _walk(seg.children, seg)


def export_lines(records: Sequence[VideoRecord], levels: Sequence[str]) -> Iterator[dict[str, Any]]:
    """One dict per segment at `levels`: id, times, caption (null for an uncaptioned one, such as a scene
    clip from `curate scenes`, for the LLM to write) and context."""
    for rec in records:
        for seg, parent, siblings in _walk(rec.segments, None):
            if seg.level not in levels:
                continue
            k = siblings.index(seg)
            said = [n.text for n in rec.narration if n.end > seg.start and n.start < seg.end]
            context = {
                "title": rec.meta.get("title"),
                "parent": parent.caption if parent is not None else None,
                "previous": siblings[k - 1].caption if k > 0 else None,
                "next": siblings[k + 1].caption if k + 1 < len(siblings) else None,
                "narration": " ".join(said) or None,
            }
            yield {"id": f"{rec.video_id}#{seg.segment_id}", "video_id": rec.video_id, "level": seg.level,
                   "start": seg.start, "end": seg.end, "label": seg.label, "caption": seg.caption,
                   "context": {k: v for k, v in context.items() if v is not None}}


def write_export(records: Sequence[VideoRecord], levels: Sequence[str], out: Path) -> int:
    from videolang.utils.io import atomic_open

    n = 0
    with atomic_open(out, "w") as f:
        for line in export_lines(records, levels):
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_edits(path: Path, records: Sequence[VideoRecord]) -> dict[str, str]:
    """`{id: new caption}` from an edited export; any changed id or timing is an error naming the line."""
    index = {f"{rec.video_id}#{seg.segment_id}": seg for rec in records for seg, _, _ in _walk(rec.segments, None)}
    edits: dict[str, str] = {}
    if not path.is_file():
        raise BuildError(path, "", "file not found")
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RowError(path, line_no, "<json>", f"invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise RowError(path, line_no, "<json>", "expected an object")
            key = obj.get("id")
            if not isinstance(key, str) or key not in index:
                raise RowError(path, line_no, "id", f"{key!r} names no segment of the manifest "
                               "(ids may not be changed)")
            seg = index[key]
            for name, value in (("start", seg.start), ("end", seg.end)):
                got = obj.get(name)
                if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isfinite(got) \
                        or abs(got - value) > TIME_TOL:
                    raise RowError(path, line_no, name, f"is {got!r} but the manifest says {value}; timings may "
                                   "not be changed")
            caption = obj.get("caption")
            if caption is None:  # left as exported (an uncaptioned scene nobody wrote for): no edit
                continue
            if not isinstance(caption, str) or not caption.strip():
                raise RowError(path, line_no, "caption", "expected non-empty text (or null for no change)")
            if key in edits:
                raise RowError(path, line_no, "id", f"{key} appears twice")
            edits[key] = caption.strip()
    return edits


def merge(records: Sequence[VideoRecord], edits: dict[str, str]) -> tuple[list[VideoRecord], int]:
    """Records with the edited captions (a deep copy); returns them and how many captions changed."""
    out, changed = [], 0
    for rec in records:
        rec = copy.deepcopy(rec)
        for seg, _, _ in _walk(rec.segments, None):
            new = edits.get(f"{rec.video_id}#{seg.segment_id}")
            if new is not None and new != seg.caption:
                seg.caption = new
                changed += 1
        out.append(rec)
    return out, changed

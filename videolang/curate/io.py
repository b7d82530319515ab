"""Reading and writing the manifests curation steps transform: records keep pointing at their videos
wherever the output is written, and every output is validated before it replaces anything."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Optional

from videolang.data.builders.common import relative_to_manifest, reserve_draft
from videolang.data.manifest import Segment, VideoRecord, check_manifest, write_manifest
from videolang.errors import ManifestError, VideolangError


def write_records(records: Iterable[VideoRecord], out: str | Path) -> Path:
    """Write `records` to `out` with paths re-based on `out`'s folder; the file is validated as a draft
    next to `out` and only then moved onto it, so a failure never replaces (or loses) an existing file."""
    import os

    out = Path(out)
    if out.is_dir():
        raise VideolangError(f"{out}: --out is a folder; give a file name such as curated.jsonl")
    draft = reserve_draft(out)
    rebased = []
    for rec in records:
        rec = copy.copy(rec)
        rec.path = relative_to_manifest(rec.resolved_path, out)
        rebased.append(rec)
    try:
        write_manifest(rebased, draft)
        _, problems, _ = check_manifest(draft)
        if problems:  # a bug in a curation step: say so rather than leave a file that fails later
            raise ManifestError([f"curation would write an invalid manifest, {out} not written: "
                                 f"line {p.removeprefix(f'{draft}:')}" for p in problems])
        os.replace(draft, out)
    finally:
        draft.unlink(missing_ok=True)
    return out


# Per-sentence lists some records keep in `meta` (the synthetic corpus' ground truth, realign's output):
# they must follow the narration track whenever a step drops, replaces or reorders its sentences.
PER_SENTENCE_KEYS = ("narration_kind", "narration_true")


def follow_narration(meta: dict, kept: Optional[list[int]], before: int) -> dict:
    """`meta` with its per-sentence lists taken at `kept` (indices into the old track of `before`
    sentences, in the new track's order); `kept=None` means the track was replaced, so they are dropped.
    A list whose length does not match the old track cannot be followed and is dropped too."""
    meta = dict(meta)

    def follow(values):
        if kept is None or not isinstance(values, list) or len(values) != before:
            return None
        return [values[i] for i in kept]

    for key in PER_SENTENCE_KEYS:
        if key in meta:
            new = follow(meta.pop(key))
            if new is not None:
                meta[key] = new
    if isinstance(meta.get("realign"), dict):
        info = {k: follow(v) for k, v in meta.pop("realign").items()}
        if all(v is not None for v in info.values()):
            meta["realign"] = info
    return meta


def report_dir(out: str | Path, step: str) -> Path:
    """`curated.jsonl` -> `curated.<step>/`, where a step puts its report and plots."""
    out = Path(out)
    folder = out.with_name(f"{out.name.removesuffix('.jsonl')}.{step}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prune_segments(segments: list[Segment], drop: set[str]) -> tuple[list[Segment], int, int]:
    """`segments` without the captions of the ids in `drop`: (kept tree, segments removed, segments kept
    for their label only). A dropped segment that has a label keeps it (recognition and segmentation still
    use it) and loses its caption; one without a label is removed, and its kept children take its place."""
    removed = hollowed = 0
    out: list[Segment] = []
    for seg in segments:
        children, r, h = prune_segments(seg.children, drop)
        removed, hollowed = removed + r, hollowed + h
        seg = copy.copy(seg)
        seg.children = children
        if seg.segment_id in drop:
            if seg.label is None:
                removed += 1
                out.extend(children)
                continue
            hollowed += 1
            seg.caption, seg.script = None, None
        out.append(seg)
    return out, removed, hollowed

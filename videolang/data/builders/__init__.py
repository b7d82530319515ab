"""`videolang manifest build`: convert public corpora's annotation files into `videolang.manifest/1`.

`BUILDERS` maps a format name to a function `(source, context) -> records`; each lives in its own
module and only reads its format. `build_manifest` does the rest the same way for all: finds each
video's file, applies `--split`/`--corpus`, skips what cannot be used (counting why), writes the
manifest atomically and validates it before reporting success.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from videolang.data.builders.common import (
    BuildContext,
    Builder,
    BuildError,
    BuildOptions,
    BuildReport,
    VideoIndex,
)
from videolang.data.builders.database_json import build_coin, build_youcook2
from videolang.data.builders.howto100m import build_howto100m
from videolang.data.builders.surglavi import build_surglavi
from videolang.data.builders.vript import build_vript
from videolang.data.manifest import VideoRecord, check_manifest, write_manifest
from videolang.errors import ManifestError

__all__ = ["BUILDERS", "BuildError", "BuildOptions", "BuildReport", "build_manifest"]

BUILDERS: dict[str, Builder] = {
    "howto100m": build_howto100m,
    "coin": build_coin,
    "youcook2": build_youcook2,
    "vript": build_vript,
    "surglavi": build_surglavi,
}
NOTHING_LEFT = "video(s) with no segments or narration left"


def build_manifest(fmt: str, source: str | Path, out: str | Path, options: BuildOptions) -> BuildReport:
    """Convert `source` (format `fmt`) into the manifest `out`; returns the counts for the summary.

    Raises `BuildError` for unreadable or malformed sources, and `ManifestError` if the result fails
    validation, which would be a bug in the builder: the manifest is then not written."""
    if fmt not in BUILDERS:
        raise BuildError(source, "", f"unknown format '{fmt}'; expected one of {', '.join(BUILDERS)}")
    source, out = Path(source), Path(out)
    report = BuildReport(fmt, out, Path(options.videos))
    ctx = BuildContext(fmt, options, VideoIndex.scan(Path(options.videos)), report)
    records = _finish(BUILDERS[fmt](source, ctx), source, ctx)
    # Write next to `out` (relative paths resolve the same), validate, and only then replace `out`.
    draft = out.with_name(f".{out.name}.building")
    try:
        write_manifest(records, draft)
        if report.records == 0:
            why = "; ".join(report.changes()) or "the source lists no videos"
            raise BuildError(source, "", f"no usable videos, nothing written ({why})")
        _check(draft, fmt)
        os.replace(draft, out)
    finally:
        draft.unlink(missing_ok=True)
    return report


def _finish(records: Iterator[VideoRecord], source: Path, ctx: BuildContext) -> Iterator[VideoRecord]:
    """Builder output -> manifest records: drop empty ones, attach files, apply overrides, count."""
    seen: set[str] = set()
    corpus = ctx.options.corpus or ctx.format
    for record in records:
        if record.video_id in seen:
            raise BuildError(source, "", f"video id '{record.video_id}' appears twice")
        seen.add(record.video_id)
        if not record.segments and not record.narration:
            ctx.report.skipped[NOTHING_LEFT] += 1
            continue
        if not ctx.attach_path(record):
            continue
        record.corpus = corpus
        if ctx.options.split:
            record.split = ctx.options.split
        ctx.report.count(record)
        yield record


def _check(path: Path, fmt: str) -> None:
    _, problems, _ = check_manifest(path)
    if problems:
        raise ManifestError([f"bug in the {fmt} builder, its output fails validation: {p}" for p in problems])

"""`videolang manifest build`: convert public corpora's annotation files into `videolang.manifest/1`.

`BUILDERS` maps a format name to a function `(source, context) -> Built(record, changes)` items; each
lives in its own module and only reads its format. `build_manifest` does the rest the same way for all:
checks the arguments and `--out` before any work, finds each video's file, applies `--split`/`--corpus`,
skips what cannot be used (counting why, and counting changes only for records written), writes the
manifest atomically and validates it before reporting success.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

from videolang.data.builders.common import (
    BuildContext,
    Builder,
    BuildError,
    BuildOptions,
    BuildReport,
    Built,
    VideoIndex,
    is_utf8,
    printable,
    reserve_draft,
)
from videolang.data.builders.database_json import build_coin, build_youcook2
from videolang.data.builders.howto100m import build_howto100m
from videolang.data.builders.msrvtt import build_msrvtt
from videolang.data.builders.mstcn import build_mstcn
from videolang.data.builders.peskavlp import build_peskavlp
from videolang.data.builders.phase_files import build_autolaparo, build_cholec80, build_m2cai16
from videolang.data.builders.surglavi import build_surglavi
from videolang.data.builders.vript import build_vript
from videolang.data.manifest import VideoRecord, check_manifest, write_manifest
from videolang.errors import ManifestError, VideolangError

__all__ = ["BUILDERS", "BuildError", "BuildOptions", "BuildReport", "build_manifest"]

BUILDERS: dict[str, Builder] = {
    "howto100m": build_howto100m,
    "coin": build_coin,
    "youcook2": build_youcook2,
    "vript": build_vript,
    "surglavi": build_surglavi,
    "cholec80": build_cholec80,
    "autolaparo": build_autolaparo,
    "m2cai16": build_m2cai16,
    "peskavlp": build_peskavlp,
    "msrvtt": build_msrvtt,
    "mstcn": build_mstcn,
}
FPS_FORMATS = ("cholec80", "autolaparo", "m2cai16", "mstcn")
NOTHING_LEFT = "video(s) with no segments or narration left"


def build_manifest(fmt: str, source: str | Path, out: str | Path, options: BuildOptions) -> BuildReport:
    """Convert `source` (format `fmt`) into the manifest `out`; returns the counts for the summary.

    Raises `VideolangError` for bad arguments (checked before any work), `BuildError` for unreadable or
    malformed sources, and `ManifestError` if the result fails validation, which would be a bug in the
    builder: `out` is then not written."""
    if fmt not in BUILDERS:
        raise BuildError(source, "", f"unknown format '{fmt}'; expected one of {', '.join(BUILDERS)}")
    source, out = Path(source), Path(out)
    _check_options(fmt, options)
    _check_out(out, source)
    draft = reserve_draft(out)
    try:
        report = BuildReport(fmt, out, Path(options.videos))
        ctx = BuildContext(fmt, options, VideoIndex.scan(Path(options.videos)), report)
        # Written next to `out` (relative paths resolve the same), validated, and only then moved onto `out`.
        write_manifest(_finish(BUILDERS[fmt](source, ctx), source, ctx), draft)
        if report.records == 0:
            why = "; ".join(report.changes()) or "the source lists no videos"
            raise BuildError(source, "", f"no usable videos, nothing written ({why})")
        _check(draft, out, fmt)
        os.replace(draft, out)
    finally:
        draft.unlink(missing_ok=True)
    return report


def _check_options(fmt: str, options: BuildOptions) -> None:
    """Refuse options that would only fail (or write an invalid manifest) after the whole build."""
    for flag, value in (("--split", options.split), ("--corpus", options.corpus)):
        if value is not None and (not value.strip() or not is_utf8(value)):
            raise VideolangError(f"{flag} must be non-blank UTF-8 text, got '{printable(value)}'")
    if options.fps is not None and fmt not in FPS_FORMATS:
        raise VideolangError(f"--fps only applies to the {', '.join(FPS_FORMATS)} formats")
    if options.fps is not None and not (math.isfinite(options.fps) and options.fps > 0):
        raise VideolangError(f"--fps must be a positive number, got {options.fps}")
    if options.fold != 1 and fmt != "mstcn":
        raise VideolangError("--fold only applies to the mstcn format")
    if fmt == "vript" and options.keep_missing:
        raise VideolangError("--keep-missing cannot be used with vript: clip durations come from the files")


def _check_out(out: Path, source: Path) -> None:
    """Refuse an `--out` that cannot be written as a file, or that is SOURCE (or inside a SOURCE folder)."""
    if out.name in ("", ".", "..") or out.is_dir():
        raise BuildError(out, "", "--out is a folder; give a file name such as out.jsonl")
    if out.exists() and not out.is_file():
        raise BuildError(out, "", "--out exists and is not a regular file")
    folder = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not folder.is_dir():
        raise BuildError(out, "", f"--out cannot be written: {folder} is a file, not a folder")
    # `os.replace` replaces a symlink at `out` itself, so `out`'s real place is its resolved folder + name.
    target, real_source = out.parent.resolve() / out.name, source.resolve()
    if target == real_source or (real_source.is_dir() and real_source in target.parents):
        raise BuildError(out, "", f"--out may not be SOURCE or lie inside a SOURCE folder ({source}); "
                         "write the manifest elsewhere")


def _finish(built: Iterator[Built], source: Path, ctx: BuildContext) -> Iterator[VideoRecord]:
    """Builder output -> manifest records: drop empty ones, attach files, apply overrides, count what is
    written (a record skipped here adds nothing to the summary's dropped/fixed counts)."""
    seen: set[str] = set()
    corpus = ctx.options.corpus or ctx.format
    for record, changes in built:
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
        ctx.report.count(record, changes)
        yield record


def _check(draft: Path, out: Path, fmt: str) -> None:
    """Validate the draft; problems are reported against their line, since the draft is deleted."""
    _, problems, _ = check_manifest(draft)
    if problems:
        raise ManifestError([f"bug in the {fmt} builder, {out} not written: its line {p.removeprefix(f'{draft}:')}"
                             for p in problems])

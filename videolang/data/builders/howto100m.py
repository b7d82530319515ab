"""HowTo100M sentencified ASR (`{video_id: {"start": [...], "end": [...], "text": [...]}}`) -> one record
per video whose `narration` is the noisy transcript, the input of narration-alignment (OT) training.

ASR is noisy by nature, so sentences with `end <= start` or empty text are dropped and counted rather
than failing the build; a wrongly typed value is still an error, since it means the file is not this format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from videolang.data.builders.common import BuildContext, Built, Changes, Field, new_record, read_json
from videolang.data.manifest import Narration

COLUMNS = ("start", "end", "text")
DROPPED = "narration sentence(s) with end <= start or empty text"


def build_howto100m(source: Path, ctx: BuildContext) -> Iterator[Built]:
    top = read_json(source)
    for video_id, entry in ctx.videos(top.video_ids()):
        changes = Changes()
        yield Built(new_record(video_id, narration=_narration(entry, changes)), changes)


def _columns(entry: Field) -> list[list[Field]]:
    """The three parallel lists, checked to be lists of one length."""
    columns = [list(entry.required(name).elements()) for name in COLUMNS]
    for name, column in zip(COLUMNS[1:], columns[1:]):
        if len(column) != len(columns[0]):
            entry.child(name).fail(f"has {len(column)} entries but start has {len(columns[0])}")
    return columns


def _narration(entry: Field, changes: Changes) -> list[Narration]:
    out = []
    for start, end, text in zip(*_columns(entry)):
        sentence = Narration(start.time(), end.time(), text.text())
        if sentence.end <= sentence.start or not sentence.text.strip():
            changes.dropped[DROPPED] += 1
            continue
        out.append(sentence)
    return out

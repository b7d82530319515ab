"""MSR-VTT annotation JSON. (In progress.)"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from videolang.data.builders.common import BuildContext, Built


def build_msrvtt(source: Path, ctx: BuildContext) -> Iterator[Built]:
    raise NotImplementedError

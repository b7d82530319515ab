"""PeskaVLP per-video CSVs. (In progress.)"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from videolang.data.builders.common import BuildContext, Built


def build_peskavlp(source: Path, ctx: BuildContext) -> Iterator[Built]:
    raise NotImplementedError

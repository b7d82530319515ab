"""Per-video surgical phase files (Cholec80, AutoLaparo, M2CAI16) -> `phase` segments. (In progress.)"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from videolang.data.builders.common import BuildContext, Built


def build_cholec80(source: Path, ctx: BuildContext) -> Iterator[Built]:
    raise NotImplementedError


def build_autolaparo(source: Path, ctx: BuildContext) -> Iterator[Built]:
    raise NotImplementedError


def build_m2cai16(source: Path, ctx: BuildContext) -> Iterator[Built]:
    raise NotImplementedError

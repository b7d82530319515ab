"""What a run reports: `metrics.jsonl`, TensorBoard scalars, a progress bar, and `run.json`.

Rank 0 writes everything. On resume `metrics.jsonl` is cut back to the resumed step, so a run killed
after logging step 37 and resumed from its step-30 checkpoint never shows step 31..37 twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from videolang.utils.io import atomic_write_text

METRICS_NAME = "metrics.jsonl"


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the lines of `path` with `step` <= the given step (atomically); returns the lines kept."""
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill: drop it
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(kept)


class MetricsLogger:
    """metrics.jsonl (flushed and fsynced per line) + TensorBoard, on rank 0; a no-op elsewhere."""

    def __init__(self, output_dir: Path, enabled: bool, resume_step: Optional[int]):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_NAME
        self._file = None
        self._tb = None
        if not enabled:
            return
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()  # a fresh run in an existing folder starts a fresh log
        self._file = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is a dependency; a broken install still trains
            self._tb = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Throughput:
    """Clips per second and the share of wall time spent waiting for data, since the last report."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.clips = 0
        self.wait = 0.0

    def add(self, clips: int, wait: float) -> None:
        self.clips += clips
        self.wait += wait

    def read(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return self.clips / elapsed, min(self.wait / elapsed, 1.0)

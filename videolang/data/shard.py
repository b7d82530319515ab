"""Split a corpus into parts of about equal total duration (`videolang manifest shard`, `extract` ranks).

Work per video grows with its length, so parts balanced by count can differ by hours on corpora that mix
2-minute and 2-hour videos. Longest first onto the currently lightest part (LPT scheduling) is within
4/3 of the best possible largest part and takes one sort; each part keeps the input order.
"""

from __future__ import annotations

import heapq
from typing import Sequence

from videolang.data.manifest import VideoRecord


def balance(weights: Sequence[float], parts: int) -> list[list[int]]:
    """Indices of `weights` in `parts` groups of about equal total weight, each in ascending order.

    Ties go to the lower-numbered part and longer-first order is stable, so the split is deterministic."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    heap = [(0.0, p) for p in range(parts)]
    groups: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, p = heapq.heappop(heap)
        groups[p].append(i)
        heapq.heappush(heap, (load + weights[i], p))
    return [sorted(g) for g in groups]


def video_weight(video: VideoRecord) -> float:
    """A video's duration (or its latest annotated time); at least a small constant, so a corpus without
    durations still splits by count."""
    return max(video.span_end, 1e-3)

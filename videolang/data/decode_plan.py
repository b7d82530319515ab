"""Decode planning: where to seek and how far to decode, decided from the keyframe index alone.

A frame can only be decoded forward from the last keyframe at or before it, and decoding dominates the
cost of reading a clip. So the cheapest way to get a set of frames is to group them by that keyframe and
decode each group once, from its keyframe to its last wanted frame. Two neighbouring groups are decoded
in one go (no seek) when the frames between them cost less to decode than a seek; otherwise the reader
seeks, which also skips the tail of every GOP after its last wanted frame. This covers the cases that
fixed strategies each get wrong: a dense window becomes one or a few short runs, frames spread over a
long video become one seek per GOP, and frames sharing a GOP are decoded in a single pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# A seek (index lookup, decoder flush, refilling the reorder buffer) costs about as much as decoding a
# couple of frames; below that gap it is cheaper to decode straight through.
SEEK_COST_FRAMES = 2


@dataclass(frozen=True)
class Run:
    """Start decoding at frame `keyframe` and keep going until every frame in `frames` has come out."""

    keyframe: int
    frames: tuple[int, ...]

    @property
    def decoded(self) -> int:
        """Frames the decoder goes through, counted in presentation order."""
        return self.frames[-1] - self.keyframe + 1


def plan_runs(
    frames: Sequence[int], keyframes: Sequence[int], seek_cost: float = SEEK_COST_FRAMES
) -> list[Run]:
    """Split sorted, distinct frame indices into decode runs.

    `keyframes` are the sorted presentation indices a decoder can start from. Frames before the first
    keyframe are assigned to the start of the stream (index 0), the only place left to start from.
    Each boundary between neighbouring keyframe groups is decided on its own (seek, or decode the gap),
    so the plan minimises `plan_cost` over all ways of merging groups.
    """
    wanted = np.asarray(frames, dtype=np.int64)
    if wanted.size == 0:
        return []
    if np.any(np.diff(wanted) <= 0):
        raise ValueError("plan_runs needs sorted, distinct frame indices")
    keys = np.asarray(keyframes, dtype=np.int64)
    if keys.size == 0 or keys[0] > 0:
        keys = np.concatenate([np.zeros(1, dtype=np.int64), keys])
    starts = keys[np.searchsorted(keys, wanted, side="right") - 1]

    runs: list[Run] = []
    key, members = int(starts[0]), [int(wanted[0])]
    for frame, start in zip(wanted[1:].tolist(), starts[1:].tolist()):
        gap = start - members[-1] - 1  # frames decoded only to avoid a seek
        if start == key or gap <= seek_cost:
            members.append(frame)
        else:
            runs.append(Run(key, tuple(members)))
            key, members = start, [frame]
    runs.append(Run(key, tuple(members)))
    return runs


def plan_cost(runs: Sequence[Run], seek_cost: float = SEEK_COST_FRAMES) -> float:
    """Cost of a plan in decoded-frame units: frames decoded plus one seek per run."""
    return float(sum(run.decoded for run in runs) + seek_cost * len(runs))

"""Drop clip-caption pairs a trained model finds unrelated (`videolang curate filter`).

SurgLaVi keeps a pair only when the clip shows surgery and the caption describes it; with a trained dual
encoder the same idea is one number per pair, the clip-caption cosine. Pairs are dropped under an absolute
`threshold` and/or outside the best `top_fraction` of their video and level (relative ranking is robust
to how calibrated the model is; the absolute threshold catches a video whose captions are all wrong).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from videolang.data.manifest import ClipPair, Narration, VideoRecord, clip_pairs


@dataclass(frozen=True)
class FilterRules:
    levels: tuple[str, ...] = ("phase", "step", "task", "clip")
    threshold: Optional[float] = None  # drop pairs scoring below this cosine
    top_fraction: Optional[float] = None  # keep this best share of each video's pairs per level

    def check(self) -> None:
        if self.threshold is None and self.top_fraction is None:
            raise ValueError("give a threshold, a top fraction, or both")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ValueError(f"top fraction must be in (0, 1], got {self.top_fraction}")
        if self.threshold is not None and not -1 <= self.threshold <= 1:
            raise ValueError(f"threshold is a cosine, in [-1, 1]; got {self.threshold}")


def all_pairs(records: Sequence[VideoRecord], levels: Sequence[str]) -> list[ClipPair]:
    return [p for level in levels for p in clip_pairs(records, level)]


def decide(pairs: Sequence[ClipPair], scores: Sequence[Optional[float]], rules: FilterRules) -> list[bool]:
    """Keep (True) or drop each pair; unscored pairs (undecodable video) are kept, their record passes
    through unchanged (`apply`)."""
    keep = [s is None or rules.threshold is None or s >= rules.threshold for s in scores]
    if rules.top_fraction is not None:
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, p in enumerate(pairs):
            if scores[i] is not None:
                groups[(p.video_id, p.level)].append(i)
        for members in groups.values():
            n_keep = max(1, math.ceil(rules.top_fraction * len(members) - 1e-9))
            # Ties broken by time order, so the result does not depend on the sort's stability.
            ranked = sorted(members, key=lambda i: (-scores[i], pairs[i].start, i))  # type: ignore[operator]
            for i in ranked[n_keep:]:
                keep[i] = False
    return keep


def apply(records: Sequence[VideoRecord], pairs: Sequence[ClipPair], keep: Sequence[bool],
          failed: set[str]) -> tuple[list[VideoRecord], dict[str, Any]]:
    """Records without the dropped pairs; counts for the report. A record whose video could not be
    decoded (its pairs have no score) is passed through unchanged and named in the report."""
    from videolang.curate.io import follow_narration, prune_segments

    drop: dict[str, set[str]] = defaultdict(set)
    for p, k in zip(pairs, keep):
        if not k:
            drop[p.video_id].add(p.segment_id)
    out, removed, hollowed, unscored = [], 0, 0, []
    for rec in records:
        if str(rec.resolved_path) in failed:
            unscored.append(rec.video_id)
            out.append(rec)
            continue
        ids = drop.get(rec.video_id, set())
        segments, r, h = prune_segments(rec.segments, ids)
        kept = [i for i in range(len(rec.narration)) if f"n{i}" not in ids]
        removed, hollowed = removed + r, hollowed + h
        new = _replace(rec, segments, [rec.narration[i] for i in kept])
        new.meta = follow_narration(rec.meta, kept, len(rec.narration))
        out.append(new)
    return out, {"segments_removed": removed, "segments_kept_for_label": hollowed,
                 "undecodable_videos_kept_unchanged": unscored}


def _replace(rec: VideoRecord, segments: list, narration: list[Narration]) -> VideoRecord:
    import copy

    rec = copy.copy(rec)
    rec.segments, rec.narration = segments, narration
    return rec


def summary(pairs: Sequence[ClipPair], scores: Sequence[Optional[float]], keep: Sequence[bool]) -> dict[str, Any]:
    """Per level: pairs scored, kept, dropped and the mean score of each side."""
    out: dict[str, Any] = {}
    for level in dict.fromkeys(p.level for p in pairs):
        idx = [i for i, p in enumerate(pairs) if p.level == level and scores[i] is not None]
        kept = [scores[i] for i in idx if keep[i]]
        dropped = [scores[i] for i in idx if not keep[i]]
        out[level] = {
            "scored": len(idx), "kept": len(kept), "dropped": len(dropped),
            "mean_score_kept": round(sum(kept) / len(kept), 4) if kept else None,  # type: ignore[arg-type]
            "mean_score_dropped": round(sum(dropped) / len(dropped), 4) if dropped else None,  # type: ignore[arg-type]
        }
    return out


def histogram(pairs: Sequence[ClipPair], scores: Sequence[Optional[float]], keep: Sequence[bool], path,
              threshold: Optional[float]) -> None:
    """Score histogram per level, kept and dropped pairs stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(dict.fromkeys(p.level for p in pairs))
    fig, axes = plt.subplots(1, max(1, len(levels)), figsize=(4.5 * max(1, len(levels)), 3.2), squeeze=False)
    for ax, level in zip(axes[0], levels):
        kept = [scores[i] for i, p in enumerate(pairs) if p.level == level and scores[i] is not None and keep[i]]
        dropped = [scores[i] for i, p in enumerate(pairs) if p.level == level and scores[i] is not None and not keep[i]]
        ax.hist([kept, dropped], bins=30, stacked=True, label=["kept", "dropped"], color=["tab:green", "tab:red"])
        if threshold is not None:
            ax.axvline(threshold, color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{level}: {len(kept)} kept, {len(dropped)} dropped", fontsize=9)
        ax.set_xlabel("clip-caption cosine")
    axes[0, 0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Near-duplicate captions within a video (`videolang curate dedup`).

LLM-segmented transcripts and repeated narration produce the same caption several times in one video;
as positives they are harmless, but as in-batch negatives they teach the model to separate identical
texts. Per video and level, captions are compared in time order: one whose normalised text equals an
earlier kept one, or (with a model) whose text embedding is within `threshold` cosine of one, is dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Optional, Sequence

import torch

from videolang.data.manifest import ClipPair

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, accents' composition, punctuation and spacing do not make a caption different."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def duplicates(pairs: Sequence[ClipPair], embeddings: Optional[torch.Tensor] = None,
               threshold: float = 0.95) -> list[Optional[int]]:
    """For each pair, the index of the earlier kept pair it duplicates (same video and level), or None.

    `embeddings` [N, D] (unit norm, one per pair) adds the near-duplicate test; without them only equal
    normalised texts count."""
    out: list[Optional[int]] = [None] * len(pairs)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[(p.video_id, p.level)].append(i)
    for members in groups.values():
        members.sort(key=lambda i: (pairs[i].start, pairs[i].end, i))
        kept: list[int] = []
        seen: dict[str, int] = {}
        for i in members:
            key = normalise(pairs[i].caption) or pairs[i].caption  # punctuation-only text stays itself
            if key in seen:
                out[i] = seen[key]
                continue
            if embeddings is not None and kept:
                sims = embeddings[kept] @ embeddings[i]
                best = int(sims.argmax())
                if float(sims[best]) >= threshold:
                    out[i] = kept[best]
                    continue
            seen[key] = i
            kept.append(i)
    return out

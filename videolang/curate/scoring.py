"""Clip-caption agreement under a trained model: the cosine between a clip's video embedding and its
caption's text embedding, the signal `filter`, `realign` and `dedup` act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from videolang.data.manifest import ClipPair
from videolang.eval.features import ClipFeatures, clip_embeddings, text_embeddings
from videolang.eval.loading import EvalModel, load_eval_model


@dataclass
class Scorer:
    model: EvalModel
    num_frames: int = 8
    batch_size: int = 16
    num_workers: int = 2
    backend: str = "auto"
    progress: bool = True

    @classmethod
    def load(cls, path: str, device: str = "cpu", **kw) -> "Scorer":
        model = load_eval_model(path, device)
        model.require_text("scoring clip-caption pairs")
        return cls(model, **kw)

    def clips(self, pairs: Sequence[ClipPair], desc: str = "clips") -> ClipFeatures:
        size = (self.model.image_size, self.model.image_size)
        return clip_embeddings(self.model.encode_video, pairs, num_frames=self.num_frames, size=size,
                               batch_size=self.batch_size, backend=self.backend, num_workers=self.num_workers,
                               progress=self.progress, desc=desc)

    def texts(self, texts: Sequence[str]) -> Tensor:
        assert self.model.full is not None
        if not texts:
            return torch.zeros(0, 0)
        return text_embeddings(self.model.full.encode_text, list(texts), max(self.batch_size, 64))

    def caption_embeddings(self, texts: Sequence[str]) -> Tensor:
        """One row per text, each distinct text encoded once (captions repeat within corpora)."""
        distinct = list(dict.fromkeys(texts))
        index = {t: k for k, t in enumerate(distinct)}
        return self.texts(distinct)[[index[t] for t in texts]]

    def pair_scores(self, pairs: Sequence[ClipPair]) -> tuple[list[Optional[float]], dict[str, str]]:
        """Cosine of each pair (None where its video could not be decoded) and the undecodable files."""
        feats = self.clips(pairs)
        scores: list[Optional[float]] = [None] * len(pairs)
        if feats.kept:
            rows = self.caption_embeddings([pairs[i].caption for i in feats.kept])
            for i, s in zip(feats.kept, (rows * feats.embeddings).sum(-1).tolist()):
                scores[i] = s
        return scores, feats.failed

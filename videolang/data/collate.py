"""Batch collation: stack frames, tokenise captions with the text tower's tokenizer, pad.

Truncation is counted, never silent: `TextCollator.truncated` says how many captions lost tokens.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

log = logging.getLogger(__name__)


class TextCollator:
    """Collate `ClipTextDataset` / `ParagraphDataset` items into a batch dict.

    Clip items -> `frames` [B, T, H, W, 3], `input_ids`/`attention_mask` [B, L].
    Paragraph items -> `frames` [B, K, T, H, W, 3], `input_ids`/`attention_mask` [B, K, L], `mask` [B, K].
    Strings and ids stay lists; `failures` is the concatenation of the items' decode failures.
    """

    def __init__(self, tokenizer, max_len: int = 64):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.truncated = 0
        self.seen = 0

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        if enc.encodings is not None:  # fast tokenizers record what truncation cut off: one pass
            n_trunc = sum(bool(e.overflowing) for e in enc.encodings)
        else:  # slow tokenizers: a second pass without truncation
            full = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
            n_trunc = sum(len(ids) > self.max_len for ids in full)
        if n_trunc and not self.truncated:
            log.warning("captions longer than %d tokens are truncated; raise data.max_text_len to keep them", self.max_len)
        self.truncated += n_trunc
        self.seen += len(texts)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"frames": torch.stack([it["frames"] for it in items])}
        if "captions" in items[0]:  # paragraphs
            k = len(items[0]["captions"])
            tok = self.tokenize([c for it in items for c in it["captions"]])
            batch.update({key: v.view(len(items), k, -1) for key, v in tok.items()})
            batch["mask"] = torch.stack([it["mask"] for it in items])
            batch["starts"] = torch.stack([it["starts"] for it in items])
            batch["ends"] = torch.stack([it["ends"] for it in items])
            batch["captions"] = [it["captions"] for it in items]
        else:
            batch.update(self.tokenize([it["caption"] for it in items]))
            batch["captions"] = [it["caption"] for it in items]
            for key in ("segment_id", "level", "label", "start", "end"):
                batch[key] = [it[key] for it in items]
        batch["video_id"] = [it["video_id"] for it in items]
        batch["index"] = torch.tensor([it["index"] for it in items])
        batch["failures"] = [f for it in items for f in it["failures"]]
        return batch

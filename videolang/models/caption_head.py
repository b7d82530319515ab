"""Captioning head: a small transformer decoder that cross-attends to video tokens.

It shares the text tower's tokenizer (its own embeddings, tied to the output layer), trains with
teacher forcing, and decodes greedily or with beam search. Captions follow Vript's script layout,
`[shot] ... [camera] ... [content] ...`, which `format_script` writes and `parse_script` reads back.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videolang.models.errors import ModelError

IGNORE_INDEX = -100  # target value of padding positions (the `ignore_index` of cross-entropy)
SCRIPT_FIELDS = ("shot", "camera", "content")
# Tolerates the spaces and case a word-piece tokenizer puts back when decoding ("[ shot ]").
_TAG = re.compile(r"\[\s*(shot|camera|content)\s*\]", re.IGNORECASE)


def format_script(shot: str, camera: str, content: str) -> str:
    """`[shot] {shot} [camera] {camera} [content] {content}` with each field stripped."""
    values = (shot, camera, content)
    for name, value in zip(SCRIPT_FIELDS, values):
        if _TAG.search(value):
            raise ModelError(f"script field '{name}' contains a field tag: {value!r}")
    return " ".join(f"[{name}] {value.strip()}".strip() for name, value in zip(SCRIPT_FIELDS, values))


def parse_script(text: str) -> dict[str, str]:
    """Fields of a script caption; a missing field is "" and text before the first tag is ignored."""
    fields = dict.fromkeys(SCRIPT_FIELDS, "")
    tags = list(_TAG.finditer(text))
    for tag, following in zip(tags, tags[1:] + [None]):
        name = tag.group(1).lower()
        end = following.start() if following is not None else len(text)
        if not fields[name]:
            fields[name] = text[tag.end() : end].strip()
    return fields


@dataclass
class CaptionConfig:
    vocab_size: int
    memory_dim: int  # width of the video tokens it reads
    width: int
    layers: int = 2
    heads: int = 4
    max_len: int = 64  # positions, including the start token
    bos_id: int = 0
    eos_id: int = 0
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ModelError(f"caption head: width {self.width} is not divisible by heads {self.heads}")
        if self.max_len < 2 or self.layers < 1:
            raise ModelError("caption head: max_len must be >= 2 and layers >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the video, MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, memory: Tensor, causal_mask: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, attn_mask=causal_mask, is_causal=True, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.cross_attn(h, memory, memory, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class CaptionHead(nn.Module):
    """Video tokens [B, M, memory_dim] + caption prefix [B, L] -> next-token logits [B, L, vocab]."""

    def __init__(self, config: CaptionConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.pos_embedding = nn.Parameter(torch.randn(config.max_len, config.width) * 0.01)
        self.memory_proj = nn.Sequential(nn.LayerNorm(config.memory_dim), nn.Linear(config.memory_dim, config.width))
        self.blocks = nn.ModuleList(DecoderBlock(config.width, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)

    def project_memory(self, memory: Tensor) -> Tensor:
        """Video tokens in the decoder's width; compute once per clip when decoding step by step."""
        return self.memory_proj(memory)

    def logits(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Next-token logits from already projected memory [B, M, width] and tokens [B, L]."""
        length = tokens.shape[1]
        if length > self.config.max_len:
            raise ModelError(f"caption_ids: {length} tokens exceed the caption head's max_len={self.config.max_len}")
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        x = self.token_embedding(tokens) + self.pos_embedding[:length]
        for block in self.blocks:
            x = block(x, memory, causal)
        return F.linear(self.norm(x), self.token_embedding.weight)  # output layer tied to the embeddings

    def forward(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Teacher forcing: `tokens` is the caption without its last token; logit i predicts token i+1."""
        return self.logits(self.project_memory(memory), tokens)

    def _new_tokens(self, max_len: int | None) -> int:
        limit = self.config.max_len - 1  # one position holds the start token
        if max_len is None:
            return limit
        if not 1 <= max_len <= limit:
            raise ModelError(f"max_len: must be in [1, {limit}] for this caption head, got {max_len}")
        return max_len

    @torch.no_grad()
    def greedy(self, memory: Tensor, max_len: int | None = None) -> Tensor:
        """Most likely token at each step -> ids [B, <= max_len], padded after the end token."""
        cfg = self.config
        memory = self.project_memory(memory)
        seq = torch.full((memory.shape[0], 1), cfg.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for _ in range(self._new_tokens(max_len)):
            step = self.logits(memory, seq)[:, -1].float().log_softmax(dim=-1)
            token = step.argmax(dim=-1).masked_fill(done, cfg.pad_id)
            seq = torch.cat([seq, token.unsqueeze(1)], dim=1)
            done |= token == cfg.eos_id
            if bool(done.all()):
                break
        return seq[:, 1:].contiguous()

    @torch.no_grad()
    def beam_search(
        self, memory: Tensor, beam_size: int = 4, max_len: int | None = None, length_penalty: float = 1.0
    ) -> Tensor:
        """Beam search ranking hypotheses by log-probability / length**length_penalty.

        All beams of all clips advance as one batch; a finished beam only appends padding at no cost,
        so it competes with the others at its final normalised score. Returns ids [B, <= max_len].
        """
        if beam_size < 1:
            raise ModelError(f"beam_size: must be >= 1, got {beam_size}")
        cfg = self.config
        batch, k, vocab = memory.shape[0], beam_size, cfg.vocab_size
        device = memory.device
        memory = self.project_memory(memory).repeat_interleave(k, dim=0)
        seq = torch.full((batch * k, 1), cfg.bos_id, dtype=torch.long, device=device)
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        lengths = torch.zeros(batch, k, device=device)
        done = torch.zeros(batch, k, dtype=torch.bool, device=device)
        finished_step = torch.full((vocab,), float("-inf"), device=device)
        finished_step[cfg.pad_id] = 0.0
        for _ in range(self._new_tokens(max_len)):
            logp = self.logits(memory, seq)[:, -1].float().log_softmax(dim=-1).view(batch, k, vocab)
            logp = torch.where(done.unsqueeze(-1), finished_step, logp)
            new_lengths = lengths + (~done).float()
            total = scores.unsqueeze(-1) + logp  # [B, K, V]
            ranked = total / new_lengths.clamp(min=1).pow(length_penalty).unsqueeze(-1)
            top = ranked.view(batch, -1).topk(k, dim=1).indices  # [B, K] over K*V candidates
            beam, token = top // vocab, top % vocab
            scores = total.view(batch, -1).gather(1, top)
            lengths = new_lengths.gather(1, beam)
            done = done.gather(1, beam) | (token == cfg.eos_id)
            seq = seq.view(batch, k, -1).gather(1, beam.unsqueeze(-1).expand(-1, -1, seq.shape[1]))
            seq = torch.cat([seq, token.unsqueeze(-1)], dim=-1).view(batch * k, -1)
            if bool(done.all()):
                break
        best = (scores / lengths.clamp(min=1).pow(length_penalty)).argmax(dim=1)
        return seq.view(batch, k, -1)[torch.arange(batch, device=device), best, 1:].contiguous()

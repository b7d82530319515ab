"""Caption head: script format round trip, beam search against exhaustive search, overfitting."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from videolang.config import ModelConfig
from videolang.models import CaptionConfig, CaptionHead, ModelError, build_model, format_script, parse_script

TAG = re.compile(r"\[\s*(shot|camera|content)\s*\]", re.IGNORECASE)


field_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(field_text, field_text, field_text)
def test_script_round_trip(shot, camera, content):
    assume(not any(TAG.search(v) for v in (shot, camera, content)))
    assert parse_script(format_script(shot, camera, content)) == {"shot": shot, "camera": camera, "content": content}


def test_parse_script_reads_decoded_text_and_missing_fields():
    decoded = "[ shot ] close - up [ CAMERA ] static [ content ] a red ball rolls ."
    assert parse_script(decoded) == {"shot": "close - up", "camera": "static", "content": "a red ball rolls ."}
    assert parse_script("noise [content] only this") == {"shot": "", "camera": "", "content": "only this"}
    assert parse_script("no tags at all") == {"shot": "", "camera": "", "content": ""}


def test_format_script_rejects_tags_inside_fields():
    with pytest.raises(ModelError, match="content"):
        format_script("wide", "static", "a [shot] inside")


def random_head(vocab: int = 5, max_len: int = 4, seed: int = 0) -> CaptionHead:
    torch.manual_seed(seed)
    config = CaptionConfig(vocab_size=vocab, memory_dim=8, width=16, heads=2, max_len=max_len, bos_id=1, eos_id=2)
    head = CaptionHead(config)
    with torch.no_grad():  # larger weights give peaked, clip-dependent distributions
        for p in head.parameters():
            p.mul_(4.0)
    return head.eval()


def exhaustive_best(head: CaptionHead, memory: torch.Tensor, steps: int, penalty: float) -> list[int]:
    """Score every sequence (ending at the end token or at `steps` tokens) by teacher forcing."""
    cfg = head.config
    candidates = []
    for length in range(1, steps + 1):
        for body in itertools.product(range(cfg.vocab_size), repeat=length):
            if cfg.eos_id in body[:-1] or (length < steps and body[-1] != cfg.eos_id):
                continue
            candidates.append(list(body))
    best, best_score = None, float("-inf")
    for seq in candidates:
        tokens = torch.tensor([[cfg.bos_id] + seq[:-1]])
        logp = head(memory, tokens)[0].float().log_softmax(-1)
        score = logp[torch.arange(len(seq)), seq].sum().item() / len(seq) ** penalty
        if score > best_score:
            best, best_score = seq, score
    return best


def trim(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


@pytest.mark.parametrize("penalty", [0.0, 1.0, 2.0])
def test_beam_search_with_enough_beams_is_exhaustive(penalty):
    head = random_head()
    memory = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(1))
    steps = head.config.max_len - 1
    beams = head.beam_search(memory, beam_size=head.config.vocab_size**steps, length_penalty=penalty)
    with torch.no_grad():
        for i in range(memory.shape[0]):
            expected = exhaustive_best(head, memory[i : i + 1], steps, penalty)
            assert trim(beams[i].tolist(), head.config.eos_id) == expected


def reference_beam_search(head: CaptionHead, memory: torch.Tensor, k: int, steps: int, penalty: float) -> list[int]:
    """Textbook beam search over Python lists for one clip: finished hypotheses stay in the beam."""
    cfg = head.config
    beams = [([], 0.0, False)]  # (tokens, log-probability, finished)
    for _ in range(steps):
        candidates = []
        for tokens, score, finished in beams:
            if finished:
                candidates.append((tokens, score, True))
                continue
            logp = head(memory, torch.tensor([[cfg.bos_id] + tokens]))[0, -1].float().log_softmax(-1)
            for token in range(cfg.vocab_size):
                candidates.append((tokens + [token], score + logp[token].item(), token == cfg.eos_id))
        candidates.sort(key=lambda c: c[1] / len(c[0]) ** penalty, reverse=True)
        beams = candidates[:k]
        if all(finished for _, _, finished in beams):
            break
    return max(beams, key=lambda c: c[1] / len(c[0]) ** penalty)[0]


@pytest.mark.parametrize("penalty", [0.5, 1.0, 2.0])
def test_beam_search_matches_a_reference_loop(penalty):
    # A small vocabulary ends hypotheses early, so finished and open beams of different lengths compete.
    head = random_head(vocab=4, max_len=7, seed=0)
    memory = torch.randn(16, 6, 8, generator=torch.Generator().manual_seed(5))
    beams = head.beam_search(memory, beam_size=3, length_penalty=penalty)
    with torch.no_grad():
        for i in range(memory.shape[0]):
            expected = reference_beam_search(head, memory[i : i + 1], 3, head.config.max_len - 1, penalty)
            assert trim(beams[i].tolist(), head.config.eos_id) == expected


def test_beam_of_one_is_greedy_on_a_random_head():
    head = random_head(vocab=50, max_len=12, seed=3)
    memory = torch.randn(8, 6, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(head.beam_search(memory, beam_size=1), head.greedy(memory))


def test_length_limits_raise_model_errors():
    head = random_head()
    with pytest.raises(ModelError, match="max_len"):
        head.greedy(torch.randn(1, 2, 8), max_len=10)
    with pytest.raises(ModelError, match="caption_ids"):
        head(torch.randn(1, 2, 8), torch.ones(1, 9, dtype=torch.long))


CAPTIONS = [
    ("close-up", "static", "a red ball rolls to the left"),
    ("wide shot", "pan right", "two cubes slide apart"),
    ("medium shot", "zoom in", "a hand picks up the green cup"),
    ("close-up", "tilt down", "water pours into a bowl"),
]


def test_caption_head_overfits_four_clips():
    """Teacher forcing until greedy decoding writes each training caption back token for token."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(video_encoder="tiny", text_encoder="tiny", caption_head=True, caption_max_len=32))
    frames = torch.randint(0, 256, (4, 2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ids, mask = model.text_encoder.tokenize([format_script(*c) for c in CAPTIONS])
    lengths = mask.sum(1)
    targets = [ids[i, 1 : lengths[i]].tolist() for i in range(4)]  # after the start token, up to the end token
    params = [*model.video_encoder.parameters(), *model.caption_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)

    def video_tokens() -> torch.Tensor:
        video = model.video_encoder(frames, return_patches=True)
        return torch.cat([video.frames, video.patches], 1)

    def decoded(beam_size: int) -> list[list[int]]:
        if beam_size == 1:
            out = model.caption_head.greedy(video_tokens())
        else:
            out = model.caption_head.beam_search(video_tokens(), beam_size=beam_size)
        return [trim(row, model.caption_head.config.eos_id) for row in out.tolist()]

    for step in range(1, 401):
        out = model(frames, ids, mask, caption_ids=ids, caption_mask=mask)
        loss = F.cross_entropy(out["caption_logits"].flatten(0, 1), out["caption_labels"].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                done = decoded(1) == targets
            model.train()
            if done:
                break
    model.eval()
    with torch.no_grad():
        assert decoded(1) == targets
        memory = video_tokens()
        assert torch.equal(model.caption_head.greedy(memory), model.caption_head.beam_search(memory, beam_size=1))
        texts = model.generate_captions(frames)

    def normalise(text: str) -> str:  # what the tokenizer makes of a field, e.g. "close - up"
        return model.tokenizer.decode(model.tokenizer(text, add_special_tokens=False)["input_ids"])

    for text, (shot, camera, content) in zip(texts, CAPTIONS):
        expected = {"shot": normalise(shot), "camera": normalise(camera), "content": normalise(content)}
        assert parse_script(text) == expected

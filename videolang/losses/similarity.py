"""Fine-grained clip-caption similarity by soft maximum over frame-word similarities (Norton).

For clip a with frames x_t and caption c with words w_l (unit vectors, s_tl = <x_t, w_l>):

    word_to_frames(a, c) = mean over valid words l of  alpha * log sum_{valid t} exp(s_tl / alpha)
    frame_to_words(a, c) = mean over valid frames t of alpha * log sum_{valid l} exp(s_tl / alpha)
    sim(a, c) = (word_to_frames + frame_to_words) / 2

The soft maximum lets each word find its frame (and each frame its word) without a hard argmax. Padding
is removed from both the log-sum-exp and the mean, so the value does not depend on how much padding a
batch carries. `soft_max_directions` returns the two directions apart: Norton's fused similarity
min-max normalises each one on its own before averaging them (`videolang.losses.paragraph`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from videolang.losses.checks import check_mask, check_tensor
from videolang.losses.errors import LossError


def soft_max_similarity(
    frames: Tensor,
    words: Tensor,
    frame_mask: Optional[Tensor] = None,
    word_mask: Optional[Tensor] = None,
    alpha: float = 1.0,
) -> Tensor:
    """`[A, C]` soft-maximum similarity of every clip `frames` `[A, T, D]` with every caption `words`
    `[C, L, D]`: the mean of the two directions of `soft_max_directions`. Masks are bool `[A, T]` /
    `[C, L]` (True = real token); a pair without any valid frame or word scores 0. Memory is
    O(A * C * T * L).
    """
    word_to_frames, frame_to_words = soft_max_directions(frames, words, frame_mask, word_mask, alpha)
    return 0.5 * (word_to_frames + frame_to_words)


def soft_max_directions(
    frames: Tensor,
    words: Tensor,
    frame_mask: Optional[Tensor] = None,
    word_mask: Optional[Tensor] = None,
    alpha: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """`(word_to_frames, frame_to_words)`, each `[A, C]`, for clips `frames` `[A, T, D]` and captions
    `words` `[C, L, D]` (see the module docstring); arguments as in `soft_max_similarity`. A pair without
    any valid frame or word scores 0 in both.
    """
    where = "soft_max_similarity"
    check_tensor(where, "frames", frames, 3)
    check_tensor(where, "words", words, 3)
    if frames.shape[-1] != words.shape[-1]:
        dims = f"{frames.shape[-1]} and {words.shape[-1]}"
        raise LossError(f"{where}: frames and words must share the feature dim, got {dims}")
    if not alpha > 0:
        raise LossError(f"{where}: alpha must be positive, got {alpha}")
    n_clips, n_frames = frames.shape[:2]
    n_caps, n_words = words.shape[:2]
    frame_mask = check_mask(where, "frame_mask", frame_mask, (n_clips, n_frames))
    word_mask = check_mask(where, "word_mask", word_mask, (n_caps, n_words))
    if frame_mask is None:
        frame_mask = frames.new_ones((n_clips, n_frames), dtype=torch.bool)
    if word_mask is None:
        word_mask = words.new_ones((n_caps, n_words), dtype=torch.bool)

    sim = torch.einsum("atd,cld->actl", F.normalize(frames, dim=-1), F.normalize(words, dim=-1)) / alpha
    pair_tokens = frame_mask[:, None, :, None] & word_mask[None, :, None, :]
    sim = sim.masked_fill(~pair_tokens, torch.finfo(sim.dtype).min)
    word_to_frames = _masked_mean(alpha * sim.logsumexp(dim=2), word_mask[None, :, :])
    frame_to_words = _masked_mean(alpha * sim.logsumexp(dim=3), frame_mask[:, None, :])
    has_pair = frame_mask.any(1)[:, None] & word_mask.any(1)[None, :]
    return torch.where(has_pair, word_to_frames, 0.0), torch.where(has_pair, frame_to_words, 0.0)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` over its last dim where `mask` is True; masked entries may be -inf (never NaN)."""
    mask = mask.expand_as(x)
    return torch.where(mask, x, 0.0).sum(-1) / mask.sum(-1).clamp_min(1)

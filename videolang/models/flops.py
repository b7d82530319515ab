"""Training FLOPs per sample, for MFU: matmuls only (2 FLOPs per multiply-add), backward = 2x forward.

Counted: patch embedding, every attention projection, attention scores and mixing, MLPs, the shared-
space projections, the caption head with its vocabulary projection, and the gradient-free [CLS]
attention pass of attention-guided token dropping. Not counted: norms, softmax, embeddings lookups
and the batch-level similarity matrix (B x B x D per batch, negligible per sample).
"""

from __future__ import annotations

from videolang.config import ModelConfig
from videolang.models.build import build_model
from videolang.models.video_text import VideoTextModel


def encoder_layer_flops(tokens: int, width: int, hidden: int) -> int:
    """Forward FLOPs of one self-attention + MLP layer on `tokens` tokens."""
    projections = 2 * tokens * width * width * 4  # q, k, v, out
    attention = 2 * tokens * tokens * width * 2  # scores and weighted sum
    mlp = 2 * tokens * width * hidden * 2
    return projections + attention + mlp


def decoder_layer_flops(tokens: int, memory: int, width: int, hidden: int) -> int:
    """Forward FLOPs of one causal self-attention + cross-attention + MLP layer (full score matrices)."""
    cross = 2 * tokens * width * width * 2 + 2 * memory * width * width * 2 + 2 * tokens * memory * width * 2
    return encoder_layer_flops(tokens, width, hidden) + cross


def estimate_flops(
    model: VideoTextModel | ModelConfig, num_frames: int, text_len: int, caption_len: int | None = None
) -> int:
    """FLOPs of one training sample (forward + backward) of `num_frames` frames and `text_len` tokens.

    A `ModelConfig` is built first (a few seconds for large towers). `caption_len` (tokens including the
    start token, default `text_len`) only counts when the model has a caption head.
    """
    if isinstance(model, ModelConfig):
        model = build_model(model)
    video, text = model.video_encoder, model.text_encoder
    vcfg = video.vision.config
    width, patches = vcfg.hidden_size, video.num_patches
    kept = video.kept_patches(training=True)

    patch_embed = 2 * patches * (vcfg.num_channels * vcfg.patch_size**2) * width
    vit = vcfg.num_hidden_layers * encoder_layer_flops(1 + kept, width, vcfg.intermediate_size)
    temporal = len(video.temporal) * encoder_layer_flops(num_frames, width, 4 * width)
    video_proj = 2 * (num_frames + 1) * width * video.config.embed_dim
    forward = num_frames * vit + temporal + video_proj

    tcfg = text.tower.config
    text_width = tcfg.hidden_size
    tokens = text_len if text.long_text == "chunk" else min(text_len, text.tower_positions)
    text_hidden = getattr(tcfg, "intermediate_size", 4 * text_width)
    forward += tcfg.num_hidden_layers * encoder_layer_flops(tokens, text_width, text_hidden)
    forward += 2 * (tokens + 1) * text_width * model.embed_dim

    if model.caption_head is not None:
        ccfg = model.caption_head.config
        steps = (caption_len if caption_len is not None else text_len) - 1
        memory = num_frames * (1 + kept)
        forward += 2 * memory * ccfg.memory_dim * ccfg.width
        forward += ccfg.layers * decoder_layer_flops(steps, memory, ccfg.width, 4 * ccfg.width)
        forward += 2 * steps * ccfg.width * ccfg.vocab_size

    # Pixels need no gradient, so the patch embedding's backward is its weight gradient alone.
    total = 3 * forward + 2 * num_frames * patch_embed
    if kept < patches and video.config.token_drop_mode == "attention":
        full = 1 + patches
        cheap = (vcfg.num_hidden_layers - 1) * encoder_layer_flops(full, width, vcfg.intermediate_size)
        cheap += 2 * (1 + full) * width * width + 2 * full * width  # last layer: [CLS] query, keys, scores
        total += num_frames * cheap
    return int(total)

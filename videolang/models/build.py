"""`build_model(cfg)`: a `VideoTextModel` from the `model:` section of a config.

`model.video_encoder` is `tiny`, `vit-b16` or a folder (a saved `VideoEncoder`, whose architecture then
wins, or a Hugging Face CLIP folder, whose ViT weights are used); `model.text_encoder` is `minilm`,
`tiny` or a Hugging Face text model folder. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from videolang.config import ModelConfig
from videolang.errors import ConfigError
from videolang.models.caption_head import CaptionConfig, CaptionHead
from videolang.models.errors import ModelError
from videolang.models.serialization import read_config
from videolang.models.text_encoder import LONG_TEXT_MODES, POOLINGS, TextEncoder
from videolang.models.video_encoder import DROP_MODES, VISION_PRESETS, VideoEncoder
from videolang.models.video_text import VideoTextModel

log = logging.getLogger(__name__)
TEXT_PRESETS = ("minilm", "tiny")


def check_model_config(cfg: ModelConfig) -> None:
    """Reject values the dataclass types cannot (enumerations, ranges), naming the `model.*` key."""
    choices = {"text_pooling": POOLINGS, "long_text": LONG_TEXT_MODES, "token_drop_mode": DROP_MODES}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"model.{key}: expected one of {list(allowed)}, got {getattr(cfg, key)!r}")
    if not 0.0 <= cfg.frame_token_drop < 1.0:
        raise ConfigError(f"model.frame_token_drop: must be in [0, 1), got {cfg.frame_token_drop}")
    for key in ("embed_dim", "max_frames", "text_max_positions", "caption_layers"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"model.{key}: must be >= 1, got {getattr(cfg, key)}")
    if cfg.text_dropout is not None and not 0.0 <= cfg.text_dropout < 1.0:
        raise ConfigError(f"model.text_dropout: must be in [0, 1) or null, got {cfg.text_dropout}")
    if cfg.temporal_layers < 0:
        raise ConfigError(f"model.temporal_layers: must be >= 0, got {cfg.temporal_layers}")
    if cfg.caption_max_len < 2:
        raise ConfigError(f"model.caption_max_len: must be >= 2, got {cfg.caption_max_len}")
    if not 0 < cfg.logit_scale_init <= cfg.logit_scale_max:
        raise ConfigError("model.logit_scale_init: must be > 0 and <= model.logit_scale_max")


def build_video_encoder(cfg: ModelConfig) -> VideoEncoder:
    training = dict(
        frame_token_drop=cfg.frame_token_drop,
        token_drop_mode=cfg.token_drop_mode,
        grad_checkpointing=cfg.grad_checkpointing,
    )
    architecture = dict(embed_dim=cfg.embed_dim, temporal_layers=cfg.temporal_layers, max_frames=cfg.max_frames)
    name = cfg.video_encoder
    if name in VISION_PRESETS:
        return VideoEncoder.preset(name, **architecture, **training)
    path = Path(name)
    if not path.is_dir():
        raise ConfigError(
            f"model.video_encoder: {name!r} is neither a preset ({', '.join(VISION_PRESETS)}) nor a folder"
        )
    if "format" not in read_config(path):
        return VideoEncoder.from_pretrained(path, **architecture, **training)
    encoder = VideoEncoder.from_pretrained(path, **training).train()
    if encoder.config.embed_dim != cfg.embed_dim:
        raise ConfigError(
            f"model.embed_dim: {cfg.embed_dim} differs from the saved encoder's {encoder.config.embed_dim} ({path})"
        )
    saved = {k: getattr(encoder.config, k) for k in ("temporal_layers", "max_frames")}
    if saved != {k: architecture[k] for k in saved}:
        log.warning("model.video_encoder: using the saved encoder's architecture %s from %s", saved, path)
    return encoder


def build_text_encoder(cfg: ModelConfig) -> TextEncoder:
    options = dict(
        pooling=cfg.text_pooling,
        long_text=cfg.long_text,
        max_positions=cfg.text_max_positions,
        grad_checkpointing=cfg.grad_checkpointing,
    )
    name = cfg.text_encoder
    if name == "minilm":
        encoder = TextEncoder.minilm(**options)
    elif name == "tiny":
        encoder = TextEncoder.tiny(**options)
    elif Path(name).is_dir():
        encoder = TextEncoder.from_pretrained(name, **options)
    else:
        raise ConfigError(f"model.text_encoder: {name!r} is neither a preset ({', '.join(TEXT_PRESETS)}) nor a folder")
    if cfg.text_dropout is not None:
        for module in encoder.tower.modules():
            if isinstance(module, nn.Dropout):
                module.p = cfg.text_dropout
    return encoder


def build_caption_head(cfg: ModelConfig, video: VideoEncoder, text: TextEncoder) -> CaptionHead:
    """A decoder as wide as the text tower, reading the video tower's tokens, on the text tokenizer."""
    tokenizer = text.tokenizer
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ModelError(f"caption head: tokenizer {type(tokenizer).__name__} has no start/end tokens")
    config = CaptionConfig(
        vocab_size=len(tokenizer),
        memory_dim=video.width,
        width=text.width,
        layers=cfg.caption_layers,
        heads=text.tower.config.num_attention_heads,
        max_len=cfg.caption_max_len,
        bos_id=bos,
        eos_id=eos,
        pad_id=text.pad_token_id,
    )
    return CaptionHead(config)


def build_model(cfg: ModelConfig) -> VideoTextModel:
    """The dual encoder (+ caption head if `cfg.caption_head`), in training mode."""
    check_model_config(cfg)
    video = build_video_encoder(cfg)
    text = build_text_encoder(cfg)
    caption = build_caption_head(cfg, video, text) if cfg.caption_head else None
    model = VideoTextModel(video, text, cfg.logit_scale_init, cfg.logit_scale_max, caption_head=caption)
    return model.train()

"""Video tower: a per-frame CLIP ViT, then a temporal transformer over the frames' [CLS] embeddings.

Frames go through the ViT independently, so image-pretrained CLIP weights apply unchanged; time is
modelled only on the short [CLS] sequence, which costs little. For training speed, patch tokens can be
dropped per frame, at random or keeping the patches the [CLS] token attends to most (Attentive Mask
CLIP), which cuts the ViT's cost roughly in proportion to the tokens dropped.

The encoder also owns the linear projection into the shared video-text space, so an exported encoder
(`save_pretrained`) gives exactly the video embeddings of the `VideoTextModel` it came from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from transformers import AutoModel, CLIPVisionConfig, CLIPVisionModel

from videolang.data.transforms import CLIP_MEAN, CLIP_STD
from videolang.models.errors import ModelError
from videolang.models.hf import set_checkpointing, vision_transformer
from videolang.models.serialization import (
    CONFIG_NAME,
    check_format,
    load_weights,
    read_config,
    save_folder,
)

VIDEO_ENCODER_FORMAT = "videolang.video_encoder/1"
DROP_MODES = ("random", "attention")

# Architectures of the built-in vision towers (CLIPVisionConfig fields).
VISION_PRESETS: dict[str, dict[str, int]] = {
    # ~0.1 M parameters, 32 px frames: fast enough on a CPU for tests and smoke runs.
    "tiny": dict(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    ),
    # ~2 M parameters, 64 px frames: CPU benchmarks and the demo's larger runs.
    "small": dict(
        hidden_size=192,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=3,
        image_size=64,
        patch_size=8,
    ),
    # CLIP ViT-B/16 at 224 px.
    "vit-b16": dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
    ),
}


@dataclass
class VideoEncoderConfig:
    """Everything needed to rebuild a `VideoEncoder`; `vision` is a `CLIPVisionConfig` as a dict."""

    vision: dict[str, Any]
    embed_dim: int = 256
    temporal_layers: int = 2
    max_frames: int = 32
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    frame_token_drop: float = 0.0  # fraction of patch tokens dropped per frame, training only
    token_drop_mode: str = "random"  # random | attention
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ModelError("video encoder: image_mean/image_std need 3 values each, std > 0")
        if not 0.0 <= self.frame_token_drop < 1.0:
            raise ModelError(f"video encoder: frame_token_drop must be in [0, 1), got {self.frame_token_drop}")
        if self.token_drop_mode not in DROP_MODES:
            raise ModelError(
                f"video encoder: token_drop_mode must be one of {DROP_MODES}, got {self.token_drop_mode!r}"
            )
        if self.embed_dim < 1 or self.max_frames < 1 or self.temporal_layers < 0:
            raise ModelError("video encoder: embed_dim and max_frames must be >= 1, temporal_layers >= 0")

    @property
    def image_size(self) -> int:
        return int(self.vision["image_size"])

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` layout: preprocessing grouped so users can read how to feed frames."""
        out = dataclasses.asdict(self)
        vision = out.pop("vision")
        out["preprocess"] = {
            "input": "uint8 [B, T, H, W, 3] RGB",
            "resize": "shortest side to image_size, then centre crop",
            "image_size": self.image_size,
            "image_mean": list(out.pop("image_mean")),
            "image_std": list(out.pop("image_std")),
        }
        out["vision"] = vision
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "video encoder config") -> VideoEncoderConfig:
        data = dict(data)
        data.pop("format", None)
        pre = data.pop("preprocess", {})
        if "vision" not in data or not isinstance(data["vision"], dict):
            raise ModelError(f"{where}: missing the 'vision' section")
        if "image_size" in pre and int(pre["image_size"]) != int(data["vision"].get("image_size", -1)):
            raise ModelError(f"{where}: preprocess.image_size disagrees with vision.image_size")
        data["image_mean"] = pre.get("image_mean", CLIP_MEAN)
        data["image_std"] = pre.get("image_std", CLIP_STD)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelError(f"{where}: unknown field '{unknown[0]}'")
        return cls(**data)


class VideoOutput(NamedTuple):
    """Video tower outputs, in the tower's width D_v (before the projection to the shared space).

    A named tuple, not a dataclass: ZeRO-3 finds the tensors of tuple outputs to hook its backward
    re-gathering on, and would leave this module's own parameters (temporal positions) partitioned."""

    clip: Tensor  # [B, D_v] pooled clip embedding
    frames: Tensor  # [B, T, D_v] per-frame embeddings after the temporal transformer
    patches: Optional[Tensor] = None  # [B, T*P, D_v] patch tokens, P = kept patches per frame


class TemporalBlock(nn.Module):
    """Pre-norm transformer block over the frame sequence (SDPA inside `nn.MultiheadAttention`)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VideoEncoder(nn.Module):
    """uint8 clips [B, T, H, W, 3] -> clip, frame (and optionally patch) embeddings.

    `forward` returns tower-width features for training; `encode` returns the projected, L2-normalised
    clip embedding of the shared video-text space. Both do their own resizing and normalisation.
    """

    def __init__(self, config: VideoEncoderConfig, vision: CLIPVisionModel | None = None):
        super().__init__()
        if vision is None:
            vision = AutoModel.from_config(CLIPVisionConfig.from_dict(config.vision), attn_implementation="sdpa")
        else:
            config = dataclasses.replace(config, vision=vision.config.to_dict())
        self.config = config
        self.vision = vision
        width = vision.config.hidden_size
        heads = vision.config.num_attention_heads
        self.temporal_pos = nn.Parameter(torch.randn(config.max_frames, width) * 0.01)
        self.temporal = nn.ModuleList(TemporalBlock(width, heads) for _ in range(config.temporal_layers))
        self.temporal_norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, config.embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=width**-0.5)
        # Folding /255 into the statistics lets uint8 frames be normalised in one step.
        mean = torch.tensor(config.image_mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(config.image_std).view(1, 3, 1, 1) * 255
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        if config.grad_checkpointing:
            set_checkpointing(self.vision, True)

    # ------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def preset(cls, name: str, **options: Any) -> VideoEncoder:
        """A randomly initialised encoder with a built-in ViT size (`tiny` or `vit-b16`)."""
        if name not in VISION_PRESETS:
            raise ModelError(f"unknown video encoder preset {name!r} (choose from {', '.join(VISION_PRESETS)})")
        return cls(VideoEncoderConfig(vision=CLIPVisionConfig(**VISION_PRESETS[name]).to_dict(), **options))

    @classmethod
    def tiny(cls, **options: Any) -> VideoEncoder:
        """A ~0.2 M-parameter random encoder on 32 px frames, for smoke tests on a CPU."""
        return cls.preset("tiny", **options)

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> VideoEncoder:
        """Load a saved `VideoEncoder` folder, or start from a Hugging Face CLIP(Vision)Model folder.

        For a CLIP folder only the ViT is pretrained; the temporal transformer and projection start
        random and `options` set the other `VideoEncoderConfig` fields. A saved encoder comes back in
        eval mode, exactly as saved; `options` there may only change training settings.
        """
        path = Path(path)
        config = read_config(path)
        if "format" in config:
            check_format(config, VIDEO_ENCODER_FORMAT, path)
            encoder = cls(VideoEncoderConfig.from_dict(config, where=str(path / CONFIG_NAME)))
            load_weights(encoder, path)
            if options:
                encoder.set_training_options(**options)
            return encoder.eval()
        if config.get("model_type") in ("clip", "clip_vision_model"):
            return cls._from_clip(path, **options)
        raise ModelError(f"{path / CONFIG_NAME}: neither a videolang video encoder nor a CLIP vision model")

    @classmethod
    def _from_clip(cls, path: Path, **options: Any) -> VideoEncoder:
        try:
            vision = CLIPVisionModel.from_pretrained(path, local_files_only=True, attn_implementation="sdpa")
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: cannot load the CLIP vision tower: {str(e).splitlines()[0]}") from None
        processor = path / "preprocessor_config.json"
        if processor.is_file():  # the normalisation the checkpoint was trained with
            stats = json.loads(processor.read_text())
            options.setdefault("image_mean", stats.get("image_mean", CLIP_MEAN))
            options.setdefault("image_std", stats.get("image_std", CLIP_STD))
        config = VideoEncoderConfig(vision=vision.config.to_dict(), **options)
        return cls(config, vision=vision)

    def set_training_options(
        self,
        frame_token_drop: float | None = None,
        token_drop_mode: str | None = None,
        grad_checkpointing: bool | None = None,
    ) -> None:
        """Change settings that affect training only (they are saved with the config)."""
        changes = dict(
            frame_token_drop=frame_token_drop, token_drop_mode=token_drop_mode, grad_checkpointing=grad_checkpointing
        )
        self.config = dataclasses.replace(self.config, **{k: v for k, v in changes.items() if v is not None})
        if grad_checkpointing is not None:
            set_checkpointing(self.vision, grad_checkpointing)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` (architecture + preprocessing) and `model.safetensors`."""
        return save_folder(self, {"format": VIDEO_ENCODER_FORMAT, **self.config.to_dict()}, directory)

    # ------------------------------------------------------------------------------------------
    # Forward

    @property
    def width(self) -> int:
        return self.vision.config.hidden_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per frame before dropping."""
        return (self.config.image_size // self.vision.config.patch_size) ** 2

    def kept_patches(self, training: bool | None = None) -> int:
        """Patch tokens per frame that reach the ViT layers (in training or eval; default: current mode)."""
        training = self.training if training is None else training
        if not (training and self.config.frame_token_drop > 0):
            return self.num_patches
        return max(1, round(self.num_patches * (1 - self.config.frame_token_drop)))

    def preprocess(self, frames: Tensor) -> Tensor:
        """uint8 [B, T, H, W, 3] -> normalised pixels [B*T, 3, S, S] (CLIP's resize + centre crop)."""
        if frames.dim() != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ModelError(
                f"frames: expected uint8 [B, T, H, W, 3], got {str(frames.dtype).removeprefix('torch.')} "
                f"{list(frames.shape)}"
            )
        if frames.shape[1] > self.config.max_frames:
            raise ModelError(
                f"frames: {frames.shape[1]} frames exceed the encoder's max_frames={self.config.max_frames}"
            )
        x = rearrange(frames, "b t h w c -> (b t) c h w").float()  # every frame is one ViT image
        size = self.config.image_size
        height, width = x.shape[-2:]
        if (height, width) != (size, size):
            scale = size / min(height, width)
            new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            x = x[..., top : top + size, left : left + size]
        x = (x - self.pixel_mean) / self.pixel_std
        return x.to(self.vision.get_input_embeddings().weight.dtype)

    def forward(self, frames: Tensor, return_patches: bool = False) -> VideoOutput:
        batch, num_frames = frames.shape[:2]
        vit = vision_transformer(self.vision)
        tokens = vit.embeddings(self.preprocess(frames))  # [B*T, 1+P, C], positions added
        if self.kept_patches() < self.num_patches:
            tokens = self._drop_patches(tokens)
        hidden = vit.encoder(inputs_embeds=vit.pre_layrnorm(tokens)).last_hidden_state
        cls = rearrange(vit.post_layernorm(hidden[:, 0]), "(b t) c -> b t c", b=batch, t=num_frames)

        pos = self.temporal_pos[:num_frames]
        x = cls + pos
        for block in self.temporal:
            x = block(x)
        frame_emb = self.temporal_norm(x)
        patches = None
        if return_patches:
            # The frame's temporal position tells a decoder which frame each patch came from.
            patches = rearrange(vit.post_layernorm(hidden[:, 1:]), "(b t) p c -> b t p c", b=batch, t=num_frames)
            patches = rearrange(patches + pos[:, None], "b t p c -> b (t p) c")  # a clip's tokens, frame by frame
        return VideoOutput(clip=frame_emb.mean(dim=1), frames=frame_emb, patches=patches)

    def encode(self, frames: Tensor) -> Tensor:
        """uint8 clips [B, T, H, W, 3] -> L2-normalised embeddings [B, embed_dim] in the shared space.

        Call `.eval()` first: in training mode patch tokens may be dropped.
        """
        return F.normalize(self.proj(self(frames).clip), dim=-1)

    # ------------------------------------------------------------------------------------------
    # Patch-token dropping (training only)

    def _drop_patches(self, tokens: Tensor) -> Tensor:
        """Keep [CLS] and `kept_patches()` patch tokens of every frame (tokens: [N, 1+P, C])."""
        keep = self.kept_patches()
        patches = tokens[:, 1:]
        if self.config.token_drop_mode == "attention":
            scores = self._cls_attention(tokens)
        else:
            scores = torch.rand(patches.shape[:2], device=tokens.device)
        index = scores.topk(keep, dim=1).indices
        kept = patches.gather(1, index.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([tokens[:, :1], kept], dim=1)

    @torch.no_grad()
    def _cls_attention(self, tokens: Tensor) -> Tensor:
        """[CLS]-to-patch attention of the last ViT layer, averaged over heads: [N, P].

        The cheap pass of Attentive Mask CLIP: all tokens, no gradients, and of the last layer only the
        query/key projections of its attention.
        """
        vit = vision_transformer(self.vision)
        layers = vit.encoder.layers
        hidden = vit.pre_layrnorm(tokens)
        for layer in layers[:-1]:
            hidden = layer(hidden, None)
        last = layers[-1]
        hidden = last.layer_norm1(hidden)
        attn = last.self_attn
        heads = attn.num_heads
        query = rearrange(attn.q_proj(hidden[:, :1]), "n l (h d) -> n h l d", h=heads)  # [CLS] only
        key = rearrange(attn.k_proj(hidden), "n l (h d) -> n h l d", h=heads)
        weights = (query @ key.transpose(-1, -2) * attn.scale).softmax(dim=-1)  # [N, heads, 1, 1+P]
        return weights[:, :, 0, 1:].mean(dim=1)

"""The dual encoder: video and text towers projected to one L2-normalised space, plus a caption head.

Clip-level embeddings serve retrieval and the contrastive losses; per-frame and per-word embeddings
(normalised in the same space) serve the fine-grained losses (Norton's frame-word soft maximum) and
zero-shot segmentation. The learnable temperature is stored as a log; the trainer clamps it at
`logit_scale_max` after each optimizer step (`clamp_parameters_`), never in the forward pass.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from videolang.models.caption_head import IGNORE_INDEX, CaptionConfig, CaptionHead
from videolang.models.errors import ModelError
from videolang.models.serialization import CONFIG_NAME, check_format, load_weights, read_config, save_folder
from videolang.models.text_encoder import TextEncoder
from videolang.models.video_encoder import VideoEncoder, VideoEncoderConfig

VIDEO_TEXT_FORMAT = "videolang.video_text/1"
TOKENIZER_DIR = "tokenizer"


class VideoTextModel(nn.Module):
    """Video encoder (which owns the video projection) + text encoder + text projection + temperature."""

    def __init__(
        self,
        video_encoder: VideoEncoder,
        text_encoder: TextEncoder,
        logit_scale_init: float = 1 / 0.07,
        logit_scale_max: float = 100.0,
        caption_head: CaptionHead | None = None,
    ):
        super().__init__()
        if not 0 < logit_scale_init <= logit_scale_max:
            raise ModelError(f"logit scale: need 0 < init <= max, got {logit_scale_init} and {logit_scale_max}")
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder
        self.embed_dim = video_encoder.config.embed_dim
        self.text_proj = nn.Linear(text_encoder.width, self.embed_dim, bias=False)
        nn.init.normal_(self.text_proj.weight, std=text_encoder.width**-0.5)
        # Shape [1], not a 0-dim tensor: DeepSpeed broadcasts parameters as byte views, which 0-dim tensors refuse.
        self.logit_scale = nn.Parameter(torch.tensor([math.log(logit_scale_init)]))
        self.logit_scale_init = logit_scale_init
        self.logit_scale_max = logit_scale_max
        self.caption_head = caption_head

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The text tower's tokenizer, shared by the caption head."""
        return self.text_encoder.tokenizer

    # ------------------------------------------------------------------------------------------
    # Training forward

    def forward(
        self,
        frames: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        caption_ids: Tensor | None = None,
        caption_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Embeddings of a batch of clips [B, T, H, W, 3] (uint8) and captions [B, L].

        Returns `video` [B, D], `text` [B, D], `video_frames` [B, T, D], `text_words` [B, L, D] (all
        L2-normalised), `word_mask` [B, L] (bool) and `logit_scale` (exp of the parameter; the trainer
        keeps it at most `logit_scale_max` with `clamp_parameters_`, so its gradient never vanishes).
        With `caption_ids` [B, Lc] (start token ... end token, padded; `caption_mask` marks real
        tokens), also `caption_logits` [B, Lc-1, V] and `caption_labels` [B, Lc-1], padding set to -100.
        """
        if input_ids.shape[0] != frames.shape[0]:
            raise ModelError(f"input_ids: batch of {input_ids.shape[0]} captions for {frames.shape[0]} clips")
        want_caption = caption_ids is not None
        if want_caption and self.caption_head is None:
            raise ModelError("caption_ids: this model has no caption head (set model.caption_head=true)")
        video = self.video_encoder(frames, return_patches=want_caption)
        text = self.text_encoder(input_ids, attention_mask)
        out = {
            "video": self._project_video(video.clip),
            "text": self._project_text(text.pooled),
            "video_frames": self._project_video(video.frames),
            "text_words": self._project_text(text.words),
            "word_mask": text.mask,
            "logit_scale": self.logit_scale.exp().squeeze(0),
        }
        if want_caption:
            if caption_ids.dim() != 2 or caption_ids.shape[0] != frames.shape[0]:
                raise ModelError(
                    f"caption_ids: expected [B, L] with B={frames.shape[0]}, got {list(caption_ids.shape)}"
                )
            mask = torch.ones_like(caption_ids, dtype=torch.bool) if caption_mask is None else caption_mask.bool()
            memory = torch.cat([video.frames, video.patches], dim=1)
            out["caption_logits"] = self.caption_head(memory, caption_ids[:, :-1])
            out["caption_labels"] = caption_ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)
        return out

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Clamp the temperature in place after an optimizer step (CLIP's rule): clamping in `forward`
        would zero its gradient past the bound, and it could never come back."""
        for param, low, high in self.temperature_bounds():
            param.clamp_(low, high)

    def temperature_bounds(self) -> list[tuple[nn.Parameter, float | None, float | None]]:
        """(parameter, lower, upper) of each learnable log-temperature, for trainers whose optimizer holds
        the master weights elsewhere (DeepSpeed ZeRO, bf16) and must clamp those."""
        return [(self.logit_scale, None, math.log(self.logit_scale_max))]

    def _project_video(self, x: Tensor) -> Tensor:
        return F.normalize(self.video_encoder.proj(x), dim=-1)

    def _project_text(self, x: Tensor) -> Tensor:
        return F.normalize(self.text_proj(x), dim=-1)

    # ------------------------------------------------------------------------------------------
    # Inference helpers

    def encode_video(self, frames: Tensor) -> Tensor:
        """uint8 clips [B, T, H, W, 3] -> L2-normalised embeddings [B, D]."""
        return self.video_encoder.encode(frames)

    def encode_text(self, text: Tensor | list[str] | str, attention_mask: Tensor | None = None) -> Tensor:
        """Token ids [B, L] (+ mask) or strings -> L2-normalised embeddings [B, D]."""
        if isinstance(text, (str, list, tuple)):
            text, attention_mask = self.text_encoder.tokenize(text)
            device = self.text_proj.weight.device
            text, attention_mask = text.to(device), attention_mask.to(device)
        return self._project_text(self.text_encoder(text, attention_mask).pooled)

    @staticmethod
    def similarity(video: Tensor, text: Tensor) -> Tensor:
        """Cosine similarity of normalised embeddings: [Nv, D] x [Nt, D] -> [Nv, Nt]."""
        return video @ text.T

    @staticmethod
    def frame_word_similarity(frames: Tensor, words: Tensor) -> Tensor:
        """[Bv, T, D] x [Bt, L, D] -> [Bv, Bt, T, L]; mask padded words with `word_mask` before reducing."""
        return torch.einsum("atd,bld->abtl", frames, words)

    @torch.no_grad()
    def generate_captions(
        self, frames: Tensor, beam_size: int = 1, max_len: int | None = None, length_penalty: float = 1.0
    ) -> list[str]:
        """Decode a caption per clip: greedy for `beam_size=1`, beam search otherwise."""
        if self.caption_head is None:
            raise ModelError("generate_captions: this model has no caption head (set model.caption_head=true)")
        video = self.video_encoder(frames, return_patches=True)
        memory = torch.cat([video.frames, video.patches], dim=1)
        if beam_size == 1:
            ids = self.caption_head.greedy(memory, max_len=max_len)
        else:
            ids = self.caption_head.beam_search(memory, beam_size, max_len=max_len, length_penalty=length_penalty)
        return self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)

    # ------------------------------------------------------------------------------------------
    # Folders

    def config_dict(self) -> dict[str, Any]:
        return {
            "format": VIDEO_TEXT_FORMAT,
            "embed_dim": self.embed_dim,
            "logit_scale_init": self.logit_scale_init,
            "logit_scale_max": self.logit_scale_max,
            "video": self.video_encoder.config.to_dict(),
            "text": self.text_encoder.config_dict(),
            "caption": self.caption_head.config.to_dict() if self.caption_head is not None else None,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """`config.json` + `model.safetensors` + `tokenizer/`: rebuildable without the source towers."""
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        return save_folder(self, self.config_dict(), directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VideoTextModel:
        """Rebuild a saved model (in eval mode) from its folder alone."""
        directory = Path(directory)
        config = read_config(directory)
        check_format(config, VIDEO_TEXT_FORMAT, directory)
        where = str(directory / CONFIG_NAME)
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR, local_files_only=True)
        except (OSError, ValueError) as e:
            reason = str(e).splitlines()[0]
            raise ModelError(f"{directory / TOKENIZER_DIR}: cannot load the tokenizer: {reason}") from None
        try:
            video = VideoEncoder(VideoEncoderConfig.from_dict(config["video"], where=where))
            text = TextEncoder.from_config_dict(config["text"], tokenizer)
            caption = CaptionHead(CaptionConfig(**config["caption"])) if config.get("caption") else None
            scale = {k: float(config[k]) for k in ("logit_scale_init", "logit_scale_max")}
            model = cls(video, text, caption_head=caption, **scale)
        except (KeyError, TypeError) as e:
            raise ModelError(f"{where}: incomplete or invalid model config ({type(e).__name__}: {e})") from None
        load_weights(model, directory)
        return model.eval()

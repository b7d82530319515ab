"""Load what an evaluation needs from a model folder: a saved `VideoTextModel` or an exported encoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from videolang.errors import VideolangError
from videolang.models import VideoEncoder, VideoTextModel
from videolang.models.serialization import read_config
from videolang.models.video_text import VIDEO_TEXT_FORMAT


@dataclass
class EvalModel:
    """Video encoder always; the text side only for full models (retrieval and zero-shot need it)."""

    path: Path
    video: VideoEncoder
    full: Optional[VideoTextModel]
    device: torch.device

    @torch.no_grad()
    def encode_video(self, frames: Tensor) -> Tensor:
        return self.video.encode(frames.to(self.device))

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        return self.require_text("text embeddings").encode_text(texts)

    def require_text(self, why: str) -> VideoTextModel:
        if self.full is None:
            raise VideolangError(f"{self.path}: an exported video encoder has no text tower, needed for {why}; "
                                 "pass a saved VideoTextModel folder (or use --probe)")
        return self.full

    @property
    def image_size(self) -> int:
        return self.video.config.image_size


def load_eval_model(path: str | Path, device: str | torch.device = "cpu") -> EvalModel:
    """A model folder, an exported encoder, a training run (its final model) or a checkpoint (its model)."""
    from videolang.train.layout import resolve_model_folder

    path = resolve_model_folder(path)
    if not path.is_dir():
        raise VideolangError(f"model folder not found: {path}")
    device = torch.device(device)
    config = read_config(path)
    if config.get("format") == VIDEO_TEXT_FORMAT:
        full = VideoTextModel.from_pretrained(path).to(device).eval()
        return EvalModel(path, full.video_encoder, full, device)
    return EvalModel(path, VideoEncoder.from_pretrained(path).to(device).eval(), None, device)

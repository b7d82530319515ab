"""Models stage: video and text towers, the dual encoder, the captioning head and their builders."""

from videolang.models.build import build_model
from videolang.models.caption_head import CaptionConfig, CaptionHead, format_script, parse_script
from videolang.models.errors import ModelError
from videolang.models.flops import estimate_flops
from videolang.models.text_encoder import TextEncoder, TextOutput
from videolang.models.video_encoder import VideoEncoder, VideoEncoderConfig, VideoOutput
from videolang.models.video_text import VideoTextModel

__all__ = [
    "CaptionConfig",
    "CaptionHead",
    "ModelError",
    "TextEncoder",
    "TextOutput",
    "VideoEncoder",
    "VideoEncoderConfig",
    "VideoOutput",
    "VideoTextModel",
    "build_model",
    "estimate_flops",
    "format_script",
    "parse_script",
]

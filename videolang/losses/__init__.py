"""Losses stage: contrastive (distributed InfoNCE, hierarchical), Norton optimal transport, captioning.

Math and symbols: docs/losses.md.
"""

from videolang.losses.caption import caption_loss
from videolang.losses.contrastive import info_nce, rectified_info_nce, rectified_targets
from videolang.losses.distributed import gather_pair, gather_with_grad
from videolang.losses.errors import LossError
from videolang.losses.hierarchical import cross_level_info_nce, level_info_nce
from videolang.losses.paragraph import (
    ParagraphLoss,
    alignment_plan,
    fused_similarity,
    paragraph_logits,
    paragraph_loss,
    prompt_bucket_value,
)
from videolang.losses.similarity import soft_max_directions, soft_max_similarity
from videolang.losses.transport import sinkhorn
from videolang.losses.video_text import VideoTextLoss, build_loss, check_loss_config

__all__ = [
    "LossError",
    "ParagraphLoss",
    "VideoTextLoss",
    "alignment_plan",
    "build_loss",
    "caption_loss",
    "check_loss_config",
    "cross_level_info_nce",
    "fused_similarity",
    "gather_pair",
    "gather_with_grad",
    "info_nce",
    "level_info_nce",
    "paragraph_logits",
    "paragraph_loss",
    "prompt_bucket_value",
    "rectified_info_nce",
    "rectified_targets",
    "sinkhorn",
    "soft_max_directions",
    "soft_max_similarity",
]

"""The training objective: every loss term weighted by `LossConfig`, computed from model outputs.

Plain symmetric InfoNCE (`clip_weight = 1`, everything else 0) is the baseline; the hierarchical terms,
Norton's rectification and video-paragraph OT, and the caption loss switch on through their weights.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from videolang.config import LossConfig
from videolang.data.manifest import LEVELS
from videolang.losses.caption import caption_loss
from videolang.losses.checks import check_index, check_mask, check_tensor
from videolang.losses.contrastive import info_nce, rectified_info_nce
from videolang.losses.errors import LossError
from videolang.losses.hierarchical import cross_level_info_nce, level_info_nce
from videolang.losses.paragraph import ParagraphLoss


def check_loss_config(cfg: LossConfig) -> None:
    """Reject values that would fail (or silently do nothing) deep inside a training step."""

    def need(ok: bool, field: str, rule: str) -> None:
        if not ok:
            raise LossError(f"loss.{field}: {rule}, got {getattr(cfg, field)!r}")

    for field in ("clip_weight", "cross_level_weight", "paragraph_weight", "caption_weight", "fine_weight"):
        need(getattr(cfg, field) >= 0, field, "must be >= 0")
    for name, weight in cfg.level_weights.items():
        if name not in LEVELS:
            raise LossError(f"loss.level_weights.{name}: unknown level (valid: {', '.join(LEVELS)})")
        if not weight >= 0:
            raise LossError(f"loss.level_weights.{name}: must be >= 0, got {weight!r}")
    need(0 <= cfg.rectify_beta <= 1, "rectify_beta", "must be in [0, 1]")
    need(0 < cfg.rectify_eps < math.inf, "rectify_eps", "must be positive")
    need(0 < cfg.paragraph_eps < math.inf, "paragraph_eps", "must be positive")
    need(cfg.paragraph_iters >= 1, "paragraph_iters", "must be >= 1")
    need(0 < cfg.bucket_ratio <= 1, "bucket_ratio", "must be in (0, 1]")
    need(cfg.softmax_alpha > 0, "softmax_alpha", "must be positive")
    need(0 <= cfg.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
    total = (
        cfg.clip_weight + sum(cfg.level_weights.values()) + cfg.cross_level_weight
        + cfg.paragraph_weight + cfg.caption_weight
    )
    if total == 0:
        raise LossError("loss: every weight is 0, nothing would be trained (set loss.clip_weight: 1.0)")


class VideoTextLoss(nn.Module):
    """Weighted sum of the configured terms. It owns parameters (Norton's paragraph logit scale, unless
    `loss.paragraph_learn_temperature` is false), so put it inside the module that DDP / DeepSpeed wraps,
    or add its parameters to the optimizer, and call `clamp_parameters_()` after each optimizer step.

    `forward` returns `{"loss": total, <term>: value, ...}` with terms `clip`, `level/<name>`,
    `cross_level`, `paragraph`, `caption` for those with a non-zero weight.
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        check_loss_config(cfg)
        self.cfg = cfg
        self.paragraph = (
            ParagraphLoss(
                alpha=cfg.softmax_alpha, fine_weight=cfg.fine_weight, bucket_ratio=cfg.bucket_ratio,
                use_bucket=cfg.use_bucket, eps=cfg.paragraph_eps, n_iters=cfg.paragraph_iters,
                learn_temperature=cfg.paragraph_learn_temperature, norm=cfg.paragraph_norm,
            )
            if cfg.paragraph_weight > 0
            else None
        )

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Clamp the loss's own parameters into their ranges, in place (the paragraph logit scale:
        temperature in [0.01, 1]). Call after each optimizer step; the forward pass never clamps."""
        for param, low, high in self.temperature_bounds():
            param.clamp_(low, high)

    def temperature_bounds(self) -> list:
        """(parameter, lower, upper) of each learnable log-temperature of the loss."""
        return self.paragraph.temperature_bounds() if self.paragraph is not None else []

    def forward(
        self,
        video: Tensor,
        text: Tensor,
        logit_scale: Tensor | float,
        *,
        video_frames: Optional[Tensor] = None,
        frame_mask: Optional[Tensor] = None,
        text_words: Optional[Tensor] = None,
        word_mask: Optional[Tensor] = None,
        levels: Optional[Tensor] = None,
        parent: Optional[Tensor] = None,
        paragraph_mask: Optional[Tensor] = None,
        caption_logits: Optional[Tensor] = None,
        caption_labels: Optional[Tensor] = None,
        skip_missing: bool = False,
    ) -> dict[str, Tensor]:
        """Inputs (B samples, D embedding dim; per-rank tensors under torch.distributed):

        - `video`, `text` `[B, D]`: L2-normalised clip and caption embeddings, sample i <-> caption i;
        - `logit_scale`: the model's scale (exp of its log parameter) for the clip-level terms;
        - `video_frames` `[B, T, D]` + `frame_mask` `[B, T]`, `text_words` `[B, L, D]` + `word_mask`
          `[B, L]`: token embeddings for the soft-max similarity (paragraph term, `fine_weight > 0`);
        - `levels` `[B]`: index into `videolang.data.manifest.LEVELS` per sample (hierarchical terms);
        - `parent` `[B]`: index of each sample's parent in the batch, -1 for none (cross-level term);
        - `paragraph_mask` `[V, K]` with B = V * K: the batch is V videos of K consecutive clips,
          True for real clips (paragraph term; also masks padded clips out of every other term);
        - `caption_logits` `[B, L, vocab]`, `caption_labels` `[B, L]` (-100 = ignore): caption term.

        A term whose inputs are missing raises, unless `skip_missing` (the trainer: each stream's batches
        carry the inputs of some terms only); the clip term needs only `video` and `text`.
        """
        cfg = self.cfg
        where = "VideoTextLoss"
        check_tensor(where, "video", video, 2)
        batch = video.shape[0]
        mask = None
        if paragraph_mask is not None:
            shape = tuple(paragraph_mask.shape) if isinstance(paragraph_mask, Tensor) else ()
            if len(shape) != 2 or shape[0] * shape[1] != batch:
                raise LossError(f"{where}: paragraph_mask must be [V, K] with V * K = {batch}, got {list(shape)}")
            mask = check_mask(where, "paragraph_mask", paragraph_mask, shape).flatten()

        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {}
        if cfg.clip_weight > 0:
            if cfg.rectify_beta > 0:
                terms["clip"] = rectified_info_nce(
                    video, text, logit_scale, beta=cfg.rectify_beta, eps=cfg.rectify_eps, mask=mask
                )
            else:
                terms["clip"] = info_nce(video, text, logit_scale, mask=mask)
            weights["clip"] = cfg.clip_weight

        def wanted(*inputs: tuple[Optional[Tensor], str, str]) -> bool:
            if skip_missing and any(value is None for value, _, _ in inputs):
                return False
            for value, name, field in inputs:
                _require(value, name, field)
            return True

        if any(w > 0 for w in cfg.level_weights.values()) and wanted((levels, "levels", "loss.level_weights")):
            check_index(where, "levels", levels, (batch,))
            level_terms = level_info_nce(video, text, logit_scale, levels, cfg.level_weights, mask=mask)
            terms.update(level_terms)
            weights.update({key: cfg.level_weights[key.split("/", 1)[1]] for key in level_terms})
        if cfg.cross_level_weight > 0 and wanted((parent, "parent", "loss.cross_level_weight")):
            terms["cross_level"] = cross_level_info_nce(video, text, logit_scale, parent, mask=mask)
            weights["cross_level"] = cfg.cross_level_weight
        if self.paragraph is not None and wanted((paragraph_mask, "paragraph_mask", "loss.paragraph_weight")):
            terms["paragraph"] = self._paragraph(
                video, text, paragraph_mask, video_frames, frame_mask, text_words, word_mask
            )
            weights["paragraph"] = cfg.paragraph_weight
        if cfg.caption_weight > 0 and wanted(
            (caption_logits, "caption_logits", "loss.caption_weight"), (caption_labels, "caption_labels", "loss.caption_weight")
        ):
            terms["caption"] = caption_loss(
                caption_logits, caption_labels, label_smoothing=cfg.label_smoothing
            )
            weights["caption"] = cfg.caption_weight

        total = sum(weights[name] * value for name, value in terms.items())
        return {"loss": total, **terms}

    def _paragraph(
        self,
        video: Tensor,
        text: Tensor,
        paragraph_mask: Tensor,
        frames: Optional[Tensor],
        frame_mask: Optional[Tensor],
        words: Optional[Tensor],
        word_mask: Optional[Tensor],
    ) -> Tensor:
        """Reshape the flat batch into `[V, K, ...]` paragraphs and run the paragraph loss."""
        n_videos, k = paragraph_mask.shape
        if self.cfg.fine_weight > 0 and (frames is None or words is None):
            raise LossError("VideoTextLoss: loss.fine_weight > 0 needs video_frames and text_words")

        def split(x: Optional[Tensor]) -> Optional[Tensor]:
            return None if x is None else rearrange(x, "(v k) ... -> v k ...", v=n_videos, k=k)

        return self.paragraph(
            split(video), split(text), video_mask=paragraph_mask, text_mask=paragraph_mask,
            frames=split(frames), frame_mask=split(frame_mask),
            words=split(words), word_mask=split(word_mask),
        )


def build_loss(cfg: LossConfig) -> VideoTextLoss:
    """The loss module for a config (the counterpart of `videolang.models.build_model`)."""
    return VideoTextLoss(cfg)


def _require(value: Optional[Tensor], name: str, field: str) -> None:
    if value is None:
        raise LossError(f"VideoTextLoss: {field} > 0 needs the `{name}` input")

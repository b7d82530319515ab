"""`TrainModule`: the model and the loss in one module, the unit that DeepSpeed wraps.

The loss owns parameters (Norton's paragraph temperature), so it must sit inside what the engine wraps
for its parameters to be optimised, partitioned and checkpointed. `forward(batch)` takes a collated
batch of any stream and returns every loss term that the batch has inputs for, plus the embedding
self-similarity diagnostics (`DIAGNOSTICS`); embeddings reach the losses in fp32 whatever precision the
towers run in.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from videolang.losses import VideoTextLoss
from videolang.models import VideoTextModel

# Model outputs that go to the losses in fp32 (similarities, log-sum-exps and Sinkhorn are precision-sensitive).
_FP32_OUTPUTS = ("video", "text", "video_frames", "text_words", "logit_scale", "caption_logits")


class TrainModule(nn.Module):
    def __init__(self, model: VideoTextModel, loss: VideoTextLoss):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Loss terms of one micro-batch: `{"loss": weighted total, <term>: value, ...}`."""
        frames = batch["frames"]
        paragraph_mask = batch.get("mask") if frames.dim() == 6 else None
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if paragraph_mask is not None:  # [V, K, T, H, W, 3] paragraphs -> a flat batch of V*K clips
            frames = rearrange(frames, "v k t h w c -> (v k) t h w c")
            input_ids = rearrange(input_ids, "v k l -> (v k) l")
            attention_mask = rearrange(attention_mask, "v k l -> (v k) l")
        out = self.model(frames, input_ids, attention_mask, caption_ids=batch.get("caption_ids"),
                         caption_mask=batch.get("caption_mask"))
        out = {k: (v.float() if k in _FP32_OUTPUTS and v.is_floating_point() else v) for k, v in out.items()}
        inputs: dict[str, Any] = {
            "video_frames": out["video_frames"], "text_words": out["text_words"], "word_mask": out["word_mask"],
        }
        if paragraph_mask is not None:
            inputs["paragraph_mask"] = paragraph_mask
        if "levels" in batch:
            inputs["levels"] = batch["levels"]
            inputs["parent"] = batch["parent"]
        if "caption_logits" in out:
            inputs["caption_logits"] = out["caption_logits"]
            inputs["caption_labels"] = out["caption_labels"]
        terms = self.loss(out["video"], out["text"], out["logit_scale"], skip_missing=True, **inputs)
        flat_mask = paragraph_mask.flatten() if paragraph_mask is not None else None
        return {**terms, **self_similarity(out["video"], out["text"], flat_mask)}

    def prepare_zero3(self) -> None:
        """Tell ZeRO-3 about parameters used outside their own module's `forward`: it gathers a
        module's parameters around that module's forward only. `nn.MultiheadAttention` reads its
        `out_proj` weights directly (so it becomes a leaf: gathered whole), and the caption head's
        output layer reuses the token embedding's weight."""
        from deepspeed.utils import set_z3_leaf_modules
        from deepspeed.runtime.zero.partition_parameters import register_external_parameter

        if any(isinstance(m, nn.MultiheadAttention) for m in self.modules()):
            set_z3_leaf_modules(self, [nn.MultiheadAttention])
        head = self.model.caption_head
        if head is not None:
            register_external_parameter(head, head.token_embedding.weight)

    @torch.no_grad()
    def clamp_parameters_(self, optimizer=None) -> None:
        """Keep learnable temperatures within their bounds; call after every optimizer step (on every
        rank: under ZeRO-3 reading a parameter is a collective).

        The clamp goes to the weights the optimizer updates: under ZeRO or bf16 those are DeepSpeed's fp32
        master copies (a clamp of the module's copy would be overwritten by the next step), otherwise the
        parameter itself."""
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        for param, low, high in self.model.temperature_bounds() + self.loss.temperature_bounds():
            master = safe_get_full_fp32_param(param)
            if master is None:
                copy = _unfused_master(optimizer, param)  # bf16 without ZeRO: a per-parameter fp32 copy
                if copy is not None:
                    copy.clamp_(low, high)
                param.data.clamp_(low, high)  # a plain parameter: the optimizer steps it directly
                continue
            clamped = master.clamp(low, high)
            if not torch.equal(clamped, master):
                safe_set_full_fp32_param(param, clamped)
                if param.numel() == clamped.numel():  # the module's copy too, for the next forward pass
                    param.data.copy_(clamped.to(param.dtype))


# Diagnostics that TrainModule returns next to the loss terms (logged, never optimised).
DIAGNOSTICS = ("self_sim/video", "self_sim/text")


@torch.no_grad()
def self_similarity(video: Tensor, text: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """Mean cosine between *different* clips (captions) of the micro-batch, padded clips left out.

    It watches for representation collapse: a tower that maps every input to nearly one point drives this
    towards 1 while a contrastive term sits at its chance value log(batch); objectives that normalise
    similarities by their batch range (Norton's min-max) can keep falling in that state.
    """
    if mask is not None:
        video, text = video[mask], text[mask]
    n = video.shape[0]
    if n < 2:
        return {}
    out = {}
    for name, x in (("self_sim/video", video), ("self_sim/text", text)):
        x = x.float()
        total = (x @ x.T).sum() - (x * x).sum()
        out[name] = total / (n * (n - 1))
    return out


def _unfused_master(optimizer, param: nn.Parameter):
    """The fp32 master of `param` in DeepSpeed's unfused 16-bit optimizer (bf16 at ZeRO stage 0), which
    keeps `fp16_groups` and `fp32_groups` as parallel lists; None for any other optimizer."""
    low, high = getattr(optimizer, "fp16_groups", None), getattr(optimizer, "fp32_groups", None)
    if not isinstance(low, list) or not isinstance(high, list):
        return None
    for group_low, group_high in zip(low, high):
        for p_low, p_high in zip(group_low, group_high):
            if p_low is param:
                return p_high
    return None

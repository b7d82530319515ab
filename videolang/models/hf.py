"""Small adapters around Hugging Face towers, kept in one place because their APIs move between releases."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel


def vision_transformer(model: PreTrainedModel) -> nn.Module:
    """The module holding a CLIP ViT's embeddings, layers and norms (nested as `vision_model` before 5.x)."""
    return getattr(model, "vision_model", model)


def set_checkpointing(model: PreTrainedModel, enabled: bool) -> None:
    """Recompute each transformer layer in the backward pass instead of storing its activations."""
    # `activation_checkpointing_*` replaced `gradient_checkpointing_*` during transformers 5.x.
    if enabled:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()

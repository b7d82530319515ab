"""AdamW with parameter groups, and linear warmup into a cosine decay.

Weight decay pulls weights towards zero, which is right for matrices and wrong for biases, norms,
temperatures and position embeddings (decaying them changes what the model computes, not its capacity):
those go to a group without decay, as in CLIP trainers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from videolang.config import TrainConfig

# Name fragments of parameters that are never decayed (besides every 1-D tensor: biases, norm scales).
NO_DECAY_NAMES = ("logit_scale", "log_scale", "position_embedding", "temporal_pos", "class_embedding", "embeddings.position")


def no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or any(part in name for part in NO_DECAY_NAMES)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    decay, keep = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (keep if no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": keep, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """torch's AdamW as DeepSpeed's client optimizer: nothing is JIT-compiled, on any device."""
    return torch.optim.AdamW(param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.adam_eps)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based): linear warmup to 1 over `warmup`
    steps, then half a cosine down to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Handed to `deepspeed.initialize`, so its state is in every checkpoint and resumes where it was."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    )

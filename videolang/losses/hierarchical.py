"""Hierarchical contrast: one InfoNCE per annotation level, and a parent <-> children term.

Phases, steps and tasks describe the same video at different granularity, so a phase clip should not
compete against task captions as negatives: each level gets its own InfoNCE whose rows and candidates are
the samples of that level only (masks, not sub-batches, so shapes stay fixed across ranks). The
cross-level term asks a parent clip to match the mean of its children's captions.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from videolang.data.manifest import LEVELS
from videolang.losses.checks import as_scale, check_index, check_pair
from videolang.losses.contrastive import info_nce, pair_loss
from videolang.losses.distributed import gather_no_grad, gather_pair
from videolang.losses.errors import LossError


def level_info_nce(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    levels: Tensor,
    weights: Mapping[str, float],
    *,
    mask: Optional[Tensor] = None,
) -> dict[str, Tensor]:
    """`{"level/<name>": loss}` for every level with a non-zero weight (the weights are applied by the
    caller). `levels` `[B]` holds indices into `videolang.data.manifest.LEVELS` (phase, step, task, clip).

    A level with no samples on this rank contributes zero here but still serves as candidates for the
    other ranks, whose gradients reach this rank's features through the gather.
    """
    where = "level_info_nce"
    batch = check_pair(where, video, text, mask)
    check_index(where, "levels", levels, (batch,))
    unknown = sorted(set(weights) - set(LEVELS))
    if unknown:
        raise LossError(f"{where}: unknown level '{unknown[0]}' in weights (valid: {', '.join(LEVELS)})")
    scale = as_scale(where, logit_scale, video)
    pair = gather_pair(video, text, mask)
    all_levels = gather_no_grad(levels)
    losses = {}
    for name, weight in weights.items():
        if weight == 0:
            continue
        level = LEVELS.index(name)
        local, gathered = levels == level, all_levels == level
        if mask is not None:
            local, gathered = local & mask, gathered & pair.mask
        level_pair = dataclasses.replace(pair, mask=gathered)
        losses[f"level/{name}"] = pair_loss(video, text, scale, level_pair, local)
    return losses


def cross_level_info_nce(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    parent: Tensor,
    *,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """InfoNCE between each parent clip and the re-normalised mean of its children's captions.

    `parent` `[B]` gives, for every sample, the index of its parent within this rank's batch, or -1;
    parents without children in the batch are left out. Vectorised with `index_add_`, no loop.
    """
    where = "cross_level_info_nce"
    batch = check_pair(where, video, text, mask)
    check_index(where, "parent", parent, (batch,))
    if batch:
        low, high = (int(v) for v in torch.aminmax(parent))
        if low < -1 or high >= batch:
            raise LossError(f"{where}: parent indices must be in [-1, {batch - 1}], got [{low}, {high}]")
    is_child = parent >= 0
    if mask is not None:
        is_child = is_child & mask
    weight = is_child.to(text.dtype)
    index = parent.clamp_min(0)
    sums = torch.zeros_like(text).index_add_(0, index, text * weight.unsqueeze(1))
    counts = torch.zeros_like(weight).index_add_(0, index, weight)
    has_children = counts > 0
    if mask is not None:
        has_children = has_children & mask
    children = F.normalize(sums, dim=-1)
    return info_nce(video, children, as_scale(where, logit_scale, video), mask=has_children)

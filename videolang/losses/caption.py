"""Caption language-model loss: token cross-entropy with label smoothing, padding ignored."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from videolang.losses.checks import check_index, check_tensor
from videolang.losses.errors import LossError


def caption_loss(
    logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.1, ignore_index: int = -100
) -> Tensor:
    """Mean token cross-entropy of `logits` `[B, L, V]` against `labels` `[B, L]`.

    `logits[b, t]` predicts `labels[b, t]` (shift before calling); tokens equal to `ignore_index` do not
    count. Smoothing spreads `label_smoothing` of each target's mass uniformly over the vocabulary. A
    batch without any target token gives 0, not NaN.
    """
    where = "caption_loss"
    check_tensor(where, "logits", logits, 3)
    check_index(where, "labels", labels, logits.shape[:2])
    if not 0.0 <= label_smoothing < 1.0:
        raise LossError(f"{where}: label_smoothing must be in [0, 1), got {label_smoothing}")
    total = F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
    return total / (labels != ignore_index).sum().clamp_min(1)

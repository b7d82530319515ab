"""Shape checks shared by the losses: a wrong input fails with one line naming the argument."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from videolang.losses.errors import LossError


def _shape(x: object) -> object:
    return list(x.shape) if isinstance(x, Tensor) else type(x).__name__


def check_tensor(where: str, name: str, x: object, dims: int) -> Tensor:
    """`x` must be a floating tensor with `dims` dimensions."""
    if not isinstance(x, Tensor) or x.dim() != dims or not x.is_floating_point():
        raise LossError(f"{where}: {name} must be a floating tensor with {dims} dims, got {_shape(x)}")
    return x


def check_same_shape(where: str, names: Sequence[str], *xs: Tensor) -> None:
    if any(x.shape != xs[0].shape for x in xs[1:]):
        shapes = ", ".join(f"{n} {list(x.shape)}" for n, x in zip(names, xs))
        raise LossError(f"{where}: shapes must match, got {shapes}")


def check_mask(where: str, name: str, mask: Optional[Tensor], shape: Sequence[int]) -> Optional[Tensor]:
    """A boolean validity mask of exactly `shape`, or None for all valid."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(shape):
        got = f"{mask.dtype} {list(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise LossError(f"{where}: {name} must be a bool tensor of shape {list(shape)}, got {got}")
    return mask


def check_pair(where: str, video: Tensor, text: Tensor, mask: Optional[Tensor]) -> int:
    """Paired embeddings `[B, D]` of equal shape with an optional `[B]` mask; returns B."""
    check_tensor(where, "video", video, 2)
    check_tensor(where, "text", text, 2)
    check_same_shape(where, ("video", "text"), video, text)
    check_mask(where, "mask", mask, video.shape[:1])
    return video.shape[0]


def check_index(where: str, name: str, x: object, shape: Sequence[int]) -> Tensor:
    """An integer tensor (ids, levels, labels) of exactly `shape`."""
    if (
        not isinstance(x, Tensor)
        or x.dtype.is_floating_point
        or x.dtype == torch.bool
        or tuple(x.shape) != tuple(shape)
    ):
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise LossError(f"{where}: {name} must be an integer tensor of shape {list(shape)}, got {got}")
    return x


def as_scale(where: str, logit_scale: object, like: Tensor) -> Tensor:
    """The logit scale as a 0-d tensor (a Python number is accepted for evaluation and tests)."""
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        return like.new_tensor(float(logit_scale))
    if not isinstance(logit_scale, Tensor) or logit_scale.numel() != 1:
        got = _shape(logit_scale)
        raise LossError(f"{where}: logit_scale must be a number or a one-element tensor, got {got}")
    return logit_scale.reshape(())

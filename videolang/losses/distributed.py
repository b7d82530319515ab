"""Gathering a contrastive batch across ranks for the local-loss form.

Each rank scores its own B rows against all N = world * B columns. The gather keeps the autograd graph:
its backward pass sums the gradients that every rank's loss sends to a shard and returns them to the
rank that owns it, so no rank ever materialises the N x N logits.

The gather is `_AllGatherWithGrad` below: plain synchronous collectives, whose backward sums the
(contiguous copy of the) gradient over ranks and keeps this rank's rows. It accepts the non-contiguous
gradients that `video @ text_all.T` can send back, which `torch.distributed.nn.functional.all_gather`
dropped in older torch releases. torch's functional autograd gather was tried too: its backward leaves
an asynchronous reduce-scatter that, still pending at process exit under load, aborted the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

def rank_and_world() -> tuple[int, int]:
    """(rank, world size), or (0, 1) outside `torch.distributed`."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Every rank's `x` concatenated along dim 0 in rank order; gradients flow back to each owner.

    All ranks must pass the same shape. The gradient `x` receives is the sum, over ranks, of the
    gradients their losses send to this rank's rows (see docs/losses.md).
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return _AllGatherWithGrad.apply(x.contiguous())


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the incoming gradient over ranks (all-reduce) and
    returns this rank's rows. The gradient is copied to a contiguous buffer first: it may be a
    transposed view, and the all-reduce works in place."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        rank, world = rank_and_world()
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, end = ctx.rows
        return grad[start:end]


def gather_no_grad(x: Tensor) -> Tensor:
    """Like `gather_with_grad` for tensors that carry no gradient (masks, ids)."""
    _, world = rank_and_world()
    if world == 1:
        return x
    # Not every backend gathers bool tensors; move them as uint8.
    send = x.to(torch.uint8) if x.dtype == torch.bool else x.contiguous()
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send)
    out = torch.cat(parts, dim=0)
    return out.bool() if x.dtype == torch.bool else out


@dataclass
class GatheredPair:
    """Video and text features of the global batch, and where this rank's rows start in it."""

    video: Tensor  # [N, D]
    text: Tensor  # [N, D]
    mask: Optional[Tensor]  # [N] bool, None when every sample is valid
    offset: int


def gather_pair(video: Tensor, text: Tensor, mask: Optional[Tensor] = None) -> GatheredPair:
    """Gather both modalities (and the validity mask) once, for any number of losses over them."""
    rank, _ = rank_and_world()
    return GatheredPair(
        video=gather_with_grad(video),
        text=gather_with_grad(text),
        mask=None if mask is None else gather_no_grad(mask),
        offset=rank * video.shape[0],
    )

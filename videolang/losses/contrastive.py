"""Symmetric InfoNCE (the CLIP loss) in the local-loss form, and Norton's rectified variant.

Rank r scores its B video rows against the N gathered captions and its B caption rows against the N
gathered videos, so its loss is the mean over its own 2B rows. Averaging that over ranks (what DDP and
DeepSpeed do with gradients) gives the loss of one process on the whole batch; docs/losses.md has the
derivation.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from videolang.losses.checks import as_scale, check_pair
from videolang.losses.distributed import GatheredPair, gather_pair
from videolang.losses.errors import LossError
from videolang.losses.transport import sinkhorn


def info_nce(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    mask: Optional[Tensor] = None,
    targets: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """Symmetric InfoNCE of L2-normalised `video` and `text` `[B, D]`, sample i matching caption i.

    `mask` `[B]` drops samples from both the rows and the candidates. `targets` replaces the one-hot
    labels by soft ones: a pair (video->text, text->video) of `[B, N]` rows over the gathered batch
    (N = world size * B); mass on masked candidates is ignored.
    """
    where = "info_nce"
    batch = check_pair(where, video, text, mask)
    scale = as_scale(where, logit_scale, video)
    pair = gather_pair(video, text, mask)
    if targets is not None:
        expected = (batch, pair.text.shape[0])
        if len(targets) != 2 or any(not isinstance(t, Tensor) or tuple(t.shape) != expected for t in targets):
            raise LossError(f"{where}: targets must be two tensors of shape {list(expected)}")
    return pair_loss(video, text, scale, pair, mask, targets)


def rectified_info_nce(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    beta: float = 0.3,
    eps: float = 1.0,
    n_iters: int = 50,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """InfoNCE with Norton's faulty-negative rectification: targets `beta * Q + (1 - beta) * I`.

    Q is the Sinkhorn plan (uniform marginals, entropy `eps`) of the batch logits, computed without
    gradient and normalised per row (per column for text->video): a caption that also describes
    another clip of the batch stops being pushed away from it. `beta = 0` is plain InfoNCE.
    """
    where = "rectified_info_nce"
    if not 0.0 <= beta <= 1.0:
        raise LossError(f"{where}: beta must be in [0, 1], got {beta}")
    batch = check_pair(where, video, text, mask)
    scale = as_scale(where, logit_scale, video)
    pair = gather_pair(video, text, mask)
    targets = rectified_targets(pair, scale, batch, beta=beta, eps=eps, n_iters=n_iters)
    return pair_loss(video, text, scale, pair, mask, targets)


@torch.no_grad()
def rectified_targets(
    pair: GatheredPair, logit_scale: Tensor, rows: int, *, beta: float, eps: float, n_iters: int
) -> tuple[Tensor, Tensor]:
    """This rank's `[rows, N]` video->text and text->video targets `beta * Q + (1 - beta) * I`.

    Every rank solves the same N x N problem from the gathered features (no gradient, so the N x N
    logits are cheap), which keeps the targets identical to a single-process run.
    """
    logits = logit_scale * pair.video @ pair.text.T
    n = logits.shape[0]
    eye = F.one_hot(torch.arange(rows, device=logits.device) + pair.offset, n).to(logits.dtype)
    marginal = None
    if pair.mask is not None and not bool(pair.mask.any()):
        return eye, eye  # an all-padding batch: every row is masked out of the loss, targets are moot
    if pair.mask is not None:
        weights = pair.mask.to(logits.dtype)
        marginal = weights / weights.sum().clamp_min(1.0)
    plan = sinkhorn(-logits, eps, n_iters, marginal, marginal)
    tiny = torch.finfo(plan.dtype).tiny
    local = slice(pair.offset, pair.offset + rows)
    q_v2t = plan[local] / plan[local].sum(1, keepdim=True).clamp_min(tiny)
    q_t2v = (plan[:, local] / plan[:, local].sum(0, keepdim=True).clamp_min(tiny)).T
    eye = eye.to(plan.dtype)
    return beta * q_v2t + (1 - beta) * eye, beta * q_t2v + (1 - beta) * eye


def pair_loss(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor,
    pair: GatheredPair,
    mask: Optional[Tensor] = None,
    targets: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """InfoNCE of this rank's rows against an already gathered batch (shared by several losses)."""
    v2t = logit_scale * video @ pair.text.T
    t2v = logit_scale * text @ pair.video.T
    t_v2t, t_t2v = targets if targets is not None else (None, None)
    return 0.5 * (
        row_cross_entropy(v2t, pair.offset, mask, pair.mask, t_v2t)
        + row_cross_entropy(t2v, pair.offset, mask, pair.mask, t_t2v)
    )


def row_cross_entropy(
    logits: Tensor,
    offset: int,
    row_mask: Optional[Tensor] = None,
    col_mask: Optional[Tensor] = None,
    targets: Optional[Tensor] = None,
) -> Tensor:
    """Mean over valid rows of the cross-entropy of `logits` `[B, N]`; row i's match is column offset + i.

    Masked columns get the dtype's lowest finite value rather than -inf, so a row or batch with nothing
    valid yields zero loss and zero gradient instead of NaN.
    """
    if col_mask is not None:
        logits = logits.masked_fill(~col_mask, torch.finfo(logits.dtype).min)
    log_p = logits.log_softmax(-1)
    if targets is None:
        nll = -log_p.diagonal(offset=offset)
    else:
        if col_mask is not None:
            log_p = log_p.masked_fill(~col_mask, 0.0)
        nll = -(targets.to(log_p.dtype) * log_p).sum(-1)
    if row_mask is None:
        return nll.mean()
    return torch.where(row_mask, nll, 0.0).sum() / row_mask.sum().clamp_min(1)

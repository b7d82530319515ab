"""Norton's video-paragraph contrast: optimal transport between a video's clips and a paragraph's
captions, with an alignable prompt bucket for the clips and captions that have no partner.

Long videos come with noisy narration: some captions describe nothing on screen, some clips have no
caption, and timestamps drift. Instead of trusting the given clip i <-> caption i pairing, every
(video v, paragraph p) pair gets a K x K similarity S_vp, Sinkhorn finds a soft alignment T_vp, and the
paragraph logit is scale * sum(T_vp * S_vp), with T_vp rescaled to a fixed total mass (the paragraph
length K, as in Norton: mass 1 per aligned clip). The prompt bucket (one extra row and column holding a
similarity threshold) gives unalignable clips and captions somewhere cheaper to go than a wrong partner.
Symbols follow docs/losses.md.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videolang.losses.checks import as_scale, check_mask, check_same_shape, check_tensor
from videolang.losses.contrastive import row_cross_entropy
from videolang.losses.errors import LossError
from videolang.losses.similarity import soft_max_directions
from videolang.losses.transport import sinkhorn

PARAGRAPH_NORMS = ("batch_minmax", "fixed")
# Norton's weight of the pooled-cosine term in the fused similarity (the soft-max term has fine_weight).
COARSE_WEIGHT = 0.5
# Bounds of the learned paragraph logit scale (Norton: temperature tau in [0.01, 1]), applied by
# `ParagraphLoss.clamp_parameters_` after each optimizer step, never in the forward pass.
MIN_LOGIT_SCALE, MAX_LOGIT_SCALE = 1.0, 100.0


def fused_similarity(
    video: Tensor,
    text: Tensor,
    video_mask: Tensor,
    text_mask: Tensor,
    *,
    frames: Optional[Tensor] = None,
    frame_mask: Optional[Tensor] = None,
    words: Optional[Tensor] = None,
    word_mask: Optional[Tensor] = None,
    alpha: float = 1.0,
    fine_weight: float = 1.0,
    norm: str = "batch_minmax",
) -> Tensor:
    """`S` `[V, P, K, K]`: clip i of video v against caption j of paragraph p (P = V).

    Pooled cosine and (when frames and words are given and `fine_weight > 0`) the two directions of the
    soft-max similarity (word -> frames, frame -> words) are each min-max normalised over the valid
    entries of the batch; the fine term is the mean of its two normalised directions (as in Norton, which
    normalises each direction on its own before averaging). They are fused as
    `(0.5 * coarse + fine_weight * fine) / (0.5 + fine_weight)`, so S lies in [0, 1].

    `norm="fixed"` maps every similarity by `(x + 1) / 2` instead (cosines to [0, 1], the soft maximum
    slightly above): no batch statistics. Batch min-max stretches any spread of similarities to [0, 1],
    so paragraph logits stay as large as `scale * K` however little the model has learnt; training from
    scratch on small batches, that collapsed both towers in our runs (docs/benchmarks.md, noise table).
    """
    if norm not in PARAGRAPH_NORMS:
        raise LossError(f"fused_similarity: norm must be one of {PARAGRAPH_NORMS}, got {norm!r}")
    rescale = _min_max if norm == "batch_minmax" else _fixed
    n_videos, k = video.shape[:2]
    flat_v = F.normalize(video.flatten(0, 1), dim=-1)
    flat_t = F.normalize(text.flatten(0, 1), dim=-1)
    valid = _pair_mask(video_mask, text_mask)
    coarse = _blocks(flat_v @ flat_t.T, n_videos, k)
    sim = rescale(coarse, valid)
    if frames is not None and words is not None and fine_weight > 0:
        directions = soft_max_directions(
            frames.flatten(0, 1),
            words.flatten(0, 1),
            None if frame_mask is None else frame_mask.flatten(0, 1),
            None if word_mask is None else word_mask.flatten(0, 1),
            alpha,
        )
        fine = 0.5 * sum(rescale(_blocks(d, n_videos, k), valid) for d in directions)
        sim = (COARSE_WEIGHT * sim + fine_weight * fine) / (COARSE_WEIGHT + fine_weight)
    return sim


@torch.no_grad()
def prompt_bucket_value(sim: Tensor, video_mask: Tensor, text_mask: Tensor, ratio: float) -> Tensor:
    """The k-th lowest aligned similarity S[v, v, i, i] over valid pairs, k = max(1, floor(ratio * n)).

    About a fraction `ratio` of the given pairs then score below the bucket and are let go.
    """
    aligned = sim.diagonal(dim1=0, dim2=1).diagonal(dim1=0, dim2=1)  # [V, K]: S[v, v, i, i]
    valid = video_mask & text_mask
    ordered = aligned.masked_fill(~valid, math.inf).flatten().sort().values
    k = (valid.sum() * ratio).floor().long().clamp_min(1)
    return ordered[k - 1]


@torch.no_grad()
def alignment_plan(
    sim: Tensor,
    video_mask: Tensor,
    text_mask: Tensor,
    bucket: Optional[Tensor],
    *,
    eps: float = 0.1,
    n_iters: int = 50,
) -> Tensor:
    """Transport plans `[V, P, K+1, K+1]` (with a bucket) or `[V, P, K, K]` maximising sum(T * S).

    With m valid clips and n valid captions, each real row and column carries mass 1/(m+n); the bucket
    row carries n/(m+n) and the bucket column m/(m+n), enough to absorb every caption or every clip.
    Without a bucket the marginals are uniform over valid entries. Padded entries get zero mass.
    """
    n_videos, n_paras, k, _ = sim.shape
    vm = video_mask.to(sim.dtype)[:, None, :].expand(n_videos, n_paras, k)
    tm = text_mask.to(sim.dtype)[None, :, :].expand(n_videos, n_paras, k)
    m, n = vm.sum(-1, keepdim=True), tm.sum(-1, keepdim=True)
    if bucket is None:
        scores, a, b = sim, vm / m, tm / n
    else:
        total = m + n
        edge = bucket.to(sim.dtype).expand(n_videos, n_paras, k, 1)
        corner = bucket.to(sim.dtype).expand(n_videos, n_paras, 1, k + 1)
        scores = torch.cat([torch.cat([sim, edge], dim=-1), corner], dim=-2)
        a = torch.cat([vm / total, n / total], dim=-1)
        b = torch.cat([tm / total, m / total], dim=-1)
    size = scores.shape[-1]
    plan = sinkhorn(-scores.reshape(-1, size, size), eps, n_iters, a.reshape(-1, size), b.reshape(-1, size))
    return plan.view(n_videos, n_paras, size, size)


def paragraph_logits(
    sim: Tensor,
    video_mask: Tensor,
    text_mask: Tensor,
    logit_scale: Tensor | float,
    *,
    bucket_ratio: float = 0.3,
    use_bucket: bool = True,
    eps: float = 0.1,
    n_iters: int = 50,
) -> tuple[Tensor, Tensor]:
    """Paragraph logits from a fused similarity `sim` `[V, P, K, K]` (P = V, masks `[V, K]`):
    `(video_to_paragraph [V, P], paragraph_to_video [P, V])`.

    The plan of each (video v, paragraph p) pair (`alignment_plan`, no gradient) is cut to its real block
    (bucket row and column dropped) and rescaled to total mass M, then `logit = scale * sum(T * S)`
    (gradient through S and the scale). Norton uses M = K, the paragraph length, for every pair: a
    perfectly aligned paragraph carries mass 1 per clip. With padding, M is the number of real clips of
    the *query* of each cross-entropy: m_v (clips of video v) in row v of `video_to_paragraph`, n_p
    (captions of paragraph p) in row p of `paragraph_to_video`. Every logit one softmax compares then has
    the same mass, as in Norton, so padding never makes a candidate look better or worse; with full
    paragraphs both are K and `paragraph_to_video` is the transpose of `video_to_paragraph`.
    """
    k = sim.shape[-1]
    bucket = prompt_bucket_value(sim, video_mask, text_mask, bucket_ratio) if use_bucket else None
    plan = alignment_plan(sim.detach(), video_mask, text_mask, bucket, eps=eps, n_iters=n_iters)[..., :k, :k]
    # Norton multiplies the plan by (m + n) before rescaling the real block; the factor cancels here.
    mass = plan.sum((-1, -2))
    weighted = (plan * sim).sum((-1, -2)) / mass.clamp_min(torch.finfo(mass.dtype).tiny)  # [V, P]
    scale = as_scale("paragraph_logits", logit_scale, sim)
    m = video_mask.sum(1).to(sim.dtype)  # real clips per video
    n = text_mask.sum(1).to(sim.dtype)  # real captions per paragraph
    return scale * m[:, None] * weighted, scale * n[:, None] * weighted.T


def paragraph_loss(
    video: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    video_mask: Optional[Tensor] = None,
    text_mask: Optional[Tensor] = None,
    frames: Optional[Tensor] = None,
    frame_mask: Optional[Tensor] = None,
    words: Optional[Tensor] = None,
    word_mask: Optional[Tensor] = None,
    alpha: float = 1.0,
    fine_weight: float = 1.0,
    bucket_ratio: float = 0.3,
    use_bucket: bool = True,
    eps: float = 0.1,
    n_iters: int = 50,
    norm: str = "batch_minmax",
) -> Tensor:
    """Symmetric cross-entropy over the videos of the batch of the paragraph logits
    `scale * sum_ij T_vp[i, j] * S_vp[i, j]` (`paragraph_logits`: real entries only, T rescaled to the
    query's number of real clips, K for full paragraphs), the mean of the two directions.

    Inputs: clip and caption embeddings `[V, K, D]` (clip i and caption i come from the same time span),
    validity masks `[V, K]`, and optionally frames `[V, K, T, D]` / words `[V, K, L, D]` with masks
    `[V, K, T]` / `[V, K, L]` for the soft-max term. Negatives are the other videos on this rank.
    """
    where = "paragraph_loss"
    check_tensor(where, "video", video, 3)
    check_tensor(where, "text", text, 3)
    check_same_shape(where, ("video", "text"), video, text)
    n_videos, k = video.shape[:2]
    scale = as_scale(where, logit_scale, video)
    video_mask = _full_mask(check_mask(where, "video_mask", video_mask, (n_videos, k)), video)
    text_mask = _full_mask(check_mask(where, "text_mask", text_mask, (n_videos, k)), video)
    if fine_weight > 0 and (frames is None) != (words is None):
        raise LossError(f"{where}: the soft-max term needs both frames and words, got only one")
    if frames is not None and words is not None:
        check_tensor(where, "frames", frames, 4)
        check_tensor(where, "words", words, 4)
        if frames.shape[:2] != (n_videos, k) or words.shape[:2] != (n_videos, k):
            raise LossError(f"{where}: frames and words must start with [V, K] = [{n_videos}, {k}]")
    # A video with no valid clip or caption is padding (e.g. the last batch of a rank): drop it, so the
    # loss is the mean over real videos; with none left the loss is a graph-connected zero.
    real = (video_mask.sum(1) > 0) & (text_mask.sum(1) > 0)
    if not bool(real.all()):
        if not bool(real.any()):
            connected = video.sum() + text.sum()
            for extra in (frames, words):
                if extra is not None:
                    connected = connected + extra.sum()
            return connected * 0.0
        video, text, video_mask, text_mask = video[real], text[real], video_mask[real], text_mask[real]
        frames = frames[real] if frames is not None else None
        words = words[real] if words is not None else None
        frame_mask = frame_mask[real] if frame_mask is not None else None
        word_mask = word_mask[real] if word_mask is not None else None

    sim = fused_similarity(
        video, text, video_mask, text_mask, frames=frames, frame_mask=frame_mask,
        words=words, word_mask=word_mask, alpha=alpha, fine_weight=fine_weight, norm=norm,
    )
    to_paragraph, to_video = paragraph_logits(
        sim, video_mask, text_mask, scale, bucket_ratio=bucket_ratio, use_bucket=use_bucket, eps=eps,
        n_iters=n_iters,
    )
    return 0.5 * (row_cross_entropy(to_paragraph, 0) + row_cross_entropy(to_video, 0))


class ParagraphLoss(nn.Module):
    """`paragraph_loss` with its own logit scale (temperature tau = 1 / scale), stored as a log and
    initialised at log(1 / `init_temperature`).

    `learn_temperature=True` (default): the log scale is a registered parameter, so it reaches the
    optimizer with the rest of the model. The forward pass never clamps it (a clamp there would zero its
    gradient for good once it crossed a bound); call `clamp_parameters_()` after each optimizer step to keep
    tau in [0.01, 1], as CLIP trainers do. `learn_temperature=False`: the scale is a buffer fixed at
    1 / `init_temperature` (Norton's reference code never trains it: 1 / 0.07).
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        fine_weight: float = 1.0,
        bucket_ratio: float = 0.3,
        use_bucket: bool = True,
        eps: float = 0.1,
        n_iters: int = 50,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
        norm: str = "batch_minmax",
    ) -> None:
        super().__init__()
        if not 0 < init_temperature < math.inf:
            raise LossError(f"ParagraphLoss: init_temperature must be positive, got {init_temperature!r}")
        self.options = dict(
            alpha=alpha, fine_weight=fine_weight, bucket_ratio=bucket_ratio,
            use_bucket=use_bucket, eps=eps, n_iters=n_iters, norm=norm,
        )
        self.learn_temperature = bool(learn_temperature)
        log_scale = torch.tensor([math.log(1.0 / init_temperature)])  # [1]: see VideoTextModel
        if self.learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def logit_scale(self) -> Tensor:
        """exp(log_scale), unclamped (see `clamp_parameters_`)."""
        return self.log_scale.exp().squeeze(0)

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Clamp the learned log scale in place to [log 1, log 100] (tau in [0.01, 1]); call after each
        optimizer step. A no-op for a frozen temperature."""
        for param, low, high in self.temperature_bounds():
            param.clamp_(low, high)

    def temperature_bounds(self) -> list[tuple[nn.Parameter, float | None, float | None]]:
        """(parameter, lower, upper) of the learned log scale (none when frozen)."""
        if not self.learn_temperature:
            return []
        return [(self.log_scale, math.log(MIN_LOGIT_SCALE), math.log(MAX_LOGIT_SCALE))]

    def forward(
        self,
        video: Tensor,
        text: Tensor,
        *,
        video_mask: Optional[Tensor] = None,
        text_mask: Optional[Tensor] = None,
        frames: Optional[Tensor] = None,
        frame_mask: Optional[Tensor] = None,
        words: Optional[Tensor] = None,
        word_mask: Optional[Tensor] = None,
    ) -> Tensor:
        return paragraph_loss(
            video, text, self.logit_scale(), video_mask=video_mask, text_mask=text_mask,
            frames=frames, frame_mask=frame_mask, words=words, word_mask=word_mask, **self.options,
        )


def _blocks(x: Tensor, n_videos: int, k: int) -> Tensor:
    """`[V*K, V*K]` clip-caption matrix -> `[V, P, K, K]` blocks (video v, paragraph p)."""
    return rearrange(x, "(v i) (p j) -> v p i j", v=n_videos, i=k, p=n_videos, j=k)


def _pair_mask(video_mask: Tensor, text_mask: Tensor) -> Tensor:
    return video_mask[:, None, :, None] & text_mask[None, :, None, :]


def _fixed(x: Tensor, valid: Tensor) -> Tensor:
    """Cosine-like similarities from [-1, 1] to [0, 1], independent of the batch."""
    return (x + 1) / 2


def _min_max(x: Tensor, valid: Tensor) -> Tensor:
    """Rescale to [0, 1] using the valid entries' range (gradient flows through min and max)."""
    low = x.masked_fill(~valid, math.inf).amin()
    high = x.masked_fill(~valid, -math.inf).amax()
    return (x - low) / (high - low).clamp_min(torch.finfo(x.dtype).eps)


def _full_mask(mask: Optional[Tensor], like: Tensor) -> Tensor:
    return like.new_ones(like.shape[:2], dtype=torch.bool) if mask is None else mask

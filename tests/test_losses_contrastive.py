"""InfoNCE, rectification, hierarchical and caption losses against per-sample reference loops."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from videolang.config import LEVELS
from videolang.losses import (
    LossError,
    caption_loss,
    cross_level_info_nce,
    gather_pair,
    info_nce,
    level_info_nce,
    rectified_info_nce,
    rectified_targets,
)


def features(batch, dim=16, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    video = F.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=-1)
    text = F.normalize(video + 0.8 * torch.randn(batch, dim, generator=gen, dtype=dtype), dim=-1)
    return video.requires_grad_(), text.requires_grad_()


def reference_info_nce(video, text, scale, rows=None, targets=None):
    """Row-by-row symmetric cross-entropy over the samples in `rows` (all by default)."""
    rows = list(range(video.shape[0])) if rows is None else rows
    total = 0.0
    for query, keys, soft in ((video, text, None if targets is None else targets[0]),
                              (text, video, None if targets is None else targets[1])):
        for i in rows:
            logits = torch.stack([scale * query[i] @ keys[j] for j in rows])
            log_p = logits - torch.logsumexp(logits, 0)
            if soft is None:
                total = total - log_p[rows.index(i)]
            else:
                total = total - sum(soft[i][j] * log_p[k] for k, j in enumerate(rows))
    return total / (2 * len(rows))


def test_info_nce_matches_reference_loop_and_its_gradient():
    video, text = features(6)
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    ours = info_nce(video, text, scale)
    ref = reference_info_nce(video, text, scale)
    torch.testing.assert_close(ours, ref)
    grads = torch.autograd.grad(ours, (video, text, scale))
    ref_grads = torch.autograd.grad(ref, (video, text, scale))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_masked_samples_leave_rows_and_candidates():
    video, text = features(7, seed=1)
    mask = torch.tensor([True, False, True, True, False, True, True])
    ours = info_nce(video, text, 5.0, mask=mask)
    keep = mask.nonzero().flatten()
    torch.testing.assert_close(ours, info_nce(video[keep], text[keep], 5.0))
    (grad,) = torch.autograd.grad(ours, video)
    assert grad[~mask].abs().max() == 0


def test_nothing_valid_gives_zero_loss_and_finite_gradient():
    video, text = features(3)
    loss = info_nce(video, text, 5.0, mask=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0
    (grad,) = torch.autograd.grad(loss, video)
    assert torch.isfinite(grad).all()


def test_soft_targets_match_reference_loop():
    video, text = features(5, seed=2)
    gen = torch.Generator().manual_seed(3)
    t1 = torch.rand(5, 5, generator=gen, dtype=torch.float64).softmax(-1)
    t2 = torch.rand(5, 5, generator=gen, dtype=torch.float64).softmax(-1)
    ours = info_nce(video, text, 7.0, targets=(t1, t2))
    torch.testing.assert_close(ours, reference_info_nce(video, text, 7.0, targets=(t1, t2)))


def test_rectified_with_beta_zero_is_info_nce():
    video, text = features(6, seed=4)
    mask = torch.tensor([True, True, False, True, True, True])
    for m in (None, mask):
        torch.testing.assert_close(
            rectified_info_nce(video, text, 9.0, beta=0.0, mask=m), info_nce(video, text, 9.0, mask=m)
        )


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_rectified_targets_use_pots_plan():
    video, text = features(6, seed=5)
    scale, beta, eps = 8.0, 0.3, 1.0
    ours = rectified_info_nce(video, text, scale, beta=beta, eps=eps, n_iters=50)
    logits = (scale * video @ text.T).detach().numpy()
    uniform = np.full(6, 1 / 6)
    plan = ot.sinkhorn(uniform, uniform, -logits, eps, method="sinkhorn_log", numItermax=50, stopThr=0)
    plan = torch.from_numpy(plan)
    eye = torch.eye(6, dtype=torch.float64)
    v2t = beta * plan / plan.sum(1, keepdim=True) + (1 - beta) * eye
    t2v = beta * (plan / plan.sum(0, keepdim=True)).T + (1 - beta) * eye
    torch.testing.assert_close(ours, reference_info_nce(video, text, scale, targets=(v2t, t2v)))


def test_rectified_targets_share_mass_between_duplicated_pairs():
    # Clips 0 and 1 are the same and so are their captions: each caption is a faulty negative of the
    # other clip. The plan splits the rectified mass between the two; the other rows stay one-hot.
    gen = torch.Generator().manual_seed(6)
    video = F.normalize(torch.randn(6, 16, generator=gen, dtype=torch.float64), dim=-1)
    video[1] = video[0]
    text = F.normalize(video + 0.1 * torch.randn(6, 16, generator=gen, dtype=torch.float64), dim=-1)
    text[1] = text[0]
    pair = gather_pair(video, text)
    scale = torch.tensor(50.0, dtype=torch.float64)
    v2t, t2v = rectified_targets(pair, scale, 6, beta=0.3, eps=1.0, n_iters=50)
    for targets in (v2t, t2v):
        torch.testing.assert_close(targets.sum(1), torch.ones(6, dtype=torch.float64))
        torch.testing.assert_close(targets[0, 1], torch.tensor(0.15, dtype=torch.float64), atol=1e-3, rtol=0)
        torch.testing.assert_close(targets[1, 0], torch.tensor(0.15, dtype=torch.float64), atol=1e-3, rtol=0)
        assert targets[2:].diagonal(offset=2).min() > 0.99


def test_level_losses_equal_info_nce_within_each_level():
    video, text = features(9, seed=7)
    levels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 1])
    weights = {"phase": 1.0, "step": 0.5, "task": 0.0, "clip": 2.0}
    out = level_info_nce(video, text, 6.0, levels, weights)
    assert set(out) == {"level/phase", "level/step", "level/clip"}
    for name in ("phase", "step", "clip"):
        keep = (levels == LEVELS.index(name)).nonzero().flatten()
        torch.testing.assert_close(out[f"level/{name}"], info_nce(video[keep], text[keep], 6.0))


def test_level_losses_rejects_unknown_level():
    video, text = features(2)
    with pytest.raises(LossError, match="unknown level 'scene'"):
        level_info_nce(video, text, 1.0, torch.zeros(2, dtype=torch.long), {"scene": 1.0})


def test_cross_level_matches_reference_loop():
    video, text = features(8, seed=8)
    # samples 0 and 4 are parents; 1-3 are children of 0, 5-6 of 4; 7 has no parent and no children.
    parent = torch.tensor([-1, 0, 0, 0, -1, 4, 4, -1])
    ours = cross_level_info_nce(video, text, 5.0, parent)
    means = []
    for p in (0, 4):
        children = [i for i in range(8) if parent[i] == p]
        means.append(F.normalize(sum(text[i] for i in children) / len(children), dim=-1))
    ref = reference_info_nce(video[[0, 4]], torch.stack(means), 5.0)
    torch.testing.assert_close(ours, ref)


def test_cross_level_rejects_out_of_batch_parent():
    video, text = features(3)
    with pytest.raises(LossError, match=r"parent indices must be in \[-1, 2\]"):
        cross_level_info_nce(video, text, 1.0, torch.tensor([-1, 0, 3]))


def test_caption_loss_matches_reference_loop():
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 4, 6, -100, -100], [0, 2, 2, 3, -100]])
    smoothing = 0.1
    ours = caption_loss(logits, labels, label_smoothing=smoothing)
    terms = []
    for b in range(2):
        for t in range(5):
            if labels[b, t] == -100:
                continue
            log_p = logits[b, t].log_softmax(-1)
            terms.append((1 - smoothing) * -log_p[labels[b, t]] + smoothing * -log_p.mean())
    torch.testing.assert_close(ours.double(), torch.stack(terms).mean())


def test_caption_loss_without_targets_is_zero():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss = caption_loss(logits, torch.full((1, 3), -100))
    assert loss.item() == 0 and not math.isnan(loss.item())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda v, t: info_nce(v, t[:, :8], 1.0), "shapes must match"),
        (lambda v, t: info_nce(v[0], t[0], 1.0), "video must be a floating tensor with 2 dims"),
        (lambda v, t: info_nce(v, t, 1.0, mask=torch.ones(3)), "mask must be a bool tensor"),
        (lambda v, t: info_nce(v, t, torch.ones(2)), "logit_scale"),
        (lambda v, t: info_nce(v, t, 1.0, targets=(torch.ones(4, 4),)), "targets"),
        (lambda v, t: rectified_info_nce(v, t, 1.0, beta=1.5), "beta must be in"),
        (lambda v, t: caption_loss(torch.ones(2, 3, 5), torch.ones(2, 4).long()), "labels must be"),
    ],
)
def test_bad_input_raises_one_line_error(call, message):
    video, text = features(4)
    with pytest.raises(LossError, match=message):
        call(video, text)


def test_all_masked_batch_gives_zero_for_rectified_loss_too():
    from videolang.losses import rectified_info_nce

    video = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_(True)
    text = F.normalize(torch.randn(4, 8), dim=-1)
    none = torch.zeros(4, dtype=torch.bool)
    plain = info_nce(video, text, 10.0, mask=none)
    rect = rectified_info_nce(video, text, 10.0, beta=0.3, mask=none)
    rect.backward()
    assert plain.item() == 0.0 and rect.item() == 0.0 and torch.count_nonzero(video.grad) == 0

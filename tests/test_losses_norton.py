"""Norton pieces: soft-max similarity, prompt bucket, alignment plans and the video-paragraph loss."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from videolang.losses import (
    ParagraphLoss,
    alignment_plan,
    paragraph_loss,
    prompt_bucket_value,
    soft_max_similarity,
)

DT = torch.float64


def unit(*shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen, dtype=DT), dim=-1)


def random_mask(*shape, seed, keep_first=True):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=gen) < 0.7
    if keep_first:
        mask[..., 0] = True
    return mask


def reference_soft_max(frames, words, frame_mask, word_mask, alpha):
    """Pair by pair, token by token."""

    def soft(values):
        return alpha * math.log(sum(math.exp(x / alpha) for x in values))

    out = torch.zeros(frames.shape[0], words.shape[0], dtype=DT)
    for a in range(frames.shape[0]):
        for c in range(words.shape[0]):
            ts = [t for t in range(frames.shape[1]) if frame_mask[a, t]]
            ls = [l for l in range(words.shape[1]) if word_mask[c, l]]
            s = torch.tensor([[float(frames[a, t] @ words[c, l]) for l in ls] for t in ts], dtype=DT)
            w2f = sum(soft([s[i, j] for i in range(len(ts))]) for j in range(len(ls)))
            f2w = sum(soft([s[i, j] for j in range(len(ls))]) for i in range(len(ts)))
            out[a, c] = 0.5 * (w2f / len(ls) + f2w / len(ts))
    return out


@pytest.mark.parametrize("alpha", [1.0, 0.1])
def test_soft_max_similarity_matches_reference_loop(alpha):
    frames, words = unit(3, 5, 8, seed=0), unit(4, 6, 8, seed=1)
    fm, wm = random_mask(3, 5, seed=2), random_mask(4, 6, seed=3)
    ours = soft_max_similarity(frames, words, fm, wm, alpha=alpha)
    torch.testing.assert_close(ours, reference_soft_max(frames, words, fm, wm, alpha))


def test_soft_max_similarity_is_invariant_to_padding_length():
    frames, words = unit(3, 4, 8, seed=4), unit(2, 5, 8, seed=5)
    fm, wm = random_mask(3, 4, seed=6), random_mask(2, 5, seed=7)
    base = soft_max_similarity(frames, words, fm, wm)
    # Pad with large garbage vectors: they would dominate any unmasked max or mean.
    pad_f = 50 * torch.randn(3, 6, 8, dtype=DT)
    pad_w = 50 * torch.randn(2, 3, 8, dtype=DT)
    padded = soft_max_similarity(
        torch.cat([frames, pad_f], 1), torch.cat([words, pad_w], 1),
        torch.cat([fm, torch.zeros(3, 6, dtype=torch.bool)], 1),
        torch.cat([wm, torch.zeros(2, 3, dtype=torch.bool)], 1),
    )
    torch.testing.assert_close(padded, base, rtol=0, atol=1e-12)


def test_soft_max_similarity_of_an_empty_clip_is_zero_with_finite_gradient():
    frames = unit(2, 3, 4, seed=8).requires_grad_()
    words = unit(2, 3, 4, seed=9)
    fm = torch.tensor([[True, True, False], [False, False, False]])
    sim = soft_max_similarity(frames, words, fm, None)
    assert (sim[1] == 0).all()
    (grad,) = torch.autograd.grad(sim.sum(), frames)
    assert torch.isfinite(grad).all()


def test_prompt_bucket_value_is_the_kth_lowest_valid_aligned_similarity():
    gen = torch.Generator().manual_seed(10)
    sim = torch.rand(4, 4, 5, 5, generator=gen, dtype=DT)
    vm, tm = random_mask(4, 5, seed=11), random_mask(4, 5, seed=12)
    aligned = [float(sim[v, v, i, i]) for v in range(4) for i in range(5) if vm[v, i] and tm[v, i]]
    for ratio in (0.3, 0.05, 1.0):
        k = max(1, int(ratio * len(aligned)))
        expected = sorted(aligned)[k - 1]
        assert prompt_bucket_value(sim, vm, tm, ratio).item() == expected


def aligned_block(k, seed, irrelevant=None):
    """One (video, paragraph) similarity block: diagonal 0.9-1.0, off-diagonal 0-0.4; an irrelevant
    caption's column is 0-0.1 (it matches no clip)."""
    gen = torch.Generator().manual_seed(seed)
    sim = 0.4 * torch.rand(k, k, generator=gen, dtype=DT)
    sim.diagonal().copy_(0.9 + 0.1 * torch.rand(k, generator=gen, dtype=DT))
    if irrelevant is not None:
        sim[:, irrelevant] = 0.1 * torch.rand(k, generator=gen, dtype=DT)
    return sim[None, None]


def test_bucket_absorbs_an_irrelevant_caption():
    k, bad = 8, 5
    sim = aligned_block(k, seed=13, irrelevant=bad)
    mask = torch.ones(1, k, dtype=torch.bool)
    plan = alignment_plan(sim, mask, mask, torch.tensor(0.3, dtype=DT))[0, 0]
    column = plan[:, bad]
    assert column[:k].sum() / column.sum() < 0.05  # nearly all of it comes from the bucket row
    assert plan[bad, k] / plan[bad].sum() > 0.9  # its clip has nothing to match and goes to the bucket
    # Without a bucket the same caption must take its whole mass from real clips.
    no_bucket = alignment_plan(sim, mask, mask, None)[0, 0]
    torch.testing.assert_close(no_bucket[:, bad].sum(), torch.tensor(1 / k, dtype=DT), rtol=1e-2, atol=0)


def test_aligned_paragraph_keeps_its_mass_on_the_diagonal():
    k = 8
    sim = aligned_block(k, seed=14)
    mask = torch.ones(1, k, dtype=torch.bool)
    plan = alignment_plan(sim, mask, mask, torch.tensor(0.3, dtype=DT))[0, 0]
    real = plan[:k, :k]
    assert (real.argmax(1) == torch.arange(k)).all()
    assert real.diagonal().sum() / plan[:k].sum() > 0.85


def test_alignment_plan_marginals_and_padding():
    k = 6
    gen = torch.Generator().manual_seed(15)
    sim = torch.rand(2, 2, k, k, generator=gen, dtype=DT)
    vm = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    tm = torch.tensor([[True, True, True, True, False, False], [True] * 6])
    plan = alignment_plan(sim, vm, tm, torch.tensor(0.5, dtype=DT), n_iters=2000)
    for v in range(2):
        for p in range(2):
            m, n = int(vm[v].sum()), int(tm[p].sum())
            rows = torch.cat([vm[v].to(DT), torch.tensor([n], dtype=DT)]) / (m + n)
            cols = torch.cat([tm[p].to(DT), torch.tensor([m], dtype=DT)]) / (m + n)
            torch.testing.assert_close(plan[v, p].sum(1), rows)
            torch.testing.assert_close(plan[v, p].sum(0), cols, atol=1e-9, rtol=0)
    # Padded clips and captions get no mass; the rest is POT's plan of the unpadded 4 x 5 problem.
    assert plan[1, 0, 3:k, :].abs().max() == 0 and plan[1, 0, :, 4:k].abs().max() == 0
    block = np.full((4, 5), 0.5)
    block[:3, :4] = sim[1, 0, :3, :4].numpy()
    a, b = np.array([1, 1, 1, 4]) / 7, np.array([1, 1, 1, 1, 3]) / 7
    ref = ot.sinkhorn(a, b, -block, 0.1, method="sinkhorn_log", numItermax=2000, stopThr=0, warn=False)
    ours = plan[1, 0][[0, 1, 2, k]][:, [0, 1, 2, 3, k]]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)


def reference_paragraph_loss(video, text, vm, tm, scale, ratio=0.3, eps=0.1, iters=50):
    """Coarse-only paragraph loss, pair by pair with POT for every plan."""
    n_videos, k = vm.shape
    cos = torch.einsum("vid,pjd->vpij", F.normalize(video, dim=-1), F.normalize(text, dim=-1))
    valid = vm[:, None, :, None] & tm[None, :, None, :]
    values = cos[valid]
    sim = (cos - values.min()) / (values.max() - values.min())
    aligned = sorted(
        float(sim[v, v, i, i]) for v in range(n_videos) for i in range(k) if vm[v, i] and tm[v, i]
    )
    bucket = aligned[max(1, int(ratio * len(aligned))) - 1]
    logits = torch.zeros(n_videos, n_videos, dtype=DT)
    for v in range(n_videos):
        for p in range(n_videos):
            rows = [i for i in range(k) if vm[v, i]]
            cols = [j for j in range(k) if tm[p, j]]
            m, n = len(rows), len(cols)
            block = np.full((m + 1, n + 1), bucket)
            block[:m, :n] = sim[v, p][rows][:, cols].detach().numpy()
            a = np.array([1.0] * m + [n]) / (m + n)
            b = np.array([1.0] * n + [m]) / (m + n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                plan = ot.sinkhorn(a, b, -block, eps, method="sinkhorn_log", numItermax=iters, stopThr=0)
            transport = torch.from_numpy(plan[:m, :n]) * (m + n) / 2
            logits[v, p] = scale * (transport * sim[v, p][rows][:, cols]).sum()
    labels = torch.arange(n_videos)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def test_paragraph_loss_matches_reference():
    video, text = unit(3, 5, 8, seed=16), unit(3, 5, 8, seed=17)
    text = F.normalize(video + 0.7 * text, dim=-1)
    vm, tm = random_mask(3, 5, seed=18), random_mask(3, 5, seed=19)
    ours = paragraph_loss(video, text, 10.0, video_mask=vm, text_mask=tm, fine_weight=0.0)
    torch.testing.assert_close(ours, reference_paragraph_loss(video, text, vm, tm, 10.0))


def test_paragraph_loss_is_invariant_to_padded_clips():
    v, k, t, l, d = 3, 4, 3, 5, 8
    video, text = unit(v, k, d, seed=20), unit(v, k, d, seed=21)
    frames, words = unit(v, k, t, d, seed=22), unit(v, k, l, d, seed=23)
    fm, wm = random_mask(v, k, t, seed=24), random_mask(v, k, l, seed=25)
    mask = torch.ones(v, k, dtype=torch.bool)
    base = paragraph_loss(
        video, text, 10.0, video_mask=mask, text_mask=mask,
        frames=frames, frame_mask=fm, words=words, word_mask=wm,
    )

    def pad(x, extra=2):
        return torch.cat([x, 30 * torch.randn(x.shape[0], extra, *x.shape[2:], dtype=x.dtype)], 1)

    def pad_mask(x, extra=2):
        return torch.cat([x, torch.zeros(x.shape[0], extra, *x.shape[2:], dtype=torch.bool)], 1)

    padded = paragraph_loss(
        pad(video), pad(text), 10.0, video_mask=pad_mask(mask), text_mask=pad_mask(mask),
        frames=pad(frames), frame_mask=pad_mask(fm), words=pad(words), word_mask=pad_mask(wm),
    )
    torch.testing.assert_close(padded, base)


def test_paragraph_loss_prefers_matching_paragraphs():
    video = unit(4, 6, 16, seed=26)
    text = F.normalize(video + 0.3 * unit(4, 6, 16, seed=27), dim=-1)
    matched = paragraph_loss(video, text, 10.0, fine_weight=0.0)
    shuffled = paragraph_loss(video, text[[1, 2, 3, 0]], 10.0, fine_weight=0.0)
    assert matched < shuffled


def test_paragraph_logit_scale_is_a_trained_clamped_parameter():
    module = ParagraphLoss(fine_weight=0.0)
    assert [name for name, _ in module.named_parameters()] == ["log_scale"]
    torch.testing.assert_close(module.logit_scale().item(), 1 / 0.07)
    video = unit(3, 4, 8, seed=28).float()
    loss = module(video, F.normalize(video + 0.5 * unit(3, 4, 8, seed=29).float(), dim=-1))
    loss.backward()
    assert module.log_scale.grad is not None and module.log_scale.grad.abs() > 0
    with torch.no_grad():
        module.log_scale.fill_(10.0)
        assert module.logit_scale().item() == pytest.approx(100.0)  # tau = 0.01
        module.log_scale.fill_(-3.0)
        assert module.logit_scale().item() == pytest.approx(1.0)  # tau = 1


def test_a_fully_padded_video_is_dropped_like_padding():
    """Padding a rank's batch with a whole empty video changes nothing; an all-padding batch gives 0."""
    video = unit(3, 3, 4, seed=30)
    text = F.normalize(video + 0.3 * unit(3, 3, 4, seed=31), dim=-1)
    real = paragraph_loss(video[:2], text[:2], 10.0, fine_weight=0.0)
    mask = torch.tensor([[True, True, True], [True, True, False], [False, False, False]])
    padded = paragraph_loss(video, text, 10.0, video_mask=mask, text_mask=mask, fine_weight=0.0)
    expected = paragraph_loss(video[:2], text[:2], 10.0, video_mask=mask[:2], text_mask=mask[:2], fine_weight=0.0)
    torch.testing.assert_close(padded, expected)
    assert not torch.equal(real, padded)  # the partial mask of video 1 still matters
    v = video.clone().requires_grad_(True)
    zero = paragraph_loss(v, text, 10.0, video_mask=torch.zeros(3, 3, dtype=torch.bool), fine_weight=0.0)
    zero.backward()
    assert zero.item() == 0.0 and torch.count_nonzero(v.grad) == 0

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
    fused_similarity,
    paragraph_logits,
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


# --- References written from Norton's published definitions (docs/losses.md, "Video-paragraph contrast"),
# entry by entry, with POT for every transport plan. They share no code with videolang.losses.


def reference_soft_max_directions(frames, words, frame_mask, word_mask, alpha):
    """(word->frames, frame->words), each [A, C]: per word, the soft maximum over the clip's valid frames,
    averaged over the caption's valid words; and the same with frames and words swapped."""

    def soft(values):
        return alpha * math.log(sum(math.exp(x / alpha) for x in values))

    w2f = torch.zeros(frames.shape[0], words.shape[0], dtype=DT)
    f2w = torch.zeros_like(w2f)
    for a in range(frames.shape[0]):
        for c in range(words.shape[0]):
            ts = [t for t in range(frames.shape[1]) if frame_mask[a, t]]
            ls = [l for l in range(words.shape[1]) if word_mask[c, l]]
            x, w = F.normalize(frames[a], dim=-1), F.normalize(words[c], dim=-1)
            s = [[float(x[t] @ w[l]) for l in ls] for t in ts]
            w2f[a, c] = sum(soft([s[i][j] for i in range(len(ts))]) for j in range(len(ls))) / len(ls)
            f2w[a, c] = sum(soft([s[i][j] for j in range(len(ls))]) for i in range(len(ts))) / len(ts)
    return w2f, f2w


def reference_fused_similarity(video, text, vm, tm, frames=None, fm=None, words=None, wm=None, alpha=1.0):
    """S[v, p, i, j] for valid clip i of video v and valid caption j of paragraph p (0 elsewhere):
    coarse = min-max normalised cosine; fine = the average of the two soft-max directions, each min-max
    normalised on its own; S = (0.5 * coarse + fine) / 1.5 (coarse alone without frames and words).
    Every min-max runs over the valid entries of the whole batch."""
    n_videos, k = vm.shape
    keys = [
        (v, p, i, j)
        for v in range(n_videos) for p in range(n_videos) for i in range(k) for j in range(k)
        if vm[v, i] and tm[p, j]
    ]

    def min_max(values):
        low, high = min(values.values()), max(values.values())
        return {key: (x - low) / (high - low) for key, x in values.items()}

    coarse = min_max({
        (v, p, i, j): float(F.normalize(video[v, i], dim=0) @ F.normalize(text[p, j], dim=0))
        for v, p, i, j in keys
    })
    if frames is None:
        fused = coarse
    else:
        w2f, f2w = reference_soft_max_directions(
            frames.flatten(0, 1), words.flatten(0, 1), fm.flatten(0, 1), wm.flatten(0, 1), alpha
        )
        w2f = min_max({(v, p, i, j): float(w2f[v * k + i, p * k + j]) for v, p, i, j in keys})
        f2w = min_max({(v, p, i, j): float(f2w[v * k + i, p * k + j]) for v, p, i, j in keys})
        fused = {key: (0.5 * coarse[key] + 0.5 * (w2f[key] + f2w[key])) / 1.5 for key in keys}
    out = torch.zeros(n_videos, n_videos, k, k, dtype=DT)
    for key, x in fused.items():
        out[key] = x
    return out


def reference_paragraph_logits(sim, vm, tm, scale, ratio=0.3, eps=0.1, iters=50):
    """Paragraph logits from the fused similarity, pair by pair: (video -> paragraph [V, P],
    paragraph -> video [P, V]).

    Bucket value z: the k-th lowest aligned S[v, v, i, i] over valid pairs, k = max(1, floor(ratio * n)).
    Per (video v, paragraph p) with m valid clips and n valid captions: the (m+1) x (n+1) score matrix with
    z in the bucket row and column, marginals 1/(m+n) per clip / caption, n/(m+n) and m/(m+n) for the
    buckets, Sinkhorn maximising sum(T * S) at entropy eps (POT, `iters` iterations). The plan is multiplied
    by (m + n), the bucket row and column are dropped, and the real block is rescaled to total mass M:
    Norton's M = K (mass 1 per aligned clip); with padding, the query's number of real clips (m for the
    video -> paragraph softmax, n for paragraph -> video). logit = scale * sum(T * S).
    """
    n_videos, k = vm.shape
    aligned = sorted(
        float(sim[v, v, i, i]) for v in range(n_videos) for i in range(k) if vm[v, i] and tm[v, i]
    )
    bucket = aligned[max(1, int(ratio * len(aligned))) - 1]
    to_paragraph = torch.zeros(n_videos, n_videos, dtype=DT)
    to_video = torch.zeros(n_videos, n_videos, dtype=DT)
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
            real = torch.from_numpy(plan[:m, :n] * (m + n))
            s = sim[v, p][rows][:, cols]
            to_paragraph[v, p] = scale * float((real * (m / real.sum()) * s).sum())
            to_video[p, v] = scale * float((real * (n / real.sum()) * s).sum())
    return to_paragraph, to_video


def reference_paragraph_loss(video, text, vm, tm, scale, **kwargs):
    """Symmetric cross-entropy over the videos (mean of the two directions)."""
    frames = {key: kwargs.pop(key) for key in ("frames", "fm", "words", "wm") if key in kwargs}
    sim = reference_fused_similarity(video, text, vm, tm, **frames)
    to_paragraph, to_video = reference_paragraph_logits(sim, vm, tm, scale, **kwargs)
    labels = torch.arange(vm.shape[0])
    return 0.5 * (F.cross_entropy(to_paragraph, labels) + F.cross_entropy(to_video, labels))


def test_fused_similarity_matches_reference():
    v, k, t, l, d = 3, 4, 3, 5, 8
    video, text = unit(v, k, d, seed=40), unit(v, k, d, seed=41)
    frames, words = unit(v, k, t, d, seed=42), unit(v, k, l, d, seed=43)
    fm, wm = random_mask(v, k, t, seed=44), random_mask(v, k, l, seed=45)
    vm, tm = random_mask(v, k, seed=46), random_mask(v, k, seed=47)
    ours = fused_similarity(video, text, vm, tm, frames=frames, frame_mask=fm, words=words, word_mask=wm)
    expected = reference_fused_similarity(video, text, vm, tm, frames, fm, words, wm)
    valid = vm[:, None, :, None] & tm[None, :, None, :]
    torch.testing.assert_close(ours[valid], expected[valid])
    coarse = fused_similarity(video, text, vm, tm)
    torch.testing.assert_close(coarse[valid], reference_fused_similarity(video, text, vm, tm)[valid])


@pytest.mark.parametrize("fine", [False, True])
def test_paragraph_loss_matches_reference(fine):
    v, k, t, l, d = 3, 5, 3, 4, 8
    video, text = unit(v, k, d, seed=16), unit(v, k, d, seed=17)
    text = F.normalize(video + 0.7 * text, dim=-1)
    vm, tm = random_mask(v, k, seed=18), random_mask(v, k, seed=19)
    extra, ref_extra = {}, {}
    if fine:
        frames, words = unit(v, k, t, d, seed=48), unit(v, k, l, d, seed=49)
        fm, wm = random_mask(v, k, t, seed=50), random_mask(v, k, l, seed=51)
        extra = dict(frames=frames, frame_mask=fm, words=words, word_mask=wm)
        ref_extra = dict(frames=frames, fm=fm, words=words, wm=wm)
    ours = paragraph_loss(video, text, 10.0, video_mask=vm, text_mask=tm, fine_weight=float(fine), **extra)
    torch.testing.assert_close(ours, reference_paragraph_loss(video, text, vm, tm, 10.0, **ref_extra))


@pytest.mark.parametrize("k", [4, 8])
def test_perfectly_aligned_paragraphs_reach_mass_k(k):
    """Clip i of video v and caption i of paragraph v share one direction, orthogonal to every other: the
    fused similarity is 1 on the aligned pairs and 0 elsewhere. Each paragraph's plan must then carry mass
    1 per clip on its diagonal, so its logit is scale * K and every other logit is 0."""
    n_videos, scale = 3, 1.0
    video = torch.eye(n_videos * k, dtype=DT).view(n_videos, k, -1)
    loss = paragraph_loss(video, video.clone(), scale, fine_weight=0.0)
    # Every row is (L on the diagonal, 0 elsewhere): loss = log(1 + (V - 1) exp(-L)); solve for L.
    aligned_logit = -math.log(math.expm1(loss.item()) / (n_videos - 1))
    # Off-diagonal entries keep a plan weight ~exp(-1 / eps) each, so L falls short of K by ~K^2 e^-10.
    assert aligned_logit == pytest.approx(scale * k, rel=1e-3)


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


def test_paragraph_logits_match_reference_with_padding():
    gen = torch.Generator().manual_seed(52)
    sim = torch.rand(3, 3, 5, 5, generator=gen, dtype=DT)
    vm, tm = random_mask(3, 5, seed=53), random_mask(3, 5, seed=54)
    ours = paragraph_logits(sim, vm, tm, 7.0)
    for got, expected in zip(ours, reference_paragraph_logits(sim, vm, tm, 7.0)):
        torch.testing.assert_close(got, expected)


def test_paragraph_logits_carry_the_query_s_number_of_real_clips():
    """With S = 1 on every real entry, a logit is scale * (the plan's mass): K for a full paragraph, else
    the real clips of the softmax's query (video for video -> paragraph, paragraph for the other way)."""
    vm = torch.tensor([[True] * 6, [True, True, True, False, False, False], [True] * 4 + [False] * 2])
    tm = torch.tensor([[True] * 5 + [False], [True] * 6, [True, True, False, False, False, False]])
    sim = torch.ones(3, 3, 6, 6, dtype=DT)
    to_paragraph, to_video = paragraph_logits(sim, vm, tm, 2.0)
    m, n = vm.sum(1).to(DT), tm.sum(1).to(DT)
    torch.testing.assert_close(to_paragraph, 2.0 * m[:, None].expand(3, 3))
    torch.testing.assert_close(to_video, 2.0 * n[:, None].expand(3, 3))
    full = torch.ones(3, 6, dtype=torch.bool)
    to_paragraph, to_video = paragraph_logits(torch.rand(3, 3, 6, 6, dtype=DT), full, full, 1.0)
    torch.testing.assert_close(to_video, to_paragraph.T)


def test_paragraph_logit_scale_is_trained_and_clamped_only_after_the_step():
    module = ParagraphLoss(fine_weight=0.0)
    assert [name for name, _ in module.named_parameters()] == ["log_scale"]
    torch.testing.assert_close(module.logit_scale().item(), 1 / 0.07)
    module = module.double()
    video, text = unit(3, 4, 8, seed=28), unit(3, 4, 8, seed=29)
    module(video, text).backward()
    assert module.log_scale.grad is not None and module.log_scale.grad.abs() > 0
    # Past the bound the forward pass does not clamp: the gradient still flows and can bring it back.
    with torch.no_grad():
        module.log_scale.fill_(5.0)
    module.log_scale.grad = None
    assert module.logit_scale().item() == pytest.approx(math.exp(5.0))
    module(video, text).backward()
    assert module.log_scale.grad.abs() > 0
    module.clamp_parameters_()
    assert module.logit_scale().item() == pytest.approx(100.0)  # tau = 0.01
    with torch.no_grad():
        module.log_scale.fill_(-3.0)
    module.clamp_parameters_()
    assert module.logit_scale().item() == pytest.approx(1.0)  # tau = 1
    assert module.log_scale.requires_grad


def test_frozen_paragraph_temperature_is_a_buffer_at_0_07():
    module = ParagraphLoss(fine_weight=0.0, learn_temperature=False)
    assert list(module.parameters()) == []
    assert [name for name, _ in module.named_buffers()] == ["log_scale"]
    assert "log_scale" in module.state_dict()
    torch.testing.assert_close(module.logit_scale().item(), 1 / 0.07)
    video = unit(3, 4, 8, seed=28).float().requires_grad_()
    loss = module(video, F.normalize(video.detach() + 0.5 * unit(3, 4, 8, seed=29).float(), dim=-1))
    loss.backward()
    assert video.grad is not None
    module.clamp_parameters_()
    torch.testing.assert_close(module.logit_scale().item(), 1 / 0.07)


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


def test_fixed_norm_maps_cosines_without_batch_statistics():
    from videolang.losses import LossError, fused_similarity

    gen = torch.Generator().manual_seed(3)
    video, text = torch.randn(3, 4, 8, generator=gen), torch.randn(3, 4, 8, generator=gen)
    mask = torch.ones(3, 4, dtype=torch.bool)
    sim = fused_similarity(video, text, mask, mask, fine_weight=0.0, norm="fixed")
    v, t = torch.nn.functional.normalize(video, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    for a in range(3):
        for b in range(3):
            torch.testing.assert_close(sim[a, b], (v[a] @ t[b].T + 1) / 2)
    # No batch statistics: a pair scores the same whatever else is in the batch.
    alone = fused_similarity(video[:1], text[:1], mask[:1], mask[:1], fine_weight=0.0, norm="fixed")
    torch.testing.assert_close(alone[0, 0], sim[0, 0])
    with pytest.raises(LossError, match="norm must be one of"):
        fused_similarity(video, text, mask, mask, norm="zscore")

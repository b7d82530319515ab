"""Retrieval ranks and metrics against a brute-force double loop, with ties, duplicates and chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolang.eval import (
    MetricInputError,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_ranks,
    retrieval_ranks_from_embeddings,
    summarize_ranks,
)

CHUNKS = (1, 2, 3, 7, 64)


def brute_force_ranks(sim: list[list[float]], matches: list[tuple[int, int]]) -> list[int]:
    """Rank of each query's best match: 1 + non-matching candidates scoring at least as high."""
    ranks = []
    for i, row in enumerate(sim):
        mine = {j for q, j in matches if q == i}
        best = max(row[j] for j in mine)
        ranks.append(1 + sum(1 for j, s in enumerate(row) if j not in mine and s >= best))
    return ranks


def dual_softmax_reference(sim: list[list[float]], scale: float) -> list[list[float]]:
    """s * softmax over queries of scale * s, one candidate column at a time."""
    nq, nc = len(sim), len(sim[0])
    out = [[0.0] * nc for _ in range(nq)]
    for j in range(nc):
        top = max(scale * sim[i][j] for i in range(nq))
        weights = [np.exp(scale * sim[i][j] - top) for i in range(nq)]
        total = sum(weights)
        for i in range(nq):
            out[i][j] = sim[i][j] * weights[i] / total
    return out


def tied_scores(nq: int, nc: int, seed: int) -> torch.Tensor:
    """Scores from a handful of values, so most rows hold ties with their match."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (nq, nc), generator=g).float()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_square_ranks_with_ties_match_brute_force(seed, chunk_size):
    sim = tied_scores(23, 23, seed)
    expected = brute_force_ranks(sim.tolist(), [(i, i) for i in range(23)])
    assert retrieval_ranks(sim, chunk_size=chunk_size).tolist() == expected


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_several_queries_per_target(seed, chunk_size):
    # Text -> video with several captions per video: each caption has exactly one matching video.
    g = torch.Generator().manual_seed(100 + seed)
    sim = tied_scores(31, 11, seed)
    target = torch.randint(0, 11, (31,), generator=g)
    expected = brute_force_ranks(sim.tolist(), [(i, int(t)) for i, t in enumerate(target)])
    assert retrieval_ranks(sim, query_to_target=target, chunk_size=chunk_size).tolist() == expected


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_several_candidates_per_query(seed, chunk_size):
    # Video -> text with several captions per video: the best-ranked caption of the video counts.
    g = torch.Generator().manual_seed(200 + seed)
    owner = torch.cat([torch.arange(9), torch.randint(0, 9, (20,), generator=g)])
    owner = owner[torch.randperm(29, generator=g)]
    sim = tied_scores(9, 29, seed)
    expected = brute_force_ranks(sim.tolist(), [(int(q), j) for j, q in enumerate(owner)])
    assert retrieval_ranks(sim, candidate_to_query=owner, chunk_size=chunk_size).tolist() == expected


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_embeddings_match_brute_force_on_exact_scores(seed, chunk_size):
    # Small integer entries make every dot product exact in float32, so ties are real ties.
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-2, 3, (27, 6), generator=g).float()
    c = torch.randint(-2, 3, (27, 6), generator=g).float()
    exact = [[sum(a * b for a, b in zip(qi, cj)) for cj in c.tolist()] for qi in q.tolist()]
    expected = brute_force_ranks(exact, [(i, i) for i in range(27)])
    assert retrieval_ranks_from_embeddings(q, c, chunk_size=chunk_size).tolist() == expected
    target = torch.randint(0, 27, (27,), generator=g)
    expected = brute_force_ranks(exact, [(i, int(t)) for i, t in enumerate(target)])
    got = retrieval_ranks_from_embeddings(q, c, query_to_target=target, chunk_size=chunk_size)
    assert got.tolist() == expected


@pytest.mark.parametrize("chunk_size", (5, 16, 100, 512))
def test_chunked_embeddings_equal_dense_matrix(chunk_size):
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=1)
    c = torch.nn.functional.normalize(q + 0.8 * torch.randn(300, 32, generator=g), dim=1)
    dense = retrieval_ranks(q @ c.T, chunk_size=300)
    chunked = retrieval_ranks_from_embeddings(q, c, chunk_size=chunk_size)
    # Block products may round differently from one full product; only near-exact ties could differ.
    assert (chunked - dense).abs().max() <= 1
    assert (chunked != dense).float().mean() < 0.01
    assert torch.equal(retrieval_ranks(q @ c.T, chunk_size=chunk_size), dense)


@pytest.mark.parametrize("chunk_size", (1, 3, 7, 50, 1000))
def test_duplicate_of_the_match_always_ties(chunk_size):
    # A candidate identical to the match must count as ranked ahead, whatever kernels the blocks use.
    g = torch.Generator().manual_seed(1)
    q = torch.randn(120, 48, generator=g)
    c = torch.randn(120, 48, generator=g)
    c[60:] = c[:60]
    ranks = retrieval_ranks_from_embeddings(q, c, chunk_size=chunk_size)
    assert (ranks >= 2).all()
    ranks = retrieval_ranks_from_embeddings(q, c, chunk_size=chunk_size, dual_softmax=True, dual_softmax_scale=3.0)
    assert (ranks >= 2).all()


def exact_scores(q: torch.Tensor, c: torch.Tensor) -> list[list[float]]:
    """Dot products in float64, pair by pair in one fixed order: identical vectors score identically."""
    cq, cc = q.double().tolist(), c.double().tolist()
    return [[float(sum(a * b for a, b in zip(qi, cj))) for cj in cc] for qi in cq]


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_identical_candidates_count_once_each_and_tie(chunk_size):
    g = torch.Generator().manual_seed(7)
    q = torch.randn(50, 16, generator=g)
    c = torch.randn(80, 16, generator=g)
    c[50:] = c[[3, 3, 3, 10, 11, 20, 20, 49, 0, 1] * 3]  # duplicates of matches, several of some
    exact = exact_scores(q, c)
    # No two distinct candidates come within 1e-4 of a match's exact score, so float32 rounding cannot
    # reorder them on any machine; identical ones tie exactly.
    for i, row in enumerate(exact):
        gaps = [abs(s - row[i]) for j, s in enumerate(row) if j != i and not torch.equal(c[j], c[i])]
        assert min(gaps) > 1e-4
    target = torch.arange(50)
    expected = brute_force_ranks(exact, [(i, i) for i in range(50)])
    got = retrieval_ranks_from_embeddings(q, c, query_to_target=target, chunk_size=chunk_size)
    assert got.tolist() == expected
    # Video -> text with duplicate captions: candidate j belongs to query owner[j].
    owner = torch.cat([torch.arange(50), torch.randint(0, 50, (30,), generator=g)])
    expected = brute_force_ranks(exact, [(int(o), j) for j, o in enumerate(owner)])
    got = retrieval_ranks_from_embeddings(q, c, candidate_to_query=owner, chunk_size=chunk_size)
    assert got.tolist() == expected


def test_signed_zeros_are_the_same_embedding():
    q = torch.tensor([[1.0, 0.5, 0.0], [0.3, 1.0, 0.2]])
    c = torch.tensor([[1.0, 0.5, 0.0], [0.3, 1.0, 0.2], [1.0, 0.5, -0.0]])
    ranks = retrieval_ranks_from_embeddings(q, c, query_to_target=torch.tensor([0, 1]), chunk_size=1)
    assert ranks.tolist() == [2, 1]  # candidate 2 equals candidate 0 in value: a tie, counted ahead


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_dual_softmax_of_a_matrix_ties_identical_columns(chunk_size):
    g = torch.Generator().manual_seed(2)
    sim = torch.randn(120, 120, generator=g)
    sim[:, 60:] = sim[:, :60]
    ranks = retrieval_ranks(sim, chunk_size=chunk_size, dual_softmax=True, dual_softmax_scale=3.0)
    assert (ranks[:60] >= 2).all()
    plain = retrieval_ranks(sim, chunk_size=chunk_size)  # given scores: compared exactly as given
    assert plain.tolist() == brute_force_ranks(sim.tolist(), [(i, i) for i in range(120)])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_counts_are_exact_above_256(dtype):
    # Small integers: every score is exact in any dtype and kernel, and most candidates tie.
    g = torch.Generator().manual_seed(3)
    q = torch.randint(-1, 2, (600, 3), generator=g).float()
    c = torch.randint(-1, 2, (600, 3), generator=g).float()
    expected = brute_force_ranks(exact_scores(q, c), [(i, i) for i in range(600)])
    assert max(expected) > 300
    # Two more coordinates make every candidate distinct (no merged columns) without changing a score.
    ids = torch.stack(torch.meshgrid(torch.arange(25.0), torch.arange(25.0), indexing="ij"), -1).view(-1, 2)
    q_ext, c_ext = torch.cat([q, torch.zeros(600, 2)], 1), torch.cat([c, ids[:600] - 12], 1)
    for chunk_size in (600, 7):
        for qq, cc in ((q, c), (q_ext, c_ext)):
            got = retrieval_ranks_from_embeddings(qq.to(dtype), cc.to(dtype), chunk_size=chunk_size)
            assert got.tolist() == expected


def test_constant_scores_rank_every_match_last():
    metrics = retrieval_metrics(torch.zeros(12, 12))
    assert metrics["R@1"] == metrics["R@10"] == 0.0
    assert metrics["MdR"] == metrics["MnR"] == 12.0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk_size", (1, 4, 64))
def test_dual_softmax_matches_reference(seed, chunk_size):
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(17, 17, generator=g, dtype=torch.float64)
    expected = brute_force_ranks(dual_softmax_reference(sim.tolist(), 5.0), [(i, i) for i in range(17)])
    got = retrieval_ranks(sim, chunk_size=chunk_size, dual_softmax=True, dual_softmax_scale=5.0)
    assert got.tolist() == expected
    q, c = torch.randn(17, 8, generator=g, dtype=torch.float64), torch.randn(13, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 13, (17,), generator=g)
    rescored = dual_softmax_reference((q @ c.T).tolist(), 2.0)
    expected = brute_force_ranks(rescored, [(i, int(t)) for i, t in enumerate(target)])
    # Our blocks are other products than this one matrix: make sure no near-tie could flip a rank.
    # (Relative gaps: re-scored values span many orders of magnitude, each with a small relative error.)
    for row, t in zip(rescored, target):
        match = row[int(t)]
        assert all(abs(s - match) > 1e-9 * max(abs(s), abs(match)) for s in row if s != match)
    got = retrieval_ranks_from_embeddings(
        q, c, query_to_target=target, chunk_size=chunk_size, dual_softmax=True, dual_softmax_scale=2.0
    )
    assert got.tolist() == expected


def test_dual_softmax_is_labelled():
    sim = tied_scores(8, 8, 0)
    assert retrieval_metrics(sim)["dual_softmax"] is False
    assert retrieval_metrics(sim, dual_softmax=True)["dual_softmax"] is True
    assert retrieval_metrics_from_embeddings(torch.eye(4), torch.eye(4), dual_softmax=True)["dual_softmax"] is True


@pytest.mark.parametrize("n", (1, 2, 7, 10))
def test_summary_matches_numpy(n):
    ranks = torch.randint(1, 15, (n,), generator=torch.Generator().manual_seed(n))
    metrics = summarize_ranks(ranks)
    r = ranks.numpy()
    for k in (1, 5, 10):
        assert metrics[f"R@{k}"] == pytest.approx(100.0 * np.mean(r <= k))
    assert metrics["MdR"] == pytest.approx(np.median(r))
    assert metrics["MnR"] == pytest.approx(np.mean(r))
    assert set(metrics) == {"R@1", "R@5", "R@10", "MdR", "MnR", "dual_softmax"}


def test_metrics_are_the_summary_of_the_ranks():
    sim = tied_scores(40, 40, 3)
    assert retrieval_metrics(sim, chunk_size=9) == summarize_ranks(retrieval_ranks(sim))
    q, c = sim[:, :5], sim[:, 5:10]
    assert retrieval_metrics_from_embeddings(q, c) == summarize_ranks(retrieval_ranks(q @ c.T))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(sim=torch.zeros(3)), "sim"),
        (dict(sim=torch.zeros(0, 0)), "sim"),
        (dict(sim=torch.zeros(3, 4)), "candidate"),
        (dict(sim=torch.zeros(3, 3, dtype=torch.long)), "sim"),
        (dict(sim=torch.tensor([[0.0, float("nan")], [0.0, 0.0]])), "sim"),
        (dict(sim=torch.zeros(3, 4), query_to_target=torch.tensor([0, 1])), "query_to_target"),
        (dict(sim=torch.zeros(3, 4), query_to_target=torch.tensor([0, 1, 4])), "query_to_target"),
        (dict(sim=torch.zeros(3, 4), query_to_target=torch.tensor([0.0, 1.0, 2.0])), "query_to_target"),
        (dict(sim=torch.zeros(2, 3), candidate_to_query=torch.tensor([0, 0, 0])), "candidate_to_query"),
        (dict(sim=torch.zeros(2, 3), candidate_to_query=torch.tensor([0, 1, 2])), "candidate_to_query"),
        (dict(sim=torch.zeros(2, 2), query_to_target=torch.arange(2), candidate_to_query=torch.arange(2)), "not both"),
        (dict(sim=torch.zeros(2, 2), chunk_size=0), "chunk_size"),
        (dict(sim=torch.zeros(2, 2), dual_softmax=True, dual_softmax_scale=-1.0), "dual_softmax_scale"),
    ],
)
def test_bad_scores_raise_one_line_errors(kwargs, field):
    sim = kwargs.pop("sim")
    with pytest.raises(MetricInputError, match=field) as info:
        retrieval_metrics(sim, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "q, c, field",
    [
        (torch.zeros(3, 4), torch.zeros(3, 5), "dim"),
        (torch.zeros(3), torch.zeros(3, 4), "queries"),
        (torch.zeros(3, 4), torch.zeros(0, 4), "candidates"),
        (torch.full((2, 2), float("inf")), torch.zeros(2, 2), "queries"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2), "queries"),
    ],
)
def test_bad_embeddings_raise(q, c, field):
    with pytest.raises(MetricInputError, match=field):
        retrieval_metrics_from_embeddings(q, c)


def test_summary_rejects_bad_ranks():
    for ranks in (torch.tensor([0, 1]), torch.tensor([1.0]), torch.zeros(0, dtype=torch.long)):
        with pytest.raises(MetricInputError, match="ranks"):
            summarize_ranks(ranks)

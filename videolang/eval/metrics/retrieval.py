"""Retrieval metrics (R@K, median and mean rank) without sorting and without an N x N matrix.

The rank of a query's match is 1 + the number of non-matching candidates that score at least as high:
a candidate tied with the match counts as ranked ahead of it, so ties never flatter a model (the
sort-and-compare code of CLIP4Clip / MMPT records every tied position as a hit). A rank needs only the
match's score and one count per query, so scores are produced in blocks of `chunk_size` queries x
`chunk_size` candidates, compared in place with the match scores and dropped: memory stays at one block
(64 MB at the default 4096, float32) whatever the corpus size, and no sort or top-k heap is needed,
which is what an exact FAISS search spends its time on beyond the matrix product.

Ties do not depend on the matrix-product kernel. A candidate whose embedding is identical to the match's
scores exactly what the match scores in exact arithmetic, but a product computed in another block (or at
another position of the same block) may round it a few ulps differently: ragged blocks, edge tiles and
different CPUs take different BLAS code paths. So bitwise-identical candidate embeddings (-0.0 read as
+0.0) are found first, by hashing their bits (an O(N d) pass, verified entry by entry) and scored once:
each distinct embedding is one column, counted with its multiplicity. Identical candidates therefore always
tie with each other and with the match, on every machine. Distinct embeddings are compared through their
computed scores; two of them whose exact scores differ by less than the rounding of a dot product may
still be ordered either way (as in any floating-point retrieval). A given score matrix is compared exactly
as given; with `dual_softmax`, whose re-scoring is computed here, its identical columns are merged the same
way.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from videolang.eval.metrics.errors import MetricInputError

DEFAULT_CHUNK_SIZE = 4096
RECALL_AT = (1, 5, 10)
DEFAULT_DUAL_SOFTMAX_SCALE = 100.0

# Scores of a fixed set of query rows against candidates [first, end): (first, end) -> [rows, end - first].
# The result lives in a scratch buffer that the caller may overwrite and that the next call reuses.
RowScores = Callable[[int, int], Tensor]
# Row indices -> their RowScores.
ScoreSource = Callable[[Tensor], RowScores]


def retrieval_metrics(
    sim: Tensor,
    *,
    query_to_target: Optional[Tensor] = None,
    candidate_to_query: Optional[Tensor] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dual_softmax: bool = False,
    dual_softmax_scale: float = DEFAULT_DUAL_SOFTMAX_SCALE,
) -> dict[str, float | bool]:
    """R@1/5/10 (percent), MdR and MnR (1-based) of a score matrix `sim[query, candidate]`.

    Without a mapping, candidate i is the match of query i. `query_to_target[i]` names the one match of
    query i (text->video with several captions per video); `candidate_to_query[j]` names the query that
    candidate j belongs to (video->text with several captions per video: the best-ranked caption counts).
    `dual_softmax=True` re-scores with a prior over queries first; the result says so in `"dual_softmax"`.
    """
    ranks = retrieval_ranks(
        sim,
        query_to_target=query_to_target,
        candidate_to_query=candidate_to_query,
        chunk_size=chunk_size,
        dual_softmax=dual_softmax,
        dual_softmax_scale=dual_softmax_scale,
    )
    return summarize_ranks(ranks, dual_softmax=dual_softmax)


def retrieval_metrics_from_embeddings(
    queries: Tensor,
    candidates: Tensor,
    *,
    query_to_target: Optional[Tensor] = None,
    candidate_to_query: Optional[Tensor] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dual_softmax: bool = False,
    dual_softmax_scale: float = DEFAULT_DUAL_SOFTMAX_SCALE,
) -> dict[str, float | bool]:
    """`retrieval_metrics` of `queries @ candidates.T`, computed block by block so it never exists whole.

    Scores are dot products in the embeddings' dtype: pass L2-normalised embeddings for cosine scores.
    """
    ranks = retrieval_ranks_from_embeddings(
        queries,
        candidates,
        query_to_target=query_to_target,
        candidate_to_query=candidate_to_query,
        chunk_size=chunk_size,
        dual_softmax=dual_softmax,
        dual_softmax_scale=dual_softmax_scale,
    )
    return summarize_ranks(ranks, dual_softmax=dual_softmax)


def retrieval_ranks(
    sim: Tensor,
    *,
    query_to_target: Optional[Tensor] = None,
    candidate_to_query: Optional[Tensor] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dual_softmax: bool = False,
    dual_softmax_scale: float = DEFAULT_DUAL_SOFTMAX_SCALE,
) -> Tensor:
    """1-based rank of each query's match, `LongTensor[num_queries]`; see `retrieval_metrics`."""
    sim = _check_scores(sim)
    num_queries, num_candidates = sim.shape
    matches = _match_pairs(num_queries, num_candidates, query_to_target, candidate_to_query, sim.device)
    chunk = _block_size(chunk_size, num_queries, num_candidates)
    scale = _dual_softmax_scale(dual_softmax, dual_softmax_scale)
    # Given scores are compared as given; only the dual-softmax re-scoring is computed here, so only
    # then are identical columns merged (see the module docstring).
    groups = _distinct_items(sim, dim=1) if scale is not None else None
    columns = None
    if groups is not None:
        columns, owner = groups
        matches = (matches[0], owner[matches[1]])
    return _ranks(
        _matrix_source(sim, chunk_size=chunk, columns=columns),
        num_queries,
        num_candidates if columns is None else columns.numel(),
        matches,
        dtype=sim.dtype,
        chunk_size=chunk,
        dual_softmax_scale=scale,
        multiplicity=None if groups is None else _multiplicity(groups[1], columns.numel(), sim.dtype),
    )


def retrieval_ranks_from_embeddings(
    queries: Tensor,
    candidates: Tensor,
    *,
    query_to_target: Optional[Tensor] = None,
    candidate_to_query: Optional[Tensor] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dual_softmax: bool = False,
    dual_softmax_scale: float = DEFAULT_DUAL_SOFTMAX_SCALE,
) -> Tensor:
    """1-based rank of each query's match among `candidates`; see `retrieval_metrics_from_embeddings`."""
    queries, candidates = _check_embeddings(queries, candidates)
    num_queries, num_candidates = queries.shape[0], candidates.shape[0]
    matches = _match_pairs(num_queries, num_candidates, query_to_target, candidate_to_query, queries.device)
    chunk = _block_size(chunk_size, num_queries, num_candidates)
    # Identical candidates are scored once (one column each), so they tie exactly whatever the kernels.
    groups = _distinct_items(candidates, dim=0)
    multiplicity = None
    if groups is not None:
        distinct, owner = groups
        candidates = candidates.index_select(0, distinct)
        matches = (matches[0], owner[matches[1]])
        multiplicity = _multiplicity(owner, distinct.numel(), queries.dtype)
    return _ranks(
        _embedding_source(queries, candidates, chunk_size=chunk),
        num_queries,
        candidates.shape[0],
        matches,
        dtype=queries.dtype,
        chunk_size=chunk,
        dual_softmax_scale=_dual_softmax_scale(dual_softmax, dual_softmax_scale),
        multiplicity=multiplicity,
    )


def summarize_ranks(ranks: Tensor, *, dual_softmax: bool = False) -> dict[str, float | bool]:
    """R@K in percent, MdR (the middle rank, or the mean of the two middle ones) and MnR from 1-based ranks."""
    if not isinstance(ranks, Tensor) or ranks.ndim != 1 or ranks.numel() == 0:
        raise MetricInputError("ranks: expected a non-empty 1-D tensor of 1-based ranks")
    if ranks.is_floating_point() or ranks.dtype == torch.bool or int(ranks.min()) < 1:
        raise MetricInputError("ranks: expected integer ranks >= 1")
    ranks = ranks.double()
    out: dict[str, float | bool] = {f"R@{k}": 100.0 * float((ranks <= k).double().mean()) for k in RECALL_AT}
    ordered = ranks.sort().values
    half = ordered.numel() // 2
    median = ordered[half] if ordered.numel() % 2 else (ordered[half - 1] + ordered[half]) / 2
    out["MdR"] = float(median)
    out["MnR"] = float(ranks.mean())
    out["dual_softmax"] = bool(dual_softmax)
    return out


def _ranks(
    source: ScoreSource,
    num_queries: int,
    num_candidates: int,
    matches: tuple[Tensor, Tensor],
    *,
    dtype: torch.dtype,
    chunk_size: int,
    dual_softmax_scale: Optional[float],
    multiplicity: Optional[Tensor] = None,
) -> Tensor:
    """Ranks from scores of `num_candidates` columns; `multiplicity[j]` (default 1) is how many candidates
    column j stands for (identical embeddings merged into one column)."""
    match_query, match_candidate = matches
    device = match_query.device
    if dual_softmax_scale is not None:
        source = _dual_softmax_source(
            source, num_queries, num_candidates, chunk_size, dual_softmax_scale, dtype, device
        )
    # Visit queries in order of their first match, so a block of queries has its matches in one or two
    # column blocks for the usual layouts; a block is computed twice only when there are several.
    first = torch.full((num_queries,), num_candidates, dtype=torch.long, device=device)
    first.scatter_reduce_(0, match_query, match_candidate, "amin")
    order = torch.argsort(first, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(num_queries, device=device)
    pair_position, by_position = torch.sort(position[match_query], stable=True)
    pair_candidate = match_candidate[by_position]

    ranks = torch.empty(num_queries, dtype=torch.long, device=device)
    for start in range(0, num_queries, chunk_size):
        rows = order[start : start + chunk_size]
        scores = source(rows)
        bounds = torch.tensor([start, start + rows.numel()], device=device)
        lo, hi = torch.searchsorted(pair_position, bounds).tolist()
        local_row = pair_position[lo:hi] - start
        match_score, kept = _scores_at(scores, local_row, pair_candidate[lo:hi], chunk_size)
        best = torch.full((rows.numel(),), float("-inf"), dtype=match_score.dtype, device=device)
        best.scatter_reduce_(0, local_row, match_score, "amax")
        # Matches scoring exactly `best` are counted by `_count_at_least` but are not candidates ahead
        # (one per match pair: each pair is one original candidate, merged columns included).
        matches_at_best = torch.zeros(rows.numel(), dtype=torch.long, device=device)
        matches_at_best.scatter_add_(0, local_row, (match_score == best[local_row]).long())
        at_least = _count_at_least(scores, best, num_candidates, chunk_size, kept, multiplicity)
        ranks[rows] = 1 + at_least - matches_at_best
    return ranks


def _scores_at(
    scores: RowScores, local_row: Tensor, candidate: Tensor, chunk_size: int
) -> tuple[Tensor, Optional[tuple[int, Tensor]]]:
    """Scores at (local_row[k], candidate[k]), read from the blocks that `_count_at_least` will count.

    When one block holds them all, it is returned as (first candidate, block) so it is not recomputed.
    """
    column_block = torch.div(candidate, chunk_size, rounding_mode="floor")
    blocks = torch.unique(column_block).tolist()
    out = None
    for block in blocks:
        first = block * chunk_size
        block_scores = scores(first, first + chunk_size)
        pick = column_block == block
        values = block_scores[local_row[pick], candidate[pick] - first]
        if out is None:
            out = torch.empty(candidate.shape, dtype=values.dtype, device=values.device)
        out[pick] = values
    assert out is not None  # every query has at least one match
    return out, ((blocks[0] * chunk_size, block_scores) if len(blocks) == 1 else None)


def _count_at_least(
    scores: RowScores,
    threshold: Tensor,
    num_candidates: int,
    chunk_size: int,
    kept: Optional[tuple[int, Tensor]] = None,
    multiplicity: Optional[Tensor] = None,
) -> Tensor:
    """Per row, how many candidates score >= that row's threshold; `kept` is a block already computed;
    column j counts `multiplicity[j]` times."""
    column = threshold[:, None]
    count = torch.zeros(threshold.shape, dtype=torch.long, device=threshold.device)
    firsts = list(range(0, num_candidates, chunk_size))
    if kept is not None:  # first, before the next block overwrites the scratch it lives in
        firsts.remove(kept[0])
        firsts.insert(0, kept[0])
    for first in firsts:
        block = kept[1] if kept is not None and first == kept[0] else scores(first, first + chunk_size)
        # Compare in place into the scratch block: a float 0/1 result sums with vectorised kernels (a
        # bool one takes a far slower path) and no second buffer competes for cache. Exact: the sum is
        # accumulated in at least float32 (a half-precision sum would round counts above 256), a block row
        # holds at most chunk_size ones, and merged columns count in float64 from 2**24 candidates on.
        torch.ge(block, column, out=block)
        if multiplicity is None:
            count += block.sum(1, dtype=_count_dtype(block.dtype)).long()
        else:
            weights = multiplicity[first : first + block.shape[1]]
            count += torch.mv(block.to(weights.dtype), weights).long()
    return count


def _matrix_source(sim: Tensor, *, chunk_size: int, columns: Optional[Tensor] = None) -> ScoreSource:
    """Blocks of `sim`, or of its columns `columns` (in that order) when given."""
    num_queries = sim.shape[0]
    num_candidates = sim.shape[1] if columns is None else columns.numel()
    scratch = _scratch(chunk_size, num_queries, num_candidates, sim.dtype, sim.device)

    def rows_of(rows: Tensor) -> RowScores:
        def scores(first: int, end: int) -> Tensor:
            end = min(end, num_candidates)
            out = scratch[: rows.numel() * (end - first)].view(rows.numel(), end - first)
            if columns is None:
                return torch.index_select(sim[:, first:end], 0, rows, out=out)
            return out.copy_(sim[rows[:, None], columns[None, first:end]])

        return scores

    return rows_of


def _embedding_source(queries: Tensor, candidates: Tensor, *, chunk_size: int) -> ScoreSource:
    num_queries, num_candidates = queries.shape[0], candidates.shape[0]
    scratch = _scratch(chunk_size, num_queries, num_candidates, queries.dtype, queries.device)

    def rows_of(rows: Tensor) -> RowScores:
        block_queries = queries.index_select(0, rows)

        def scores(first: int, end: int) -> Tensor:
            end = min(end, num_candidates)
            out = scratch[: rows.numel() * (end - first)].view(rows.numel(), end - first)
            return torch.mm(block_queries, candidates[first:end].T, out=out)

        return scores

    return rows_of


def _dual_softmax_source(
    source: ScoreSource,
    num_queries: int,
    num_candidates: int,
    chunk_size: int,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
) -> ScoreSource:
    """Scores re-weighted by a softmax over queries: `s * softmax(scale * s, dim=queries)` (dual softmax).

    Each candidate's softmax denominator needs every query's score for it, so this costs one extra pass.
    """
    log_norm = torch.full((num_candidates,), float("-inf"), dtype=dtype, device=device)
    for start in range(0, num_queries, chunk_size):
        scores = source(torch.arange(start, min(start + chunk_size, num_queries), device=device))
        for first in range(0, num_candidates, chunk_size):
            part = torch.logsumexp(scores(first, first + chunk_size).mul_(scale), dim=0)
            end = first + part.numel()
            log_norm[first:end] = torch.logaddexp(log_norm[first:end], part)
    weights = _scratch(chunk_size, num_queries, num_candidates, dtype, device)

    def rows_of(rows: Tensor) -> RowScores:
        raw = source(rows)

        def scores(first: int, end: int) -> Tensor:
            block = raw(first, end)
            w = weights[: block.numel()].view(block.shape)
            torch.mul(block, scale, out=w)
            w.sub_(log_norm[first : first + block.shape[1]]).exp_()
            return block.mul_(w)

        return scores

    return rows_of


def _distinct_items(x: Tensor, dim: int) -> Optional[tuple[Tensor, Tensor]]:
    """Merge items of `x` (rows for dim 0, columns for dim 1) that are equal entry by entry.

    Returns None when all items differ, else `(distinct, owner)`: `distinct` the index of each distinct
    item's first occurrence, ascending, and `owner[i]` the position in `distinct` of item i's group.
    Items are grouped by a 64-bit hash of their bits (-0.0 read as +0.0, so the groups are those of
    value equality), then checked entry by entry; a hash collision between different items, which has a
    probability of about N^2 / 2^64, falls back to `torch.unique`.
    """
    n = x.shape[dim]
    if n < 2:
        return None
    codes = _item_hash(x, dim)
    order = torch.argsort(codes, stable=True)
    ordered = codes[order]
    starts = torch.ones(n, dtype=torch.bool, device=x.device)
    starts[1:] = ordered[1:] != ordered[:-1]
    if bool(starts.all()):
        return None
    group = torch.cumsum(starts.long(), 0) - 1  # group of each position in `order`
    first = order[starts]  # first occurrence of each group (stable sort: the smallest index)
    duplicates = ~starts
    if not bool(_same_items(x, dim, order[duplicates], first[group[duplicates]]).all()):
        # A hash collision: group by value exactly (slower, allocates sorted copies).
        _, inverse = torch.unique(x + 0.0, dim=dim, return_inverse=True)
        group_of = inverse
        size = int(inverse.max()) + 1
        first = torch.full((size,), n, dtype=torch.long, device=x.device)
        first.scatter_reduce_(0, inverse, torch.arange(n, device=x.device), "amin")
        if first.numel() == n:
            return None
    else:
        group_of = torch.empty(n, dtype=torch.long, device=x.device)
        group_of[order] = group
    rank = torch.argsort(first)
    position = torch.empty_like(rank)
    position[rank] = torch.arange(rank.numel(), device=x.device)
    return first[rank], position[group_of]


def _item_hash(x: Tensor, dim: int, budget: int = 1 << 20) -> Tensor:
    """A 64-bit hash of the bits of each item (row for dim 0, column for dim 1), -0.0 read as +0.0:
    sum_k bits_k * c_k mod 2^64 with fixed random odd c_k, in passes of about `budget` entries (integer
    sums wrap the same way in any order, so the hash does not depend on the kernel either)."""
    bits_dtype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    length = x.shape[1 - dim]
    gen = torch.Generator().manual_seed(0x5EED)
    coef = (torch.randint(-(2**62), 2**62, (length,), generator=gen) * 2 + 1).to(x.device)
    out = torch.zeros(x.shape[dim], dtype=torch.long, device=x.device)
    rows_per_pass = max(1, budget // max(1, x.shape[1]))
    for start in range(0, x.shape[0], rows_per_pass):
        # -0.0 + 0.0 = +0.0, so values that compare equal hash equally.
        bits = (x[start : start + rows_per_pass] + 0.0).view(bits_dtype).long()
        if dim == 0:
            out[start : start + rows_per_pass] = (bits * coef).sum(1)
        else:
            out += (bits * coef[start : start + rows_per_pass, None]).sum(0)
    return out


def _same_items(x: Tensor, dim: int, a: Tensor, b: Tensor, budget: int = 1 << 24) -> Tensor:
    """Whether items a[k] and b[k] of `x` are equal entry by entry, in passes of about `budget` entries."""
    same = torch.ones(a.numel(), dtype=torch.bool, device=x.device)
    if dim == 0:
        step = max(1, budget // max(1, x.shape[1]))
        for start in range(0, a.numel(), step):
            part = slice(start, start + step)
            same[part] = (x.index_select(0, a[part]) == x.index_select(0, b[part])).all(1)
    else:
        step = max(1, budget // max(1, a.numel()))
        for start in range(0, x.shape[0], step):
            rows = x[start : start + step]
            same &= (rows.index_select(1, a) == rows.index_select(1, b)).all(0)
    return same


def _multiplicity(owner: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """How many items each merged column stands for, in a dtype whose sums of them stay exact: at least
    float32, float64 from 2**24 items on."""
    exact = torch.float64 if owner.numel() >= 2**24 else _count_dtype(dtype)
    return torch.bincount(owner, minlength=size).to(exact)


def _count_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for 0/1 counts: half precisions would round sums above 256 (bf16) or 2048."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scratch(
    chunk_size: int, num_queries: int, num_candidates: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """A flat buffer for the largest block."""
    size = min(chunk_size, num_queries) * min(chunk_size, num_candidates)
    return torch.empty(size, dtype=dtype, device=device)


def _match_pairs(
    num_queries: int,
    num_candidates: int,
    query_to_target: Optional[Tensor],
    candidate_to_query: Optional[Tensor],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Every (query, candidate) match as two index vectors; each query has at least one."""
    if query_to_target is not None and candidate_to_query is not None:
        raise MetricInputError("retrieval: give query_to_target or candidate_to_query, not both")
    if query_to_target is not None:
        target = _index_vector(query_to_target, "query_to_target", num_queries, "queries", num_candidates, device)
        return torch.arange(num_queries, device=device), target
    if candidate_to_query is not None:
        owner = _index_vector(
            candidate_to_query, "candidate_to_query", num_candidates, "candidates", num_queries, device
        )
        unmatched = torch.nonzero(torch.bincount(owner, minlength=num_queries) == 0)
        if unmatched.numel():
            raise MetricInputError(f"candidate_to_query: query {int(unmatched[0])} has no candidate")
        return owner, torch.arange(num_candidates, device=device)
    if num_queries != num_candidates:
        raise MetricInputError(
            f"retrieval: {num_queries} queries but {num_candidates} candidates; pass query_to_target or "
            "candidate_to_query when candidate i is not the match of query i"
        )
    identity = torch.arange(num_queries, device=device)
    return identity, identity


def _index_vector(
    value: Tensor, name: str, length: int, per: str, bound: int, device: torch.device
) -> Tensor:
    index = torch.as_tensor(value, device=device)
    if index.ndim != 1 or index.numel() != length:
        raise MetricInputError(
            f"{name}: expected a 1-D tensor with one entry per {per[:-1]} ({length}), "
            f"got shape {tuple(index.shape)}"
        )
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise MetricInputError(f"{name}: expected integer indices, got {index.dtype}")
    if length and (int(index.min()) < 0 or int(index.max()) >= bound):
        low, high = int(index.min()), int(index.max())
        raise MetricInputError(f"{name}: indices must lie in [0, {bound}), got [{low}, {high}]")
    return index.long()


def _check_scores(sim: Tensor) -> Tensor:
    if not isinstance(sim, Tensor) or sim.ndim != 2:
        raise MetricInputError(f"sim: expected a 2-D tensor [queries, candidates], got {_describe(sim)}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise MetricInputError(f"sim: needs at least one query and one candidate, got shape {tuple(sim.shape)}")
    if not sim.is_floating_point():
        raise MetricInputError(f"sim: expected floating-point scores, got {sim.dtype}")
    if not _all_finite(sim):
        raise MetricInputError("sim: contains NaN or infinite scores")
    return sim


def _check_embeddings(queries: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    for name, x in (("queries", queries), ("candidates", candidates)):
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0:
            raise MetricInputError(f"{name}: expected a non-empty 2-D tensor [items, dim], got {_describe(x)}")
        if not x.is_floating_point():
            raise MetricInputError(f"{name}: expected floating-point embeddings, got {x.dtype}")
        if not _all_finite(x):
            raise MetricInputError(f"{name}: contains NaN or infinite values")
    if queries.shape[1] != candidates.shape[1]:
        dims = candidates.shape[1], queries.shape[1]
        raise MetricInputError(f"candidates: dim {dims[0]} differs from the queries' dim {dims[1]}")
    if queries.device != candidates.device:
        raise MetricInputError(f"candidates: on {candidates.device} but queries are on {queries.device}")
    dtype = torch.promote_types(queries.dtype, candidates.dtype)
    return queries.to(dtype), candidates.to(dtype)


def _block_size(chunk_size: int, num_queries: int, num_candidates: int) -> int:
    """`chunk_size`, validated and no larger than the larger side of the score matrix."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise MetricInputError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    return min(chunk_size, max(num_queries, num_candidates))


def _dual_softmax_scale(dual_softmax: bool, scale: float) -> Optional[float]:
    if not dual_softmax:
        return None
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0 < scale < float("inf"):
        raise MetricInputError(f"dual_softmax_scale: expected a positive finite number, got {scale!r}")
    return float(scale)


def _all_finite(x: Tensor) -> bool:
    # A NaN or infinity makes the sum non-finite; the sum is one fast pass, `isfinite` several slow ones,
    # and is only needed to tell an overflowing sum of finite values from a real NaN or infinity.
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__

"""Kernel-domain Sinkhorn iterations for batches of small problems on CPU, fused into one compiled call.

Why: at Norton's sizes (9 x 9, 33 x 33 with the bucket) a batched torch or NumPy loop spends most of its
time on per-call overhead: two batched products and two divisions per iteration, a few microseconds each
however small the problems. Here all iterations run inside one Numba-compiled function:
- problems are laid out batch-innermost ("lanes"): `k[i, j, l]` is entry (i, j) of problem l, so every
  update is an element-wise operation over a block of problems, which the compiler turns into SIMD code;
- each product adds four terms per accumulator update (see `_update_u`).
It runs on the calling thread only: splitting blocks over two threads measured 1.3-1.45x faster in isolation,
but no faster (sometimes slower) right after torch's own parallel ops, whose OpenMP workers keep spinning on
the other cores for a while, which is where a training step calls it.
The iterates are those of `transport._kernel_iterations` (and POT's): v = b / (K^T u), then u = a / (K v).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency; the torch loop covers its absence
    numba = None

# Problems per block: 32 fp32 lanes are 4 AVX2 registers per kernel entry, enough independent work per row
# for the vectoriser (16 lanes measured 1.1-1.6x slower, 64 no faster).
LANES = 32


def available() -> bool:
    """Whether the fused solver can run (Numba importable)."""
    return numba is not None


def solve(
    cost: np.ndarray,
    c_min: np.ndarray,
    eps: float,
    a: np.ndarray,
    b: np.ndarray,
    n_iters: int,
    tol: Optional[float],
    check_every: int,
) -> np.ndarray:
    """Plans `[B, N, M]` = diag(u) K diag(v) after `n_iters` iterations from u = 1, K = exp((c_min - C) / eps).

    `cost` `[B, N, M]`, its per-problem minimum `c_min` `[B]` (the shift keeps K in (0, 1]; the caller has
    checked that the kernel route is safe), `a` `[B, N]` and `b` `[B, M]` the marginals, all of one float
    dtype. With `tol`, a block of problems stops once each of its column marginals is within `tol` in L1,
    checked every `check_every` iterations (rows are exact after every iteration).
    """
    batch, n, m = cost.shape
    if batch == 0:
        return np.empty_like(cost)
    lanes = min(LANES, -(-batch // 8) * 8)  # a small batch pads to a multiple of 8 lanes, not to LANES
    blocks = -(-batch // lanes)
    kernel = np.subtract(c_min[:, None, None], cost)
    np.exp(np.divide(kernel, eps, out=kernel), out=kernel)
    # Unused lanes get K = 1 and uniform marginals, which stay finite and converge at once.
    k = _to_lanes(kernel, blocks, lanes, 1.0)
    ak, bk = _to_lanes(a, blocks, lanes, 1.0 / n), _to_lanes(b, blocks, lanes, 1.0 / m)
    real = np.minimum(lanes, batch - lanes * np.arange(blocks))  # real problems per block
    _iterate(k, ak, bk, real, n_iters, -1.0 if tol is None else float(tol), check_every)
    # k now holds the plans, lane-wise; back to [B, N, M].
    return np.ascontiguousarray(k.reshape(blocks, n * m, lanes).transpose(0, 2, 1).reshape(-1, n, m)[:batch])


def _to_lanes(x: np.ndarray, blocks: int, lanes: int, fill: float) -> np.ndarray:
    """`[B, *rest]` as a writable C-contiguous `[blocks, *rest, lanes]` (problem l of block c in lane l),
    padded with `fill`. NumPy's strided copies do this faster than a compiled element loop."""
    batch, rest = x.shape[0], x.shape[1:]
    out = np.empty((blocks, *rest, lanes), x.dtype)
    flat, src = out.reshape(blocks, -1, lanes), x.reshape(batch, -1)
    full = batch // lanes
    flat[:full] = src[: full * lanes].reshape(full, lanes, src.shape[1]).transpose(0, 2, 1)
    if full < blocks:
        flat[full, :, : batch - full * lanes] = src[full * lanes :].T
        flat[full, :, batch - full * lanes :] = fill
    return out


def _jit(fn):
    if numba is None:  # pragma: no cover
        return fn
    # Lane loops use a run-time trip count on purpose: with a compile-time one they are unrolled before
    # vectorisation and then stay scalar (the compiler cannot rule out aliasing between the arrays).
    # error_model="numpy": no zero-division checks, which would block vectorisation (x / 0 cannot occur
    # here: the caller's bound keeps every kernel entry positive). "contract" allows FMA and nothing else,
    # so divisions stay exact (no reciprocal approximations).
    options = dict(nogil=True, boundscheck=False, error_model="numpy", fastmath={"contract"}, inline="always")
    return numba.njit(cache=True, **options)(fn)


@_jit
def _iterate(k, ak, bk, real, n_iters, tol, check_every):  # pragma: no cover - compiled; tested via solve
    """Iterate each block of `k` `[C, N, M, lanes]` in place, leaving the plans there."""
    blocks, n, m, lanes = k.shape  # lanes is a run-time value on purpose, see `_jit`
    u = np.empty((n, lanes), k.dtype)
    v = np.empty((m, lanes), k.dtype)
    ktu = np.empty((m, lanes), k.dtype)  # K^T u of the latest u
    acc = np.empty(lanes, k.dtype)
    for c in range(blocks):
        kc, ac, bc = k[c], ak[c], bk[c]
        _column_sums(kc, ktu)
        for it in range(n_iters):
            if tol > 0 and it > 0 and it % check_every == 0 and _column_error(v, ktu, bc, real[c]) < tol:
                break
            for j in range(m):
                for lane in range(lanes):
                    v[j, lane] = bc[j, lane] / ktu[j, lane]
            _update_u(kc, v, ac, u, acc, ktu, it < n_iters - 1)
        for i in range(n):
            for j in range(m):
                for lane in range(lanes):
                    kc[i, j, lane] *= u[i, lane] * v[j, lane]


@_jit
def _column_sums(k, out):  # pragma: no cover - compiled
    """out[j] = sum_i K[i, j], lane-wise: K^T u for the starting u = 1."""
    n, m, lanes = k.shape
    out[:] = 0.0
    for i in range(n):
        for j in range(m):
            for lane in range(lanes):
                out[j, lane] += k[i, j, lane]


# `_update_u` sums four products per update of an accumulator: the compiler keeps accumulators in memory
# (it cannot prove they do not alias the inputs), so fewer updates mean fewer loads and stores (measured
# 1.25x at 33 x 33 against one product per update).


@_jit
def _update_u(k, v, ak, u, acc, ktu, with_ktu):  # pragma: no cover - compiled
    """u[i] = a[i] / sum_j K[i, j] v[j], lane-wise; with `with_ktu` also ktu = K^T u for the new u.

    Rows go in groups of four: a group's rows give their u, then at once their share of K^T u while they
    are still in L1 cache, so each kernel entry is read from L2 once per iteration, not twice.
    """
    n, m, lanes = k.shape
    m4 = m - m % 4
    if with_ktu:
        ktu[:] = 0.0
    for i0 in range(0, n, 4):
        rows = min(4, n - i0)
        for i in range(i0, i0 + rows):
            acc[:] = 0.0
            for j in range(0, m4, 4):
                for lane in range(lanes):
                    acc[lane] += (k[i, j, lane] * v[j, lane] + k[i, j + 1, lane] * v[j + 1, lane]) + (
                        k[i, j + 2, lane] * v[j + 2, lane] + k[i, j + 3, lane] * v[j + 3, lane]
                    )
            for j in range(m4, m):
                for lane in range(lanes):
                    acc[lane] += k[i, j, lane] * v[j, lane]
            for lane in range(lanes):
                u[i, lane] = ak[i, lane] / acc[lane]
        if not with_ktu:
            continue
        if rows == 4:
            for j in range(m):
                for lane in range(lanes):
                    ktu[j, lane] += (u[i0, lane] * k[i0, j, lane] + u[i0 + 1, lane] * k[i0 + 1, j, lane]) + (
                        u[i0 + 2, lane] * k[i0 + 2, j, lane] + u[i0 + 3, lane] * k[i0 + 3, j, lane]
                    )
        else:
            for i in range(i0, i0 + rows):
                for j in range(m):
                    for lane in range(lanes):
                        ktu[j, lane] += u[i, lane] * k[i, j, lane]


@_jit
def _column_error(v, ktu, bk, count):  # pragma: no cover - compiled
    """Largest L1 error of the column marginals v * K^T u over the block's real lanes."""
    worst = 0.0
    for lane in range(count):
        err = 0.0
        for j in range(v.shape[0]):
            err += abs(v[j, lane] * ktu[j, lane] - bk[j, lane])
        worst = max(worst, err)
    return worst


__all__ = ["LANES", "available", "solve"]

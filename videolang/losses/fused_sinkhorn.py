"""Kernel-domain Sinkhorn iterations for batches of small problems on CPU, fused into one compiled call.

Why: at Norton's sizes (9 x 9, 33 x 33 with the bucket) a batched torch or NumPy loop spends most of its
time on per-call overhead: two batched products and two divisions per iteration, a few microseconds each
however small the problems. The C extension `_sinkhorn_kernel` (built by setup.py from
`_sinkhorn_kernel.c` and `_sinkhorn_iterate.h`) runs all iterations of a batch in one call:
- problems are solved a vector's width at a time (8 fp64 or 16 fp32 with AVX-512), laid out
  batch-innermost, so every update is one SIMD operation over that many problems;
- K v runs over four rows at once with the accumulators in registers, and each group of rows adds its share
  of K^T u while still in L1 cache, so each kernel entry is read from L2 once per iteration;
- it is compiled for AVX-512, AVX2 + FMA and 16-byte vectors; `pick` chooses among those the CPU runs.
It runs on the calling thread, with the GIL released: splitting the batch over two threads measured
1.3-1.45x faster in isolation (with the earlier Numba loop), but no faster right after torch's own parallel ops, whose OpenMP workers keep
spinning on the other cores for a while, which is where a training step calls it.
The iterates are those of `transport._kernel_iterations` (and POT's): v = b / (K^T u), then u = a / (K v).
Where the extension could not be built (no C compiler at install time), `available()` is False and the
caller runs the torch loop.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

try:
    from videolang.losses import _sinkhorn_kernel
except ImportError:  # pragma: no cover - built at install; the torch loop covers its absence
    _sinkhorn_kernel = None


def available() -> bool:
    """Whether the fused solver can run (the C extension was built)."""
    return _sinkhorn_kernel is not None


def variants() -> list[str]:
    """Instruction-set variants of the compiled solver this CPU runs, widest first."""
    return [name for name, _ in _sinkhorn_kernel.variants()] if _sinkhorn_kernel is not None else []


def pick(n: int, m: int, l1_bytes: int, l2_bytes: int) -> Optional[str]:
    """The variant for N x M problems, given the L1 size and the L2 budget per core, or None where the
    torch loop is faster. A variant iterates over a block of kernels of N * M * its vector bytes:
    the widest variant whose block fits in L1, else the widest whose block fits the L2 budget, else None.
    Measured (docs/bench_ot.md): at 33 x 33 AVX2's 35 KiB block in a 48 KiB L1 beats AVX-512's 70 KiB one by
    1.03-1.15x, where both blocks sit in one cache AVX-512 is 1.0-1.4x faster, at 161 x 161 and 193 x 193
    AVX2's block (0.8, 1.2 MiB) beats AVX-512's (1.6, 2.4 MiB) by 1.1-1.9x, and where no block fits the L2
    budget (257 x 257 here) the best variant is only as fast as torch's loop on all cores. 16-byte vectors
    only where nothing wider runs (always the slowest)."""
    found = _sinkhorn_kernel.variants() if _sinkhorn_kernel is not None else []
    wide = [v for v in found if v[1] >= 32] or found
    for budget in (l1_bytes, l2_bytes):
        for name, vector_bytes in wide:
            if n * m * vector_bytes <= budget:
                return name
    return None


def solve(
    cost: np.ndarray,
    c_min: np.ndarray,
    eps: float,
    a: np.ndarray,
    b: np.ndarray,
    n_iters: int,
    tol: Optional[float],
    check_every: int,
    variant: str,
) -> np.ndarray:
    """Plans `[B, N, M]` = diag(u) K diag(v) after `n_iters` iterations from u = 1, K = exp((c_min - C) / eps).

    `cost` `[B, N, M]`, its per-problem minimum `c_min` `[B]` (the shift keeps K in (0, 1]; the caller has
    checked that the kernel route is safe), `a` `[B, N]` and `b` `[B, M]` the marginals, all of one float
    dtype. With `tol`, a block of problems (one vector's width) stops once each of its column marginals is
    within `tol` in L1, checked every `check_every` iterations (rows are exact after every iteration).
    `variant` is one of `variants()`, normally `pick`'s choice.
    """
    if _sinkhorn_kernel is None:
        raise RuntimeError("the fused Sinkhorn extension is not built; reinstall videolang with a C compiler")
    # The kernel is computed into the array that becomes the plan: the solver works in place.
    plan = np.subtract(c_min[:, None, None], cost, order="C")  # C order whatever the cost's strides
    np.exp(np.divide(plan, eps, out=plan), out=plan)
    dtype = plan.dtype
    a, b = np.ascontiguousarray(a, dtype), np.ascontiguousarray(b, dtype)
    _sinkhorn_kernel.solve(plan, a, b, n_iters, -1.0 if tol is None else float(tol), check_every, variant)
    return plan


__all__ = ["available", "pick", "solve", "variants"]

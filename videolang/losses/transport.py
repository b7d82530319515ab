"""Batched entropic optimal transport (Sinkhorn), the solver behind the Norton losses.

For each of B cost matrices C [N, M] it returns the plan

    P = argmin_P <P, C> - eps * H(P)   subject to   P 1 = a,  P^T 1 = b,

the problem of POT's `ot.sinkhorn(a, b, C, reg=eps)`, reached by the same iterates (a v update, then a
u update, per iteration), so plans agree with POT's at any iteration count, not only at convergence.

Two update rules give those iterates:
- log domain: potentials f = log u, g = log v updated by log-sum-exp; stable for any eps and cost range;
- kernel domain: scalings u, v updated by batched matrix-vector products with K = exp(-C / eps); one read
  of K per half step instead of about four passes, but exp can under- or overflow.
`domain="auto"` takes the kernel route only when the bound in docs/losses.md proves that every
intermediate value stays inside the dtype's normal range, and runs in the log domain otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor

from videolang.losses.errors import LossError

Domain = Literal["auto", "log"]
Array = Union[Tensor, np.ndarray]

# Relative mismatch of total masses above which the marginals are taken to be a mistake, not rounding.
_MASS_RTOL = 1e-3


def _l2_budget(default: int = 1 << 20) -> int:
    """Three quarters of a core's L2 cache as Linux reports it (the best share measured at 33 to 129
    squared), or `default` where sysfs does not say."""
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level, size = (index / "level").read_text().strip(), (index / "size").read_text().strip()
        except OSError:
            continue
        if level == "2" and size[:-1].isdigit() and size[-1] in "KM":
            return int(size[:-1]) * (1 << (10 if size[-1] == "K" else 20)) * 3 // 4
    return default


# On CPU, problems are solved in groups whose two [N, M] working arrays fit in about this much L2 cache
# per thread, so the 2 * n_iters passes over them hit cache instead of memory (~2x at 129 x 129).
_CPU_CACHE_BYTES_PER_THREAD = _l2_budget()
# Kernels up to this size run the kernel-route iterations in NumPy on CPU (see `_numpy_loop`).
_NUMPY_LOOP_MAX_BYTES = 1 << 19


@torch.no_grad()
def sinkhorn(
    cost: Tensor,
    eps: float,
    n_iters: int = 50,
    a: Optional[Tensor] = None,
    b: Optional[Tensor] = None,
    tol: Optional[float] = None,
    *,
    domain: Domain = "auto",
    check_every: int = 10,
) -> Tensor:
    """Entropic OT plans `[B, N, M]` for costs `[B, N, M]` (or one plan `[N, M]` for a cost `[N, M]`).

    `a` ([N] or [B, N]) and `b` ([M] or [B, M]) are non-negative marginals with equal total mass,
    uniform summing to 1 when omitted. Runs `n_iters` iterations, or stops early once the L1 error of the
    column marginal (the row marginal is exact after each iteration) is below `tol` in every problem of
    a group (the whole batch, or a cache-sized group on CPU), checked every `check_every` iterations.
    No gradient flows through the plan: the losses use it as a target. Half-precision costs are solved
    in fp32; the plan has the cost's dtype.
    """
    if not isinstance(cost, Tensor) or cost.dim() not in (2, 3):
        shape = list(cost.shape) if isinstance(cost, Tensor) else type(cost).__name__
        raise LossError(f"sinkhorn: cost must be a tensor [B, N, M] or [N, M], got {shape}")
    _check_options(eps, n_iters, tol, domain, check_every)
    single = cost.dim() == 2
    c = cost.unsqueeze(0) if single else cost
    work = c.dtype if c.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(device_type=c.device.type, enabled=False):
        c = c.to(work)
        batch, n, m = c.shape
        a_ = _marginal(a, "a", batch, n, c)
        b_ = _marginal(b, "b", batch, m, c)
        c_min, b_, bound = _inspect(c, a_, b_, eps, given=a is not None or b is not None)
        if domain == "auto" and bound <= _kernel_limit(work):
            plans = [
                _kernel_iterations(c[g], c_min[g], eps, a_[g], b_[g], n_iters, tol, check_every)
                for g in _cache_groups(c)
            ]
        else:
            plans = [
                _log_iterations(c[g], eps, a_[g], b_[g], n_iters, tol, check_every) for g in _cache_groups(c)
            ]
    plan = (plans[0] if len(plans) == 1 else torch.cat(plans)).to(cost.dtype)
    return plan.squeeze(0) if single else plan


def _check_options(eps: float, n_iters: int, tol: Optional[float], domain: str, check_every: int) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise LossError(f"sinkhorn: eps must be a positive number, got {eps!r}")
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise LossError(f"sinkhorn: n_iters must be an integer >= 1, got {n_iters!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise LossError(f"sinkhorn: tol must be a positive number or None, got {tol!r}")
    if domain not in ("auto", "log"):
        raise LossError(f"sinkhorn: domain must be 'auto' or 'log', got {domain!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise LossError(f"sinkhorn: check_every must be an integer >= 1, got {check_every!r}")


def _marginal(x: Optional[Tensor], name: str, batch: int, size: int, like: Tensor) -> Tensor:
    """A marginal as `[batch, size]` in the working dtype; uniform (mass 1) when omitted."""
    if x is None:
        return like.new_full((batch, size), 1.0 / size)
    if not isinstance(x, Tensor) or x.dim() not in (1, 2) or x.shape[-1] != size:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise LossError(f"sinkhorn: {name} must have shape [{size}] or [{batch}, {size}], got {shape}")
    if x.dim() == 2 and x.shape[0] != batch:
        raise LossError(f"sinkhorn: {name} has {x.shape[0]} rows but the cost has {batch} problems")
    return x.detach().to(device=like.device, dtype=like.dtype).expand(batch, size)


def _inspect(cost: Tensor, a: Tensor, b: Tensor, eps: float, given: bool) -> tuple[Tensor, Tensor, float]:
    """Validate values and bound the kernel route's exponent range, with a single host sync.

    Returns the per-problem minimum cost `[B]`, `b` rescaled to the total mass of `a` and Lambda, the
    largest |log| any kernel-domain intermediate can reach (derivation in docs/losses.md). Marginals are
    checked only when `given`: the default uniform ones are valid, with ratio 1 and mass 1, so their
    terms of Lambda vanish (and skipping them saves ~20 small ops, a third of a 9 x 9 batch's time).
    """
    flat = cost.flatten(1)
    c_min = flat.amin(1)  # two passes beat torch.aminmax over a dim on CPU
    c_range = flat.amax(1) - c_min  # NaN or infinite exactly when the cost has such an entry
    bound = c_range * (2 / eps) + math.log(a.shape[-1] * b.shape[-1])
    checks = [c_range.amax()]
    if given:
        mass_a, mass_b = a.sum(-1), b.sum(-1)
        bound = bound + _log_ratio(a) + _log_ratio(b) + mass_a.log().abs()
        checks += [
            torch.minimum(a.amin(), b.amin()),
            torch.minimum(mass_a.amin(), mass_b.amin()),
            ((mass_a - mass_b).abs() / torch.maximum(mass_a, mass_b)).amax(),
        ]
        # Rounding leaves the masses a few ulps apart; matching them keeps the scalings from drifting.
        b = b * (mass_a / mass_b).unsqueeze(-1)
    max_range, *marginal_stats, max_bound = torch.stack(checks + [bound.amax()]).tolist()
    if not math.isfinite(max_range):
        raise LossError("sinkhorn: cost contains NaN or infinite values")
    if marginal_stats:
        min_entry, min_mass, mismatch = marginal_stats
        if not min_entry >= 0:
            raise LossError("sinkhorn: marginals a and b must be non-negative")
        if not min_mass > 0:
            raise LossError("sinkhorn: every problem needs marginals with positive total mass")
        if not mismatch <= _MASS_RTOL:
            raise LossError(f"sinkhorn: a and b must have equal total mass (relative mismatch {mismatch:.2e})")
    return c_min, b, max_bound


def _log_ratio(x: Tensor) -> Tensor:
    """log(max / smallest positive entry) per row; zero entries drop out of the iterations exactly."""
    smallest = x.masked_fill(x <= 0, math.inf).amin(-1)
    return (x.amax(-1) / smallest).log()


def _cache_groups(cost: Tensor) -> list[slice]:
    """Slices of the batch solved together: the whole batch on accelerators, L2-sized groups on CPU."""
    batch = cost.shape[0]
    if cost.device.type != "cpu":
        return [slice(0, batch)]
    per_problem = 2 * cost[0].numel() * cost.element_size()
    size = max(1, _CPU_CACHE_BYTES_PER_THREAD * torch.get_num_threads() // per_problem)
    return [slice(start, start + size) for start in range(0, batch, size)]


def _kernel_limit(dtype: torch.dtype) -> float:
    """Largest Lambda allowed on the kernel route: 90 % of the exponent range of normal numbers."""
    return 0.9 * -math.log(torch.finfo(dtype).tiny)


def _kernel_iterations(
    cost: Tensor,
    c_min: Tensor,
    eps: float,
    a: Tensor,
    b: Tensor,
    n_iters: int,
    tol: Optional[float],
    check_every: int,
) -> Tensor:
    # Shifting by the per-problem minimum puts K in [exp(-R), 1] without changing the plan.
    kernel = (c_min.view(-1, 1, 1) - cost).div_(eps).exp_()
    # Scalings are row vectors: (u^T K) streams K row by row, about twice as fast on CPU as K @ u with a
    # column u; a contiguous K^T copy gives the other product the same layout.
    kernel_t = kernel.transpose(1, 2).contiguous()
    a_, b_ = a.unsqueeze(1), b.unsqueeze(1)  # [B, 1, N], [B, 1, M]
    u, v = torch.ones_like(a_), torch.ones_like(b_)
    ktu, kv = torch.empty_like(b_), torch.empty_like(a_)
    arrays = (kernel, kernel_t, a_, b_, u, v, ktu, kv)
    if _numpy_loop(kernel):
        # NumPy views share the tensors' memory, so the iterations below update u and v in place.
        _scale(np.matmul, np.divide, *(x.numpy() for x in arrays), n_iters, tol, check_every)
    else:
        _scale(torch.bmm, torch.div, *arrays, n_iters, tol, check_every)
    return kernel.mul_(u.transpose(1, 2)).mul_(v)


def _numpy_loop(kernel: Tensor) -> bool:
    """Whether to run the kernel-route iterations in NumPy: small CPU batches only.

    There each product takes a few microseconds, so per-call overhead (~1 us for NumPy, ~5 us for torch)
    dominates; beyond half a MiB of kernel, arithmetic dominates and torch's threaded `bmm` is as fast or
    faster (measured in docs/bench_ot.md).
    """
    return kernel.device.type == "cpu" and kernel.numel() * kernel.element_size() <= _NUMPY_LOOP_MAX_BYTES


def _scale(
    matmul: Callable[..., object],
    divide: Callable[..., object],
    kernel: Array,
    kernel_t: Array,
    a: Array,
    b: Array,
    u: Array,
    v: Array,
    ktu: Array,
    kv: Array,
    n_iters: int,
    tol: Optional[float],
    check_every: int,
) -> None:
    """The kernel-route iterations, on torch tensors or on NumPy arrays; updates `u` and `v` in place."""
    for it in range(n_iters):
        matmul(u, kernel, out=ktu)  # (K^T u)^T
        if tol is not None and it > 0 and it % check_every == 0 and _l1_error(v * ktu, b) < tol:
            break
        divide(b, ktu, out=v)
        matmul(v, kernel_t, out=kv)  # (K v)^T
        divide(a, kv, out=u)


def _log_iterations(
    cost: Tensor, eps: float, a: Tensor, b: Tensor, n_iters: int, tol: Optional[float], check_every: int
) -> Tensor:
    neg = cost / -eps
    log_a, log_b = a.log(), b.log()
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    buf = torch.empty_like(neg)  # one scratch tensor: no [B, N, M] allocation per iteration
    for it in range(n_iters):
        lse_cols = _logsumexp_(torch.add(neg, f.unsqueeze(2), out=buf), dim=1)
        if tol is not None and it > 0 and it % check_every == 0 and _l1_error((g + lse_cols).exp(), b) < tol:
            break
        g = log_b - lse_cols
        f = log_a - _logsumexp_(torch.add(neg, g.unsqueeze(1), out=buf), dim=2)
    return torch.add(neg, f.unsqueeze(2), out=buf).add_(g.unsqueeze(1)).exp_()


def _logsumexp_(x: Tensor, dim: int) -> Tensor:
    """logsumexp over `dim`, overwriting `x`; the max is finite since every problem has positive mass."""
    peak = x.amax(dim, keepdim=True)
    return x.sub_(peak).exp_().sum(dim).log_().add_(peak.squeeze(dim))


def _l1_error(marginal: Array, target: Array) -> float:
    """Largest L1 error over the batch, for tensors or arrays `[B, 1, M]` (kernel route) or `[B, M]`."""
    return float(abs(marginal - target).reshape(len(target), -1).sum(-1).max())

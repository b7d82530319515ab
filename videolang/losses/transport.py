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
from typing import Literal, Optional, Union

import numpy as np
import torch
from torch import Tensor

from videolang.losses.errors import LossError
from videolang.utils import cpu

Domain = Literal["auto", "log"]
Array = Union[Tensor, np.ndarray]

# Relative mismatch of total masses above which the marginals are taken to be a mistake, not rounding.
_MASS_RTOL = 1e-3


def _l2_budget(default: int = 1 << 20) -> int:
    """Three quarters of a core's L2 cache (the best share measured at 33 to 129 squared), or `default`
    where the system does not say."""
    size = cpu.cache_bytes(2)
    return size * 3 // 4 if size else default

# On CPU, problems are solved in groups whose two [N, M] working arrays fit in about this much L2 cache
# per thread, so the 2 * n_iters passes over them hit cache instead of memory (~2x at 129 x 129).
_CPU_CACHE_BYTES_PER_THREAD = _l2_budget()


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
    a group (the whole batch; on CPU a cache-sized group), checked every `check_every` iterations.
    No gradient flows through the plan: the losses use it as a target. Half-precision costs are solved
    in fp32; the plan has the cost's dtype.
    """
    if not isinstance(cost, Tensor) or cost.dim() not in (2, 3):
        shape = list(cost.shape) if isinstance(cost, Tensor) else type(cost).__name__
        raise LossError(f"sinkhorn: cost must be a tensor [B, N, M] or [N, M], got {shape}")
    if not cost.is_floating_point():
        raise LossError(f"sinkhorn: cost must be a floating-point tensor, got {cost.dtype}")
    if cost.shape[-2] == 0 or cost.shape[-1] == 0:
        raise LossError(f"sinkhorn: cost must have at least one row and one column, got {list(cost.shape)}")
    _check_options(eps, n_iters, tol, domain, check_every)
    if cost.dim() == 3 and cost.shape[0] == 0:
        return torch.empty_like(cost)
    single = cost.dim() == 2
    c = cost.detach().unsqueeze(0) if single else cost.detach()
    work = c.dtype if c.dtype in (torch.float32, torch.float64) else torch.float32
    c = c.to(work)
    # On CPU the set-up runs in NumPy: a cold torch op costs ~20 us (dispatcher code evicted from the caches
    # by whatever ran before), which dominated a 9 x 9 batch; NumPy's cost a few us.
    x = c.numpy() if c.device.type == "cpu" else c
    a_, b_ = _marginal(a, "a", x, work), _marginal(b, "b", x, work)
    c_min, b_, bound = _inspect(x, a_, b_, eps, given=a is not None or b is not None)
    kernel_route = domain == "auto" and bound <= _kernel_limit(work)
    if isinstance(x, np.ndarray):
        c_min, a_, b_ = (torch.from_numpy(np.array(t)) for t in (c_min, a_, b_))  # small: copies are cheap
    iterations = _kernel_iterations if kernel_route else _log_iterations
    with torch.autocast(device_type=c.device.type, enabled=False):
        plans = [
            iterations(c[g], c_min[g], eps, a_[g], b_[g], n_iters, tol, check_every) for g in _cache_groups(c)
        ]
    plan = plans[0] if len(plans) == 1 else torch.cat(plans)
    plan = plan.to(cost.dtype)
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


def _marginal(x: Optional[Tensor], name: str, cost: Array, dtype: torch.dtype) -> Array:
    """Marginal `name` ("a": rows, "b": columns) as `[B, size]` in the working `dtype`, of the cost's kind
    (NumPy array or tensor); uniform with mass 1 when omitted."""
    batch, size = cost.shape[0], cost.shape[1 if name == "a" else 2]
    if x is not None and (not isinstance(x, Tensor) or x.dim() not in (1, 2) or x.shape[-1] != size):
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise LossError(f"sinkhorn: {name} must have shape [{size}] or [{batch}, {size}], got {shape}")
    if x is not None and x.dim() == 2 and x.shape[0] != batch:
        raise LossError(f"sinkhorn: {name} has {x.shape[0]} rows but the cost has {batch} problems")
    if isinstance(cost, np.ndarray):
        if x is None:
            return np.full((batch, size), 1.0 / size, cost.dtype)
        return np.broadcast_to(x.detach().to(device="cpu", dtype=dtype).numpy(), (batch, size))
    if x is None:
        return cost.new_full((batch, size), 1.0 / size)
    return x.detach().to(device=cost.device, dtype=dtype).expand(batch, size)


def _inspect(cost: Array, a: Array, b: Array, eps: float, given: bool) -> tuple[Array, Array, float]:
    """Validate values and bound the kernel route's exponent range, with a single host sync.

    Takes NumPy arrays (CPU) or tensors. Returns the per-problem minimum cost `[B]`, `b` rescaled to the
    total mass of `a` and Lambda, the largest |log| any kernel-domain intermediate can reach (derivation in
    docs/losses.md). Marginals are checked only when `given`: the default uniform ones are valid, with
    ratio 1 and mass 1, so their terms of Lambda vanish (and skipping them saves ~20 small ops).
    """
    xp = np if isinstance(cost, np.ndarray) else torch
    flat = cost.reshape(cost.shape[0], -1)
    c_min = xp.amin(flat, 1)  # two passes beat torch.aminmax over a dim on CPU
    with np.errstate(all="ignore"):  # NumPy: bad values are reported below, as with torch
        # In float64, so a finite fp32 range cannot overflow: NaN or infinite exactly when an entry is.
        c_range = xp.asarray(xp.amax(flat, 1), dtype=xp.float64) - xp.asarray(c_min, dtype=xp.float64)
        bound = c_range * (2 / eps) + math.log(a.shape[-1] * b.shape[-1])
        checks = [xp.amax(c_range)]
        if given:
            mass_a, mass_b = a.sum(-1), b.sum(-1)
            bound = bound + _log_ratio(a) + _log_ratio(b) + xp.abs(xp.log(mass_a))
            checks += [
                xp.minimum(xp.amin(a), xp.amin(b)),
                xp.maximum(xp.amax(a), xp.amax(b)),
                xp.minimum(xp.amin(mass_a), xp.amin(mass_b)),
                xp.amax(xp.abs(mass_a - mass_b) / xp.maximum(mass_a, mass_b)),
            ]
            # Rounding leaves the masses a few ulps apart; matching them keeps the scalings from drifting.
            b = b * (mass_a / mass_b)[:, None]
        checks = [xp.asarray(t, dtype=xp.float64) for t in checks + [xp.amax(bound)]]
    max_range, *marginal_stats, max_bound = xp.stack(checks).tolist()
    if not math.isfinite(max_range):
        raise LossError("sinkhorn: cost contains NaN or infinite values")
    if marginal_stats:
        min_entry, max_entry, min_mass, mismatch = marginal_stats
        if not (min_entry >= 0 and math.isfinite(max_entry)):
            raise LossError("sinkhorn: marginals a and b must be finite and non-negative")
        if not min_mass > 0:
            raise LossError("sinkhorn: every problem needs marginals with positive total mass")
        if not mismatch <= _MASS_RTOL:
            raise LossError(f"sinkhorn: a and b must have equal total mass (relative mismatch {mismatch:.2e})")
    return c_min, b, max_bound


def _log_ratio(x: Array) -> Array:
    """log(max / smallest positive entry) per row; zero entries drop out of the iterations exactly."""
    xp = np if isinstance(x, np.ndarray) else torch
    smallest = xp.amin(xp.where(x > 0, x, math.inf), -1)
    return xp.log(xp.amax(x, -1) / smallest)


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
    # u starts at 1 on the support of a only: rows of zero mass then never enter K^T u, so a problem with
    # zero-mass rows follows the iterates of the same problem without them (padding changes nothing).
    u, v = (a_ > 0).to(a_.dtype), torch.ones_like(b_)
    ktu, kv = torch.empty_like(b_), torch.empty_like(a_)
    for it in range(n_iters):
        torch.bmm(u, kernel, out=ktu)  # (K^T u)^T
        if tol is not None and it > 0 and it % check_every == 0 and _l1_error(v * ktu, b_) < tol:
            break
        torch.div(b_, ktu, out=v)
        torch.bmm(v, kernel_t, out=kv)  # (K v)^T
        torch.div(a_, kv, out=u)
    return kernel.mul_(u.transpose(1, 2)).mul_(v)


def _log_iterations(
    cost: Tensor,
    c_min: Tensor,
    eps: float,
    a: Tensor,
    b: Tensor,
    n_iters: int,
    tol: Optional[float],
    check_every: int,
) -> Tensor:
    # The per-problem shift leaves the plan unchanged and keeps -C / eps finite and accurate for costs far
    # from zero (an offset of 100 at eps = 0.01 cost fp32 plans 500x in accuracy without it).
    neg = (c_min.view(-1, 1, 1) - cost).div_(eps)
    log_a, log_b = a.log(), b.log()
    # f starts at 0 on the support of a and at -inf off it (u = 1 and 0), as on the kernel route.
    f, g = torch.where(a > 0, 0.0, -math.inf).to(log_a.dtype), torch.zeros_like(log_b)
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


def _l1_error(marginal: Tensor, target: Tensor) -> float:
    """Largest L1 error over the batch, for `[B, 1, M]` (kernel route) or `[B, M]` (log route)."""
    return float((marginal - target).abs().reshape(len(target), -1).sum(-1).max())

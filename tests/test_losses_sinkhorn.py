"""`videolang.losses.sinkhorn` against POT, on both update routes, plus stability and input errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from videolang.losses import LossError, sinkhorn
from videolang.losses import transport
from videolang.utils import cpu


def random_problem(batch, n, m, *, seed, dtype=torch.float64, scale=1.0, uniform=False):
    gen = torch.Generator().manual_seed(seed)
    cost = torch.rand(batch, n, m, generator=gen, dtype=torch.float64) * scale
    if uniform:
        a = torch.full((batch, n), 1.0 / n, dtype=torch.float64)
        b = torch.full((batch, m), 1.0 / m, dtype=torch.float64)
    else:
        a = torch.rand(batch, n, generator=gen, dtype=torch.float64) + 0.05
        b = torch.rand(batch, m, generator=gen, dtype=torch.float64) + 0.05
        a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    return cost.to(dtype), a.to(dtype), b.to(dtype)


def pot_plans(cost, a, b, eps, iters, method="sinkhorn_log", stop=0.0):
    """POT's plan for each problem of the batch, solved one by one in float64 (POT's log-domain solver
    by default, which is stable for every problem used here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.stack(
            [
                ot.sinkhorn(ai, bi, ci, eps, method=method, numItermax=iters, stopThr=stop)
                for ci, ai, bi in zip(cost.double().numpy(), a.double().numpy(), b.double().numpy())
            ]
        )


@pytest.mark.parametrize("domain", ["auto", "log"])
@pytest.mark.parametrize("shape", [(6, 9, 9), (5, 7, 12), (4, 20, 6)])
def test_converged_plans_match_pot_fp64(domain, shape):
    cost, a, b = random_problem(*shape, seed=sum(shape))
    eps = 0.2
    ours = sinkhorn(cost, eps, n_iters=5000, a=a, b=b, tol=1e-13, domain=domain)
    ref = pot_plans(cost, a, b, eps, 5000, method="sinkhorn", stop=1e-14)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("domain", ["auto", "log"])
def test_converged_plans_match_pot_fp32(domain):
    cost, a, b = random_problem(6, 9, 14, seed=3, dtype=torch.float32)
    eps = 0.1
    ours = sinkhorn(cost, eps, n_iters=3000, a=a, b=b, tol=1e-6, domain=domain)
    assert ours.dtype == torch.float32
    ref = pot_plans(cost, a, b, eps, 5000, method="sinkhorn", stop=1e-14)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("domain", ["auto", "log"])
@pytest.mark.parametrize("iters", [1, 7, 50])
def test_same_iterates_as_pot_before_convergence(domain, iters):
    # Same update order as ot.sinkhorn: the plans agree at every iteration count, not only at the end.
    cost, a, b = random_problem(4, 9, 11, seed=iters, scale=2.0)
    eps = 0.05
    ours = sinkhorn(cost, eps, n_iters=iters, a=a, b=b, domain=domain)
    np.testing.assert_allclose(ours.numpy(), pot_plans(cost, a, b, eps, iters), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        ours.numpy(), pot_plans(cost, a, b, eps, iters, method="sinkhorn"), rtol=0, atol=1e-10
    )


def test_rows_exact_after_each_iteration():
    cost, a, b = random_problem(3, 8, 5, seed=11)
    plan = sinkhorn(cost, 0.05, n_iters=3, a=a, b=b)
    torch.testing.assert_close(plan.sum(-1), a, rtol=0, atol=1e-12)


def test_shared_marginal_vectors_broadcast_over_the_batch():
    cost, a, b = random_problem(4, 6, 6, seed=2)
    plan = sinkhorn(cost, 0.1, a=a[0], b=b[0])
    ref = sinkhorn(cost, 0.1, a=a[0].expand(4, 6), b=b[0].expand(4, 6))
    torch.testing.assert_close(plan, ref, rtol=0, atol=0)


def test_single_matrix_in_single_plan_out():
    cost, a, b = random_problem(1, 5, 7, seed=4)
    single = sinkhorn(cost[0], 0.1, a=a[0], b=b[0])
    assert single.shape == (5, 7)
    torch.testing.assert_close(single, sinkhorn(cost, 0.1, a=a, b=b)[0], rtol=0, atol=0)


def test_default_marginals_are_uniform():
    cost, _, _ = random_problem(2, 4, 6, seed=5)
    plan = sinkhorn(cost, 0.1, n_iters=2000, tol=1e-13)
    torch.testing.assert_close(plan.sum(-1), torch.full((2, 4), 0.25, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(-2), torch.full((2, 6), 1 / 6, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_for_small_eps_and_large_costs(dtype):
    # exp(-C / eps) underflows to 0 here; the log route must keep every plan finite and feasible.
    cost, a, b = random_problem(8, 9, 9, seed=6, dtype=dtype, scale=100.0, uniform=True)
    assert (torch.exp(-cost.double() / 0.01) == 0).any()  # the premise: the kernel underflows
    plan = sinkhorn(cost, 0.01, n_iters=500, a=a, b=b)
    assert torch.isfinite(plan).all()
    # Potentials reach C / eps = 1e4, so fp32 rounding alone moves row sums by ~1e4 * 6e-8 relative.
    torch.testing.assert_close(plan.sum(-1), a, rtol=1e-3 if dtype == torch.float32 else 1e-10, atol=0)
    if dtype == torch.float64:
        np.testing.assert_allclose(plan.numpy(), pot_plans(cost, a, b, 0.01, 500), rtol=0, atol=1e-8)


def test_auto_route_matches_log_route_at_the_bound():
    # Costs whose kernel-route bound sits just under the fp32 limit: the kernel updates must still
    # reproduce the log-domain plan (no underflow, no overflow).
    n = 9
    cost, a, b = random_problem(4, n, n, seed=8, dtype=torch.float32, uniform=True)
    spread = (cost.flatten(1).amax(1) - cost.flatten(1).amin(1)).max().item()
    eps = 2 * spread / (transport._kernel_limit(torch.float32) - math.log(n * n) - 0.5)
    auto = sinkhorn(cost, eps, n_iters=200, a=a, b=b)
    log = sinkhorn(cost, eps, n_iters=200, a=a, b=b, domain="log")
    assert torch.isfinite(auto).all()
    torch.testing.assert_close(auto, log, rtol=0, atol=1e-5)


def test_tolerance_stops_early_with_the_requested_accuracy():
    cost, a, b = random_problem(5, 10, 10, seed=9)
    loose = sinkhorn(cost, 0.05, n_iters=10_000, a=a, b=b, tol=1e-3)
    full = sinkhorn(cost, 0.05, n_iters=10_000, a=a, b=b)
    column_error = (loose.sum(-2) - b).abs().sum(-1).max().item()
    assert column_error < 1e-3
    assert (loose - full).abs().max().item() > 1e-9  # it did stop before the end


def test_zero_mass_entries_get_an_empty_row_and_column():
    cost, a, b = random_problem(2, 6, 5, seed=10)
    a[:, 2] = 0
    b[:, 4] = 0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    for domain in ("auto", "log"):
        plan = sinkhorn(cost, 0.1, n_iters=300, a=a, b=b, domain=domain)
        assert torch.isfinite(plan).all()
        assert plan[:, 2, :].abs().max() == 0 and plan[:, :, 4].abs().max() == 0
    rows = [0, 1, 3, 4, 5]
    reduced = sinkhorn(cost[:, rows][:, :, :4], 0.1, n_iters=300, a=a[:, rows], b=b[:, :4])
    torch.testing.assert_close(plan[:, rows][:, :, :4], reduced)
    # Not only at convergence: at every iteration count the plan is that of the problem without them.
    for iters in (1, 3, 20):
        for domain in ("auto", "log"):
            padded = sinkhorn(cost, 0.1, n_iters=iters, a=a, b=b, domain=domain)
            reduced = sinkhorn(cost[:, rows][:, :, :4], 0.1, n_iters=iters, a=a[:, rows], b=b[:, :4], domain=domain)
            torch.testing.assert_close(padded[:, rows][:, :, :4], reduced, rtol=1e-12, atol=1e-15)


def test_half_precision_costs_are_solved_in_fp32():
    cost, a, b = random_problem(3, 6, 6, seed=12, dtype=torch.float32)
    plan = sinkhorn(cost.bfloat16(), 0.1, a=a, b=b)
    assert plan.dtype == torch.bfloat16
    ref = sinkhorn(cost.bfloat16().float(), 0.1, a=a, b=b)
    torch.testing.assert_close(plan.float(), ref, rtol=1e-2, atol=1e-4)


def test_no_gradient_flows_through_the_plan_and_the_cost_is_untouched():
    cost = torch.rand(2, 4, 4, requires_grad=True)
    before = cost.detach().clone()
    for domain in ("auto", "log"):
        assert not sinkhorn(cost, 0.1, domain=domain).requires_grad
    assert torch.equal(cost.detach(), before)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cost=torch.rand(4)), "cost must be"),
        (dict(eps=0.0), "eps must be"),
        (dict(n_iters=0), "n_iters"),
        (dict(tol=-1.0), "tol"),
        (dict(domain="kernel"), "domain"),
        (dict(a=torch.full((5,), 0.2)), "a must have shape"),
        (dict(a=torch.full((3, 4), 0.25)), "a has 3 rows"),
        (dict(a=torch.tensor([0.5, 0.5, 0.5, -0.5])), "non-negative"),
        (dict(a=torch.zeros(4)), "positive total mass"),
        (dict(a=torch.full((4,), 0.5)), "equal total mass"),
        (dict(cost=torch.full((2, 4, 4), math.nan)), "NaN"),
    ],
)
def test_bad_input_raises_one_line_error(kwargs, message):
    args = dict(cost=torch.rand(2, 4, 4), eps=0.1)
    args.update(kwargs)
    with pytest.raises(LossError, match=message):
        sinkhorn(args.pop("cost"), args.pop("eps"), **args)


@pytest.mark.parametrize("domain", ["auto", "log"])
def test_cache_sized_groups_give_the_same_plans(monkeypatch, domain):
    cost, a, b = random_problem(7, 9, 8, seed=13)
    whole = sinkhorn(cost, 0.1, n_iters=30, a=a, b=b, domain=domain)
    # A budget of two problems per group splits the batch into 4 groups (the last one short).
    two_problems = 2 * (2 * 9 * 8 * cost.element_size())
    monkeypatch.setattr(transport, "_CPU_CACHE_BYTES_PER_THREAD", two_problems // torch.get_num_threads())
    assert len(transport._cache_groups(cost)) == 4
    grouped = sinkhorn(cost, 0.1, n_iters=30, a=a, b=b, domain=domain)
    torch.testing.assert_close(grouped, whole, rtol=0, atol=1e-15)


def test_inspection_agrees_between_numpy_and_torch():
    # CPU inputs are inspected in NumPy, accelerator inputs in torch: the same numbers and the same errors.
    cost, a, b = random_problem(4, 6, 5, seed=19)
    a[0, 2] = 0.0
    a = a / a.sum(-1, keepdim=True)
    for given in (False, True):
        t_min, t_b, t_bound = transport._inspect(cost, a, b, 0.1, given)
        n_min, n_b, n_bound = transport._inspect(cost.numpy(), a.numpy(), b.numpy(), 0.1, given)
        np.testing.assert_allclose(t_min.numpy(), n_min, rtol=0, atol=0)
        np.testing.assert_allclose(t_b.numpy(), n_b, rtol=1e-15, atol=0)
        assert t_bound == pytest.approx(n_bound, rel=1e-12)
    bad = b.clone()
    bad[1] *= 2
    for kind in (lambda x: x, lambda x: x.numpy()):
        with pytest.raises(LossError, match="equal total mass"):
            transport._inspect(kind(cost), kind(a), kind(bad), 0.1, True)


def test_marginals_that_require_grad_are_accepted():
    cost, a, b = random_problem(3, 6, 6, seed=15)
    plan = sinkhorn(cost, 0.1, a=a.requires_grad_(), b=b.requires_grad_())
    torch.testing.assert_close(plan, sinkhorn(cost, 0.1, a=a.detach(), b=b.detach()), rtol=0, atol=0)


def test_default_marginals_give_the_plan_of_explicit_uniform_ones():
    # Default marginals skip validation; the plan must be that of the same marginals passed explicitly.
    cost, a, b = random_problem(4, 7, 5, seed=16, uniform=True)
    torch.testing.assert_close(sinkhorn(cost, 0.1), sinkhorn(cost, 0.1, a=a, b=b), rtol=0, atol=1e-15)


def test_cache_sizes_read_from_sysfs_or_none(tmp_path, monkeypatch):
    for name, level, kind, size in [("index0", "1", "Data", "48K"), ("index1", "1", "Instruction", "64K"),
                                    ("index2", "2", "Unified", "2048K"), ("index3", "3", "Unified", "480M")]:
        (tmp_path / name).mkdir()
        for field, value in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / name / field).write_text(value + "\n")
    assert cpu.cache_bytes(1, tmp_path) == 48 << 10  # data, not instruction cache
    assert cpu.cache_bytes(2, tmp_path) == 2048 << 10
    assert cpu.cache_bytes(3, tmp_path) == 480 << 20
    assert cpu.cache_bytes(4, tmp_path) is None
    assert cpu.cache_bytes(2, tmp_path / "missing") is None
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: 2048 << 10)
    assert transport._l2_budget() == 2048 * 1024 * 3 // 4
    monkeypatch.setattr(cpu, "cache_bytes", lambda level: None)
    assert transport._l2_budget(default=123) == 123


def test_bfloat16_marginals_are_accepted_on_cpu():
    cost, a, b = random_problem(3, 5, 6, seed=20, dtype=torch.float32)
    a16 = a.bfloat16()
    a32 = a16.float()
    expected = sinkhorn(cost, 0.1, a=a32 / a32.sum(-1, keepdim=True), b=b)
    got = sinkhorn(cost, 0.1, a=a16 / a16.sum(-1, keepdim=True), b=b)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-2)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("cost", [torch.tensor([[[0, 1], [2, 1]]]), torch.zeros(1, 2, 2, dtype=torch.complex64)])
def test_non_float_costs_are_refused(cost):
    with pytest.raises(LossError, match="floating-point"):
        sinkhorn(cost, 1.0)


@pytest.mark.parametrize("offset", [0.0, 100.0, -3000.0])
def test_log_route_fp32_accuracy_does_not_depend_on_a_cost_offset(offset):
    # The log route shifts each problem by its minimum cost before dividing by eps; unshifted, an offset of
    # 100 at eps = 0.01 made fp32 plans ~500x less accurate. Reference: the same fp32 costs solved in fp64.
    cost, a, b = random_problem(4, 9, 9, seed=21, dtype=torch.float32)
    cost = cost + offset
    ref = sinkhorn(cost.double(), 0.01, n_iters=300, a=a.double(), b=b.double(), domain="log")
    got = sinkhorn(cost, 0.01, n_iters=300, a=a, b=b, domain="log")
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)


def test_huge_costs_with_a_tiny_eps_stay_finite():
    cost = torch.full((1, 2, 2), 1e30)
    cost[0, 0, 0] += 1e24
    plan = sinkhorn(cost, 1e-10, 5)
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(-1), torch.full((1, 2), 0.5))


def test_bad_values_raise_the_loss_error_not_a_numpy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LossError, match="NaN or infinite"):
            sinkhorn(torch.full((2, 3, 3), math.inf), 0.1)
        with pytest.raises(LossError, match="finite and non-negative"):
            sinkhorn(torch.rand(2, 3, 3), 0.1, a=torch.tensor([0.5, math.nan, 0.5]))
        with pytest.raises(LossError, match="finite and non-negative"):
            sinkhorn(torch.rand(2, 3, 3), 0.1, a=torch.tensor([0.5, math.inf, 0.5]))
        # A range over eps that overflows exp (and fp32 products of it) only sends the problem down the log route.
        assert torch.isfinite(sinkhorn(torch.rand(2, 3, 3) * 1e4, 1e-34, 5)).all()

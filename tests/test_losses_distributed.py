"""Two gloo processes computing the local-loss InfoNCE give the single-process loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from _dist_helpers import (
    LOSSES,
    contrastive_step,
    gather_inputs,
    gather_step,
    gather_worker,
    make_inputs,
    mean_terms_worker,
    worker,
)
from videolang.losses import gather_with_grad

WORLD = 2


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(WORLD, str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.distributed
@pytest.mark.parametrize("name", LOSSES)
def test_two_ranks_match_one_process(per_rank, name):
    inputs = make_inputs()
    single = contrastive_step(inputs, slice(None), name)
    ranks = [results[name] for results in per_rank]
    # Each rank's loss is the mean over its own rows; their average is the global loss.
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), single["loss"])
    # DDP / DeepSpeed average parameter gradients over ranks: that average is the global gradient.
    for param in ("w_video", "w_text", "log_scale"):
        torch.testing.assert_close(torch.stack([r[param] for r in ranks]).mean(0), single[param])
    # The gather's backward pass returns to each shard the gradient of the summed rank losses.
    shard = inputs["clips"].shape[0] // WORLD
    for rank, r in enumerate(ranks):
        expected = single["video"][rank * shard : (rank + 1) * shard] * WORLD
        torch.testing.assert_close(r["video"], expected)


def test_gather_is_identity_outside_distributed():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


@pytest.fixture(scope="module")
def gather_per_rank(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gather")
    mp.spawn(gather_worker, args=(WORLD, str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.distributed
def test_gather_backward_takes_non_contiguous_gradients(gather_per_rank):
    """Used as `x @ gathered.T`, the gathered rows receive a transposed (non-contiguous) gradient. Each
    shard's gradient must be that of the single process on the whole batch, for the summed rank losses."""
    implementation = "function"
    inputs = gather_inputs()
    single, _ = gather_step(inputs, slice(None), lambda x: x * 1.0)
    shard = inputs["x"].shape[0] // WORLD
    for rank, results in enumerate(gather_per_rank):
        assert not results[implementation + "/contiguous"]  # the case under test did arise
        torch.testing.assert_close(results[implementation], single[rank * shard : (rank + 1) * shard])
        torch.testing.assert_close(results[implementation + "/gathered"], inputs["x"], rtol=0, atol=0)
        assert results[implementation + "/type"]  # a plain tensor, not an async wrapper


@pytest.mark.distributed
def test_logged_means_reduce_the_union_of_keys(tmp_path):
    # Rank 0 logs a key rank 1 lacks: no hang, and each mean is summed values / summed counts.
    mp.spawn(mean_terms_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got == pytest.approx({"loss": (2.0 + 4.0) / 4, "self_sim/video": 0.5})

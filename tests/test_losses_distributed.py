"""Two gloo processes computing the local-loss InfoNCE give the single-process loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from _dist_helpers import LOSSES, contrastive_step, make_inputs, worker
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

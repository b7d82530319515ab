"""Shared by the distributed loss test: one training-like step of every contrastive loss.

`contrastive_step` runs on a shard (one rank) or on the whole batch (one process); `worker` is the
per-rank entry point started by `torch.multiprocessing.spawn`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from videolang.losses import gather_with_grad, info_nce, level_info_nce, rectified_info_nce

LOSSES = ("info_nce", "masked", "rectified", "levels")


def make_inputs(batch: int = 8, d_in: int = 12, dim: int = 6) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    kw = dict(generator=gen, dtype=torch.float64)
    clips = torch.randn(batch, d_in, **kw)
    return {
        "clips": clips,
        "captions": clips + 0.5 * torch.randn(batch, d_in, **kw),
        "w_video": torch.randn(d_in, dim, **kw),
        "w_text": torch.randn(d_in, dim, **kw),
        # Every shard of 4 has the same number of valid samples and of samples per level, so the mean
        # of the per-rank losses is the single-process loss (see docs/losses.md).
        "mask": torch.tensor([True, True, False, True] * (batch // 4)),
        "levels": torch.tensor([0, 1, 0, 1] * (batch // 4)),
    }


def contrastive_step(inputs: dict[str, torch.Tensor], rows: slice, name: str) -> dict[str, torch.Tensor]:
    """Loss and gradients (projection weights, logit scale, this shard's features) of one loss."""
    w_video = inputs["w_video"].clone().requires_grad_()
    w_text = inputs["w_text"].clone().requires_grad_()
    log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    video = F.normalize(inputs["clips"][rows] @ w_video, dim=-1)
    text = F.normalize(inputs["captions"][rows] @ w_text, dim=-1)
    video.retain_grad()
    scale = log_scale.exp()
    if name == "info_nce":
        loss = info_nce(video, text, scale)
    elif name == "masked":
        loss = info_nce(video, text, scale, mask=inputs["mask"][rows])
    elif name == "rectified":
        loss = rectified_info_nce(video, text, scale, beta=0.3, eps=1.0)
    else:
        terms = level_info_nce(video, text, scale, inputs["levels"][rows], {"phase": 1.0, "step": 0.5})
        loss = terms["level/phase"] + 0.5 * terms["level/step"]
    loss.backward()
    return {
        "loss": loss.detach(),
        "w_video": w_video.grad,
        "w_text": w_text.grad,
        "log_scale": log_scale.grad,
        "video": video.grad,
    }


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        inputs = make_inputs()
        shard = inputs["clips"].shape[0] // world
        rows = slice(rank * shard, (rank + 1) * shard)
        results = {name: contrastive_step(inputs, rows, name) for name in LOSSES}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def gather_inputs(rows: int = 8, dim: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {
        "x": torch.randn(rows, dim, generator=gen, dtype=torch.float64),
        "weight": torch.randn(rows, rows, generator=gen, dtype=torch.float64),
    }


def gather_loss(x: torch.Tensor, gathered: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A loss of the rows `x` against all gathered rows, logits `x gathered^T` as in the contrastive
    losses. Written as an einsum, whose backward hands `gathered` a transposed, non-contiguous gradient
    (`x @ gathered.T` gets a contiguous one from torch 2.13's layout-matching matmul backward; older
    releases and other ops differ). The test checks that the non-contiguous case did arise."""
    return (torch.tanh(torch.einsum("id,jd->ij", x, gathered)) * weight).sum()


def gather_step(inputs: dict[str, torch.Tensor], rows: slice, gather) -> tuple[torch.Tensor, bool]:
    """Gradient of `gather_loss` with respect to this shard's rows (the whole batch in one process), and
    whether the gradient that reached the gathered tensor was contiguous."""
    x = inputs["x"][rows].clone().requires_grad_()
    gathered = gather(x)
    contiguous = []
    gathered.register_hook(lambda grad: contiguous.append(grad.is_contiguous()))
    gather_loss(x, gathered, inputs["weight"][rows]).backward()
    return x.grad, all(contiguous)


def gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Per rank, the shard's gradient through `gather_with_grad`, with each gather implementation."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        inputs = gather_inputs()
        shard = inputs["x"].shape[0] // world
        rows = slice(rank * shard, (rank + 1) * shard)
        results = {}
        for implementation in ("function",):
            grad, contiguous = gather_step(inputs, rows, gather_with_grad)
            results[implementation] = grad
            results[implementation + "/contiguous"] = torch.tensor(contiguous)
            # The gathered tensor is a plain tensor holding every rank's rows in rank order.
            gathered = gather_with_grad(inputs["x"][rows])
            results[implementation + "/gathered"] = gathered.detach().clone()
            results[implementation + "/type"] = torch.tensor(type(gathered) is torch.Tensor)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def mean_terms_worker(rank: int, world: int, init: str, out: str) -> None:
    """Ranks that logged different keys: rank 0 a diagnostic that rank 1 lacks."""
    from videolang.train.trainer import mean_terms

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        sums = {"loss": torch.tensor(2.0 + 2 * rank)}
        counts = {"loss": 2}
        if rank == 0:
            sums["self_sim/video"], counts["self_sim/video"] = torch.tensor(0.5), 1
        result = mean_terms(sums, counts, torch.device("cpu"))
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()

"""DataLoader construction: deterministic, shardable, resumable order.

Every rank gets a disjoint shard of a permutation drawn from (seed, epoch), so epochs reshuffle the same
way on every run and a resumed run can skip exactly the batches it already consumed.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ShardedSampler(Sampler[int]):
    """Permutation of `range(len(dataset))` from (seed, epoch), padded to a multiple of `world_size`
    (repeating the first indices, as `DistributedSampler` does) and strided by rank.

    With `groups` (a group id per index, e.g. the video of each pair), the permutation shuffles the groups
    and the members within each group but keeps every group contiguous, and each rank takes a contiguous
    block of it, so consecutive samples (one batch) come from as few groups as possible."""

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, groups: Optional[list[int]] = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        if groups is not None and len(groups) != length:
            raise ValueError(f"groups has {len(groups)} entries for {length} samples")
        self.groups = groups
        self.epoch = 0
        self.start = 0  # samples of this rank's shard to skip (resume mid-epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _grouped(self, g: Optional[torch.Generator]) -> list[int]:
        members: dict[int, list[int]] = {}
        for i, group in enumerate(self.groups or []):
            members.setdefault(group, []).append(i)
        blocks = list(members.values())
        if g is not None:
            blocks = [blocks[k] for k in torch.randperm(len(blocks), generator=g).tolist()]
            blocks = [[b[k] for k in torch.randperm(len(b), generator=g).tolist()] for b in blocks]
        return [i for b in blocks for i in b]

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch) if self.shuffle else None
        if self.groups is not None:
            order = self._grouped(g)
            per = self.length // self.world_size if self.drop_last else -(-self.length // self.world_size)
            order += order[: per * self.world_size - len(order)]  # pad (no-op with drop_last)
            return order[self.rank * per : (self.rank + 1) * per]
        if g is not None:
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            order = order[: self.length - self.length % self.world_size]
        else:
            pad = (-self.length) % self.world_size
            order += (order * (pad // max(len(order), 1) + 1))[:pad]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        n = self.length // self.world_size if self.drop_last else -(-self.length // self.world_size)
        return max(n - self.start, 0)


def set_epoch(loader: DataLoader, epoch: int, start: int = 0) -> None:
    """Start epoch `epoch` (skipping `start` samples of this rank's shard): reshuffles the sampler and
    reseeds the dataset's per-item randomness (frame offsets, crops, flips, paragraph windows)."""
    loader.sampler.set_epoch(epoch, start)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def build_loader(dataset: Dataset, batch_size: int, collate_fn: Callable, *, shuffle: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 drop_last: bool = False, epoch: int = 0, pin_memory: Optional[bool] = None) -> DataLoader:
    """A DataLoader whose sampler is a `ShardedSampler`; call `set_epoch(loader, e)` before each epoch."""
    sampler = ShardedSampler(len(dataset), rank=rank, world_size=world_size, shuffle=shuffle, seed=seed,
                             drop_last=drop_last)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
        drop_last=drop_last, pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=False,  # workers re-fork each epoch, so they see the epoch set_epoch gave
    )
    set_epoch(loader, epoch)
    return loader

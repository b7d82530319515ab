"""Training streams: the objectives' data, drawn in an order that is a pure function of a few integers.

Each stream (`pairs`, `paragraphs`, `captions`) is a dataset with its own sharded, shuffled loader. Which
stream a micro-step draws from is a function of (seed, micro-step) alone, so every rank draws the same
stream at the same micro-step (their collectives match) and a resumed run draws the same sequence. A
stream's position is (epoch, batches consumed in the epoch): resuming rebuilds its loader at that
epoch and skips exactly the consumed samples, without reading them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from videolang.config import Config
from videolang.data.collate import TextCollator
from videolang.data.datasets import ClipTextDataset, ParagraphDataset
from videolang.data.loader import ShardedSampler
from videolang.data.transforms import build_transform
from videolang.errors import ConfigError, VideolangError

STREAMS = ("pairs", "paragraphs", "captions")


def stream_schedule(weights: dict[str, float], seed: int) -> Callable[[int], str]:
    """micro-step -> stream name, drawn with probability proportional to `weights` from (seed, step)."""
    names = [name for name in STREAMS if weights.get(name, 0) > 0]
    if not names:
        raise ConfigError("data.streams: every stream has weight 0; give one of pairs, paragraphs, captions a weight")
    if len(names) == 1:
        only = names[0]
        return lambda step: only
    cum, total = [], 0.0
    for name in names:
        total += weights[name]
        cum.append(total)

    def pick(step: int) -> str:
        u = random.Random(f"stream:{seed}:{step}").random() * total
        return next(name for name, c in zip(names, cum) if u < c)

    return pick


@dataclass
class StreamPosition:
    """Where a stream is: `epoch` and how many batches of it this rank consumed in that epoch."""

    epoch: int = 0
    batches: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}


class Stream:
    """One objective's loader with a resumable position; `next()` returns a collated batch."""

    def __init__(self, name: str, dataset: Dataset, collate: Callable, *, batch_size: int, seed: int,
                 rank: int, world_size: int, num_workers: int, position: Optional[StreamPosition] = None,
                 groups: Optional[list[int]] = None):
        per_epoch = len(dataset) // (world_size * batch_size)
        if per_epoch < 1:
            raise VideolangError(
                f"data stream '{name}': {len(dataset)} samples cannot fill one batch of {batch_size} on each of "
                f"{world_size} process(es); lower train.batch_size or add data"
            )
        self.name, self.dataset, self.collate = name, dataset, collate
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_workers = num_workers
        self.groups = groups
        self.batches_per_epoch = per_epoch
        self.position = position or StreamPosition()
        self._iter: Optional[Iterator] = None

    def _open(self) -> None:
        """A loader for the current epoch that starts after the consumed batches."""
        pos = self.position
        sampler = ShardedSampler(len(self.dataset), rank=self.rank, world_size=self.world_size, shuffle=True,
                                 seed=self.seed, drop_last=True, groups=self.groups)
        sampler.set_epoch(pos.epoch, start=pos.batches * self.batch_size)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(pos.epoch)
        # The loader's own generator (worker base seeds) is seeded from the position, never drawn from
        # the global torch RNG: creating a loader on resume must not shift the model's random stream.
        generator = torch.Generator().manual_seed(hash_seed(self.seed, self.name, pos.epoch, pos.batches))
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
            num_workers=self.num_workers, drop_last=True, generator=generator,
            pin_memory=torch.cuda.is_available(), persistent_workers=False,
            prefetch_factor=2 if self.num_workers > 0 else None,
        )
        self._iter = iter(loader)

    def next(self) -> dict[str, Any]:
        if self._iter is None:
            self._open()
        try:
            batch = next(self._iter)
        except StopIteration:
            self.position = StreamPosition(self.position.epoch + 1, 0)
            self._open()
            batch = next(self._iter)
        self.position = StreamPosition(self.position.epoch, self.position.batches + 1)
        if self.position.batches >= self.batches_per_epoch:  # the epoch is used up: the next call reopens
            self.position = StreamPosition(self.position.epoch + 1, 0)
            self._iter = None
        return batch

    def close(self) -> None:
        self._iter = None


def hash_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions."""
    return random.Random(":".join(map(str, parts))).getrandbits(63)


@dataclass
class CaptionTargets:
    """Caption-head targets: the script (`[shot] … [camera] … [content] …`) when a segment has one,
    else its caption; tokenised with the text tower's tokenizer up to `max_len`."""

    tokenizer: Any
    max_len: int
    format_script: Callable[[str, str, str], str]

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        texts = []
        for it in items:
            script = it.get("script")
            if script:
                texts.append(self.format_script(script.get("shot_type", ""), script.get("camera_movement", ""),
                                                script.get("content", "") or it["caption"]))
            else:
                texts.append(it["caption"])
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt")
        return {"caption_ids": enc["input_ids"], "caption_mask": enc["attention_mask"]}


class TrainCollator:
    """`TextCollator` plus what the losses need: level indices, in-batch parents, caption targets."""

    def __init__(self, text: TextCollator, levels: tuple[str, ...], captions: Optional[CaptionTargets]):
        self.text, self.levels, self.captions = text, levels, captions

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.text(items)
        if "level" in items[0]:
            batch["levels"] = torch.tensor([self.levels.index(it["level"]) for it in items])
            batch["parent"] = parents_in_batch(items)
        if self.captions is not None:
            batch.update(self.captions(items))
        return batch


def parents_in_batch(items: list[dict[str, Any]]) -> torch.Tensor:
    """For each item, the batch index of its parent segment (segment id "0.2" is the parent of "0.2.1"
    in the same video), or -1 when the parent is not in the batch."""
    where = {(it["video_id"], it["segment_id"]): i for i, it in enumerate(items)}
    out = []
    for it in items:
        sid = it["segment_id"]
        parent = sid.rsplit(".", 1)[0] if "." in sid else None
        out.append(where.get((it["video_id"], parent), -1) if parent is not None else -1)
    return torch.tensor(out, dtype=torch.long)


@dataclass
class StreamSet:
    """The configured streams and the schedule that picks one per micro-step."""

    streams: dict[str, Stream]
    pick: Callable[[int], str]
    failures: list = field(default_factory=list)

    def next(self, micro_step: int) -> tuple[str, dict[str, Any]]:
        name = self.pick(micro_step)
        return name, self.streams[name].next()

    def positions(self) -> dict[str, dict[str, int]]:
        return {name: s.position.to_dict() for name, s in self.streams.items()}

    def close(self) -> None:
        for s in self.streams.values():
            s.close()


def build_streams(cfg: Config, tokenizer: Any, text_max_len: int, *, rank: int, world_size: int,
                  positions: Optional[dict[str, dict[str, int]]] = None, caption_max_len: int = 64,
                  format_script: Optional[Callable] = None) -> StreamSet:
    """Datasets and loaders of every stream with a positive weight, at the saved `positions`."""
    from videolang.config import LEVELS

    d = cfg.data
    if d.manifest is None:
        raise ConfigError("data.manifest: no training manifest given (a JSONL file, a list or a glob)")
    size = (d.image_size, d.image_size)
    transform = build_transform(size, train=d.augment)
    decode = dict(num_frames=d.num_frames, sampling=d.sampling, backend=d.backend, video_root=d.video_root,
                  split=d.split, transform=transform, seed=cfg.run.seed)
    if d.max_text_len is not None and d.max_text_len > text_max_len:
        raise ConfigError(
            f"data.max_text_len: {d.max_text_len} tokens exceed what the text tower reads ({text_max_len}); "
            "lower it, or set model.long_text: chunk to encode long captions whole"
        )
    max_len = d.max_text_len or text_max_len  # one owner of text length: the text tower
    positions = positions or {}
    streams: dict[str, Stream] = {}
    for name in STREAMS:
        if d.streams.get(name, 0) <= 0:
            continue
        captions, groups = None, None
        if name == "pairs":
            dataset: Dataset = ClipTextDataset(d.manifest, list(d.levels), **decode)
            if d.group_by_video:
                ids: dict[str, int] = {}
                groups = [ids.setdefault(p.video_id, len(ids)) for p in dataset.pairs]
        elif name == "paragraphs":
            dataset = ParagraphDataset(d.manifest, source=d.paragraph_source, clips_per_video=d.clips_per_video,
                                       **decode)
        else:
            dataset = ClipTextDataset(d.manifest, d.caption_level, **decode)
            captions = CaptionTargets(tokenizer, caption_max_len, format_script)
        collate = TrainCollator(TextCollator(tokenizer, max_len), LEVELS, captions)
        pos = StreamPosition(**positions[name]) if name in positions else None
        batch = cfg.train.batch_size
        if name == "paragraphs":  # a paragraph brings K clips: about as many clips per micro-batch as the others
            batch = d.videos_per_batch or max(1, cfg.train.batch_size // d.clips_per_video)
        streams[name] = Stream(name, dataset, collate, batch_size=batch, seed=hash_seed(cfg.run.seed, name) % 2**31,
                               rank=rank, world_size=world_size, num_workers=d.num_workers, position=pos,
                               groups=groups)
    return StreamSet(streams, stream_schedule(d.streams, cfg.run.seed))

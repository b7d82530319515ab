"""Map-style datasets over manifests: clip-caption pairs and video paragraphs.

Items are plain dicts of tensors and strings so they pickle cheaply across DataLoader workers.
Undecodable videos never end a run: the dataset substitutes another sample and records the failure in
the item itself (`failures`), so counts survive worker processes and reach the main process through
the batch, where a `DecodeFailureLog` counts them per file and logs each bad file once.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from videolang.data.manifest import ClipPair, VideoRecord, clip_pairs, load_manifests
from videolang.errors import VideolangError

log = logging.getLogger(__name__)

# Give up on an item after this many consecutive undecodable substitutes: the corpus is broken.
MAX_SUBSTITUTES = 50


ManifestSource = Union[str, Path, Sequence[str], Sequence[Path], Sequence[VideoRecord]]


def _records(manifest: ManifestSource, video_root: str | Path | None) -> list[VideoRecord]:
    """Records of one manifest, of several (a list), or of every file a glob matches (sharded corpora)."""
    items = [manifest] if isinstance(manifest, (str, Path)) else list(manifest)
    if items and isinstance(items[0], (str, Path)):
        return load_manifests(items, video_root=video_root)
    return items


def _describe(manifest: ManifestSource) -> str:
    if isinstance(manifest, (str, Path)):
        return str(manifest)
    items = list(manifest)
    return ", ".join(map(str, items)) if items and isinstance(items[0], (str, Path)) else "the given records"


def _item_rng(seed: int, epoch: int, index: int, attempt: int, stream: int = 0) -> random.Random:
    """Per-item randomness that depends only on (seed, epoch, index, attempt): identical whatever worker
    runs it, and across Python versions (a string seed is hashed with SHA-512, unlike `hash()` of a
    tuple, whose algorithm has changed between releases). `stream` separates independent uses."""
    return random.Random(f"{seed}:{epoch}:{index}:{attempt}:{stream}")


@dataclass
class DecodeFailureLog:
    """Main-process tally of undecodable files, fed from batches; each file is logged once."""

    counts: Counter

    def __init__(self) -> None:
        self.counts = Counter()

    def update(self, failures: Sequence[tuple[str, str]]) -> None:
        for path, reason in failures:
            if path not in self.counts:
                log.warning("skipping undecodable video %s: %s", path, reason)
            self.counts[path] += 1

    def summary(self) -> str:
        if not self.counts:
            return "no undecodable videos"
        return f"{len(self.counts)} undecodable video file(s), {sum(self.counts.values())} skipped read(s)"


Transform = Callable[[torch.Tensor, str, random.Random], tuple[torch.Tensor, str]]


class _DecodingDataset(Dataset):
    """Clip reading, transforms and the retry/substitute logic; subclasses define `_load(index, rng)`."""

    def __init__(self, *, seed: int, backend: str, num_frames: int, sampling: str,
                 size: Optional[tuple[int, int]], transform: Optional[Transform]):
        self.seed = seed
        self.epoch = 0
        self.backend = backend
        self.num_frames = num_frames
        self.sampling = sampling
        self.size = size
        self.transform = transform
        self._bad_files: set[str] = set()  # per worker: known-bad files are skipped without a decode

    def _read(self, pair: ClipPair, rng: random.Random) -> tuple[torch.Tensor, str]:
        """The pair's clip (uint8 [T, H, W, 3]) and caption, after the transform."""
        from videolang.data.video import read_clip

        frames = read_clip(pair.path, pair.start, pair.end, num_frames=self.num_frames, size=self.size,
                           backend=self.backend, sampling=self.sampling, generator=rng)
        if self.transform is None:
            return frames, pair.caption
        return self.transform(frames, pair.caption, rng)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _path_of(self, index: int) -> str:
        raise NotImplementedError

    def _load(self, index: int, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        from videolang.data.video import VideoDecodeError

        failures: list[tuple[str, str]] = []
        current = index
        for attempt in range(MAX_SUBSTITUTES):
            path = self._path_of(current)
            if path in self._bad_files:
                failures.append((path, "known undecodable"))
            else:
                try:
                    item = self._load(current, _item_rng(self.seed, self.epoch, index, attempt))
                except VideoDecodeError as e:
                    self._bad_files.add(path)
                    failures.append((path, str(e)))
                else:
                    item["index"] = current
                    item["failures"] = failures
                    return item
            # The substitute comes from its own stream, so it does not depend on how far `_load` got
            # or on which worker already knew the file was bad.
            current = _item_rng(self.seed, self.epoch, index, attempt, stream=1).randrange(len(self))
        raise VideolangError(
            f"{MAX_SUBSTITUTES} consecutive undecodable samples starting at item {index} "
            f"(last file: {path}); check the corpus with `videolang manifest validate --check-files`"
        )


class ClipTextDataset(_DecodingDataset):
    """One item per segment at a level (`phase`/`step`/`task`/`clip`) or per narration sentence; `level`
    may be a list of levels (the hierarchical objective mixes them in one stream).

    Item: `frames` uint8 [T, H, W, 3] (after `transform`), `caption`, `video_id`, `segment_id`,
    `level`, `label`, `script` (dict or None), `start`, `end`, `index`, `failures`.
    """

    def __init__(
        self,
        manifest: ManifestSource,
        level: str | Sequence[str] = "clip",
        *,
        split: Optional[str] = None,
        num_frames: int = 8,
        sampling: str = "uniform",
        size: Optional[tuple[int, int]] = None,
        backend: str = "auto",
        transform: Optional[Transform] = None,
        video_root: str | Path | None = None,
        seed: int = 0,
    ):
        super().__init__(seed=seed, backend=backend, num_frames=num_frames, sampling=sampling, size=size,
                         transform=transform)
        levels = [level] if isinstance(level, str) else list(level)
        records = _records(manifest, video_root)
        self.pairs: list[ClipPair] = [p for name in levels for p in clip_pairs(records, name, split=split)]
        if not self.pairs:
            raise VideolangError(f"{_describe(manifest)}: no captioned segments at level '{'/'.join(levels)}'"
                                 + (f" in split '{split}'" if split else ""))
        self.level = level

    def __len__(self) -> int:
        return len(self.pairs)

    def _path_of(self, index: int) -> str:
        return str(self.pairs[index].path)

    def _load(self, index: int, rng: random.Random) -> dict[str, Any]:
        pair = self.pairs[index]
        frames, caption = self._read(pair, rng)
        return {
            "frames": frames, "caption": caption, "video_id": pair.video_id, "segment_id": pair.segment_id,
            "level": pair.level, "label": pair.label, "script": pair.script, "start": pair.start, "end": pair.end,
        }


class ParagraphDataset(_DecodingDataset):
    """One item per video: `K` time-ordered consecutive clips with their (noisy) captions.

    The clips come from the narration track (Norton-style training on raw speech) or from the
    segments of a level. Training takes a random window of `K` consecutive sentences; evaluation the
    first `K`. Videos with fewer sentences are padded and `mask` marks the real clips.
    Item: `frames` uint8 [K, T, H, W, 3], `captions` (K strings, "" for padding), `mask` bool [K],
    `starts`/`ends` [K], `video_id`, `index`, `failures`.
    """

    def __init__(
        self,
        manifest: ManifestSource,
        *,
        source: str = "narration",
        clips_per_video: int = 8,
        split: Optional[str] = None,
        num_frames: int = 4,
        sampling: str = "uniform",
        random_window: bool = True,
        size: Optional[tuple[int, int]] = None,
        backend: str = "auto",
        transform: Optional[Transform] = None,
        video_root: str | Path | None = None,
        seed: int = 0,
    ):
        super().__init__(seed=seed, backend=backend, num_frames=num_frames, sampling=sampling, size=size,
                         transform=transform)
        self.videos: list[tuple[str, Path, list[ClipPair]]] = []
        for video in _records(manifest, video_root):
            if split is not None and video.split != split:
                continue
            pairs = sorted(clip_pairs([video], source), key=lambda p: (p.start, p.end))
            if pairs:
                self.videos.append((video.video_id, video.resolved_path, pairs))
        if not self.videos:
            raise VideolangError(f"no video has '{source}' clips" + (f" in split '{split}'" if split else ""))
        self.k = clips_per_video
        self.random_window = random_window

    def __len__(self) -> int:
        return len(self.videos)

    def _path_of(self, index: int) -> str:
        return str(self.videos[index][1])

    def _load(self, index: int, rng: random.Random) -> dict[str, Any]:
        video_id, path, pairs = self.videos[index]
        first = rng.randrange(len(pairs) - self.k + 1) if self.random_window and len(pairs) > self.k else 0
        window = pairs[first : first + self.k]
        clips, captions = [], []
        for pair in window:
            frames, caption = self._read(pair, rng)
            clips.append(frames)
            captions.append(caption)
        n_pad = self.k - len(window)
        frames = torch.stack(clips + [torch.zeros_like(clips[0])] * n_pad)
        mask = torch.tensor([True] * len(window) + [False] * n_pad)
        starts = torch.tensor([p.start for p in window] + [0.0] * n_pad)
        ends = torch.tensor([p.end for p in window] + [0.0] * n_pad)
        return {
            "frames": frames, "captions": captions + [""] * n_pad, "mask": mask,
            "starts": starts, "ends": ends, "video_id": video_id,
        }

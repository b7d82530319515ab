"""Embedding extraction for evaluation and `videolang extract`: clips, per-frame features, texts.

Clips are read by a `DataLoader` (decoding in worker processes while the model encodes the previous
batch), in the order given, so results line up with the input. Undecodable videos are skipped, counted
and returned to the caller, never raised, so one bad file cannot end an evaluation: each worker
remembers the files that failed and does not decode them again, and the main process logs each file
once (`DecodeFailureLog`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from videolang.data.datasets import DecodeFailureLog
from videolang.data.manifest import ClipPair, VideoRecord, frame_times
from videolang.data.video import VideoDecodeError, read_clip

EncodeFn = Callable[[Tensor], Tensor]  # uint8 [B, T, H, W, 3] -> [B, D]


@dataclass
class ClipFeatures:
    embeddings: Tensor  # [N_ok, D], rows of the pairs that decoded
    kept: list[int]  # indices into the input pairs of those rows
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason


def _device_of(encode: EncodeFn) -> torch.device:
    owner = getattr(encode, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        try:
            return next(owner.parameters()).device
        except StopIteration:
            pass
    return torch.device("cpu")


def _loader(dataset: Dataset, batch_size: Optional[int], num_workers: int, collate: Optional[Callable]) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                      prefetch_factor=2 if num_workers > 0 else None, persistent_workers=False)


class _ClipReads(Dataset):
    """Item `i`: `(i, frames or None, (path, reason) or None)` for pair `i`, sampled uniformly."""

    def __init__(self, pairs: Sequence[ClipPair], num_frames: int, size: Optional[tuple[int, int]], backend: str):
        self.pairs, self.num_frames, self.size, self.backend = pairs, num_frames, size, backend
        self._bad: dict[str, str] = {}  # per worker: files that failed are not decoded again

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[int, Optional[Tensor], Optional[tuple[str, str]]]:
        pair = self.pairs[i]
        path = str(pair.path)
        if path in self._bad:
            return i, None, (path, self._bad[path])
        try:
            frames = read_clip(path, pair.start, pair.end, num_frames=self.num_frames, size=self.size,
                               backend=self.backend)
        except VideoDecodeError as e:
            self._bad[path] = str(e)
            return i, None, (path, str(e))
        return i, frames, None


def _collate_clips(items: list) -> tuple[list[int], Optional[Tensor], list[tuple[str, str]]]:
    ok = [(i, f) for i, f, _ in items if f is not None]
    frames = torch.stack([f for _, f in ok]) if ok else None
    return [i for i, _ in ok], frames, [err for _, _, err in items if err is not None]


def clip_batches(
    pairs: Sequence[ClipPair],
    *,
    num_frames: int = 8,
    size: Optional[tuple[int, int]] = None,
    batch_size: int = 16,
    backend: str = "auto",
    num_workers: int = 0,
    failed: Optional[dict[str, str]] = None,
    progress: bool = False,
    desc: str = "clips",
) -> Iterator[tuple[list[int], Tensor]]:
    """`(indices into pairs, uint8 frames [b, T, H, W, 3])` for every batch with a decodable clip, in
    input order; undecodable files are recorded in `failed` (path -> reason) and logged once."""
    failed = {} if failed is None else failed
    log = DecodeFailureLog()
    loader = _loader(_ClipReads(pairs, num_frames, size, backend), batch_size, num_workers, _collate_clips)
    with tqdm(total=len(pairs), desc=desc, disable=not progress, leave=False) as bar:
        for indices, frames, errors in loader:
            log.update(errors)
            for path, reason in errors:
                failed.setdefault(path, reason)
            bar.update(len(indices) + len(errors))
            if frames is not None:
                yield indices, frames


@torch.no_grad()
def clip_embeddings(
    encode: EncodeFn,
    pairs: Sequence[ClipPair],
    *,
    num_frames: int = 8,
    size: Optional[tuple[int, int]] = None,
    batch_size: int = 16,
    backend: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "clips",
) -> ClipFeatures:
    """Embed each pair's clip (uniform sampling); pairs whose video fails to decode are skipped."""
    device = _device_of(encode)
    out: list[Tensor] = []
    kept: list[int] = []
    failed: dict[str, str] = {}
    for indices, frames in clip_batches(pairs, num_frames=num_frames, size=size, batch_size=batch_size,
                                        backend=backend, num_workers=num_workers, failed=failed,
                                        progress=progress, desc=desc):
        out.append(encode(frames.to(device)).float().cpu())
        kept.extend(indices)
    dim = out[0].shape[1] if out else 0
    return ClipFeatures(torch.cat(out) if out else torch.zeros(0, dim), kept, failed)


class _FrameChunks(Dataset):
    """Item: one chunk of one video's frame windows, `(video index, start, windows [b, window, H, W, 3]
    or None, the decode error's (path, reason, detail) or None)`. A video is read a chunk at a time (plus the window's context), so memory
    does not grow with its length."""

    def __init__(self, videos: Sequence[VideoRecord], fps: float, window: int, size: Optional[tuple[int, int]],
                 chunk: int, backend: str):
        self.videos, self.fps, self.window, self.size, self.backend = videos, fps, window, size, backend
        self.counts = [len(frame_times(v.span_end, fps)) for v in videos]
        self.items = [(vi, s, min(s + chunk, n)) for vi, n in enumerate(self.counts) for s in range(0, n, chunk)]
        self._bad: dict[int, tuple[str, str, str]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[int, int, Optional[Tensor], Optional[tuple[str, str, str]]]:
        vi, s, e = self.items[k]
        if vi in self._bad:
            return vi, s, None, self._bad[vi]
        fps, n, half = self.fps, self.counts[vi], self.window // 2
        lo, hi = max(s - half, 0), min(e + self.window - half - 1, n)
        try:
            # fps sampling starts at `start`: begin half an interval in to hit the middles.
            frames = read_clip(self.videos[vi].resolved_path, lo / fps + 0.5 / fps, hi / fps, num_frames=hi - lo,
                               size=self.size, backend=self.backend, sampling="fps", fps=fps)
        except VideoDecodeError as err:  # sent as its fields: the exception itself does not pickle
            self._bad[vi] = (err.path, err.reason, err.detail)
            return vi, s, None, self._bad[vi]
        idx = torch.arange(s, e)[:, None] + torch.arange(-half, self.window - half)[None, :]
        idx = idx.clamp(0, n - 1).clamp(lo, hi - 1) - lo  # [b, window] into this chunk
        return vi, s, frames[idx], None


@torch.no_grad()
def frame_embeddings_many(
    encode: EncodeFn,
    videos: Sequence[VideoRecord],
    fps: float,
    *,
    window: int = 1,
    size: Optional[tuple[int, int]] = None,
    batch_size: int = 64,
    backend: str = "auto",
    num_workers: int = 0,
    progress: bool = False,
) -> Iterator[tuple[int, Tensor | VideoDecodeError]]:
    """`(video index, per-frame features [N, D] or the decode error)` for each video, in input order.

    Frame i is sampled at the middle of its 1/fps interval (the times `frame_labels` uses) and encoded as
    a clip of `window` frames centred on it (window=1: the frame alone). A video with no frame at `fps`
    gets a `[0, 0]` tensor.
    """
    device = _device_of(encode)
    reads = _FrameChunks(videos, fps, window, size, batch_size, backend)
    log = DecodeFailureLog()
    parts: list[Tensor] = []
    error: Optional[tuple[str, str, str]] = None
    current = 0

    def finish(vi: int) -> tuple[int, Tensor | VideoDecodeError]:
        if error is not None:
            return vi, VideoDecodeError(*error)
        return vi, torch.cat(parts) if parts else torch.zeros(0, 0)

    with tqdm(total=len(videos), desc="videos", unit="video", disable=not progress, leave=False) as bar:
        for vi, _, windows, reason in _loader(reads, None, num_workers, None):
            while current < vi:  # every chunk of `current` has come (shorter videos may have none)
                yield finish(current)
                parts, error, current = [], None, current + 1
                bar.update(1)
            if reason is not None:
                if error is None:
                    log.update([(reason[0], str(VideoDecodeError(*reason)))])
                error = reason
            elif error is None:
                parts.append(encode(windows.to(device)).float().cpu())
        while current < len(videos):
            yield finish(current)
            parts, error, current = [], None, current + 1
            bar.update(1)


def frame_embeddings(
    encode: EncodeFn,
    video: VideoRecord,
    fps: float,
    *,
    window: int = 1,
    size: Optional[tuple[int, int]] = None,
    batch_size: int = 64,
    backend: str = "auto",
) -> Tensor:
    """Per-frame features of one video at `fps` ([N, D], N = len(frame_times(duration, fps))), read in
    the calling process; raises `VideoDecodeError` for an undecodable video."""
    (_, got), = frame_embeddings_many(encode, [video], fps, window=window, size=size, batch_size=batch_size,
                                      backend=backend)
    if isinstance(got, VideoDecodeError):
        raise got
    return got


@torch.no_grad()
def text_embeddings(encode_text: Callable[[list[str]], Tensor], texts: Sequence[str], batch_size: int = 64) -> Tensor:
    out = [encode_text(list(texts[s : s + batch_size])).float().cpu() for s in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)

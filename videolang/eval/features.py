"""Embedding extraction for evaluation and `videolang extract`: clips, per-frame features, texts.

Reads go through `read_clip` one clip at a time (small memory, any corpus size) and encode in batches.
Undecodable videos are skipped and returned to the caller, never raised, so one bad file cannot end an
evaluation; callers report them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

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


@torch.no_grad()
def clip_embeddings(
    encode: EncodeFn,
    pairs: Sequence[ClipPair],
    *,
    num_frames: int = 8,
    size: Optional[tuple[int, int]] = None,
    batch_size: int = 16,
    backend: str = "auto",
    progress: bool = True,
    desc: str = "clips",
) -> ClipFeatures:
    """Embed each pair's clip (uniform sampling); pairs whose video fails to decode are skipped."""
    device = _device_of(encode)
    out: list[Tensor] = []
    kept: list[int] = []
    failed: dict[str, str] = {}
    batch: list[Tensor] = []
    batch_idx: list[int] = []

    def flush() -> None:
        if batch:
            out.append(encode(torch.stack(batch).to(device)).float().cpu())
            kept.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    for i, pair in enumerate(tqdm(pairs, desc=desc, disable=not progress, leave=False)):
        path = str(pair.path)
        if path in failed:
            continue
        try:
            frames = read_clip(path, pair.start, pair.end, num_frames=num_frames, size=size, backend=backend)
        except VideoDecodeError as e:
            failed[path] = str(e)
            continue
        batch.append(frames)
        batch_idx.append(i)
        if len(batch) == batch_size:
            flush()
    flush()
    dim = out[0].shape[1] if out else 0
    return ClipFeatures(torch.cat(out) if out else torch.zeros(0, dim), kept, failed)


@torch.no_grad()
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
    """Per-frame features at `fps` ([N, D], N = len(frame_times(duration, fps))).

    Frame i is sampled at the middle of its 1/fps interval (the same times `frame_labels` uses) and
    encoded as a clip of `window` frames centred on it (window=1: the frame alone). Raises
    `VideoDecodeError` for an undecodable video.
    """
    times = frame_times(video.span_end, fps)
    n = len(times)
    if not n:
        return torch.zeros(0, 0)
    device = _device_of(encode)
    half = window // 2
    out = []
    # Read one chunk of frames at a time (plus the window's context), so memory does not grow with
    # the video's length.
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        lo, hi = max(s - half, 0), min(e + window - half - 1, n)
        # read_clip's fps sampling starts at `start`: begin half an interval in to hit the middles.
        frames = read_clip(video.resolved_path, lo / fps + 0.5 / fps, hi / fps, num_frames=hi - lo, size=size,
                           backend=backend, sampling="fps", fps=fps)
        idx = torch.arange(s, e)[:, None] + torch.arange(-half, window - half)[None, :]
        idx = idx.clamp(0, n - 1).clamp(lo, hi - 1) - lo  # [b, window] into this chunk
        out.append(encode(frames[idx].to(device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def text_embeddings(encode_text: Callable[[list[str]], Tensor], texts: Sequence[str], batch_size: int = 64) -> Tensor:
    out = [encode_text(list(texts[s : s + batch_size])).float().cpu() for s in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)

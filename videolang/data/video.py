"""Read clips from video files: `read_clip` samples frames by time and decodes them with the cheaper path.

Time model: a frame is shown from its timestamp (measured from the first frame) until the next frame's;
the last one for one typical frame interval, which ends the video (`VideoInfo.duration`). "The frame shown
at time t" is the last frame whose timestamp is <= t, where timestamps up to half a millisecond after t
still count (Matroska/WebM round them to the millisecond). A request is turned into times, the times into
frame indices, and only then is a decoder chosen, so every backend is asked for the same indices.

Per-file metadata (frame timestamps, keyframe positions) comes from one demux pass and is cached in a
small LRU keyed by (path, mtime, size), so repeated reads of a file skip that pass and an edited file
is indexed again.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import random
import stat
from typing import Literal, Optional, Union

import numpy as np
import torch

from videolang.data.backends import VideoDecodeError, VideoInfo, decode_decord, decode_pyav, probe
from videolang.data.decode_plan import plan_runs
from videolang.errors import VideolangError

__all__ = [
    "ClipRequestError", "VideoDecodeError", "VideoInfo", "decode_frames", "frame_indices", "frames_at", "probe_video",
    "read_clip",
]

Backend = Literal["auto", "decord", "pyav"]
Sampling = Literal["uniform", "random", "fps"]
RandomSource = Union[torch.Generator, random.Random, np.random.Generator, None]

# Matroska/WebM round timestamps to the nearest millisecond, so a frame can be stamped up to 0.5 ms
# after the instant it belongs to; the extra microsecond absorbs float error.
TIME_TOLERANCE = 0.5e-3 + 1e-6
CACHE_SIZE = 128  # files; an entry holds 16 bytes per frame (under 2 MB for an hour at 30 fps)


class ClipRequestError(VideolangError, ValueError):
    """`read_clip` was called with arguments that cannot describe a clip."""


def _stat(path: str) -> os.stat_result:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "missing", "no such file") from None
    except PermissionError:
        raise VideoDecodeError(path, "unreadable", "permission denied") from None
    except OSError as err:
        raise VideoDecodeError(path, "missing", err.strerror or type(err).__name__) from None
    if not stat.S_ISREG(info.st_mode):
        raise VideoDecodeError(path, "missing", "not a regular file")
    if info.st_size == 0:
        raise VideoDecodeError(path, "empty", "the file has 0 bytes")
    return info


@functools.lru_cache(maxsize=CACHE_SIZE)
def _probe_cached(path: str, mtime_ns: int, size: int) -> VideoInfo:
    return probe(path)


def probe_video(path: Union[str, os.PathLike]) -> VideoInfo:
    """Metadata of a video: frame count, fps, size, duration, frame timestamps and keyframe positions.

    Raises `VideoDecodeError` when the file is missing, empty, truncated, not a video, or unusable.
    """
    path = os.path.abspath(os.fspath(path))
    info = _stat(path)
    return _probe_cached(path, info.st_mtime_ns, info.st_size)


def _uniform(generator: RandomSource, count: int) -> np.ndarray:
    """`count` draws from U[0, 1) taken from whichever kind of generator the caller owns."""
    if isinstance(generator, torch.Generator):
        return torch.rand(count, generator=generator, dtype=torch.float64).numpy()
    if isinstance(generator, random.Random):
        return np.array([generator.random() for _ in range(count)])
    if isinstance(generator, np.random.Generator):
        return generator.random(count)
    if generator is None:
        return torch.rand(count, dtype=torch.float64).numpy()
    kind = type(generator).__name__
    raise ClipRequestError(f"generator: expected torch.Generator, random.Random or numpy Generator, got {kind}")


def _sample_times(
    start: float,
    end: float,
    num_frames: Optional[int],
    sampling: Sampling,
    fps: Optional[float],
    generator: RandomSource,
) -> np.ndarray:
    """Sampling times in seconds for the clip [start, end); `start == end` means a single instant."""
    span = end - start
    if sampling == "fps":
        assert fps is not None
        inside = max(1, math.ceil(span * fps - 1e-9))  # times start + k/fps that fall before `end`
        steps = np.arange(inside if num_frames is None else num_frames)
        return start + np.minimum(steps, inside - 1) / fps  # past the end: repeat the last frame
    assert num_frames is not None
    offsets = np.full(num_frames, 0.5) if sampling == "uniform" else _uniform(generator, num_frames)
    return start + (np.arange(num_frames) + offsets) * (span / num_frames)


def frames_at(frame_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time: the last frame whose timestamp is <= t."""
    index = np.searchsorted(frame_times, np.asarray(times, dtype=np.float64) + TIME_TOLERANCE, side="right") - 1
    return np.clip(index, 0, len(frame_times) - 1)


def _is_count(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _check_request(
    start: Optional[float], end: Optional[float], num_frames: Optional[int], size: Optional[tuple[int, int]],
    backend: str, sampling: str, fps: Optional[float],
) -> None:
    if sampling not in ("uniform", "random", "fps"):
        raise ClipRequestError(f"sampling: expected 'uniform', 'random' or 'fps', got {sampling!r}")
    if backend not in ("auto", "decord", "pyav"):
        raise ClipRequestError(f"backend: expected 'auto', 'decord' or 'pyav', got {backend!r}")
    if sampling == "fps":
        if fps is None or not fps > 0 or not math.isfinite(fps):
            raise ClipRequestError(f"fps: sampling='fps' needs a positive frame rate, got {fps!r}")
    elif fps is not None:
        raise ClipRequestError(f"fps: only used with sampling='fps', got sampling={sampling!r}")
    if num_frames is None and sampling != "fps":
        raise ClipRequestError("num_frames: only sampling='fps' may leave it unset")
    if num_frames is not None and not _is_count(num_frames):
        raise ClipRequestError(f"num_frames: expected a positive integer, got {num_frames!r}")
    for name, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            raise ClipRequestError(f"{name}: expected a finite time in seconds, got {value!r}")
    if start is not None and end is not None and start > end:
        raise ClipRequestError(f"start/end: start {start} is after end {end}")
    if size is not None and (not isinstance(size, (tuple, list)) or len(size) != 2 or not all(map(_is_count, size))):
        raise ClipRequestError(f"size: expected (height, width) as positive integers, got {size!r}")


def frame_indices(
    info: VideoInfo,
    start: Optional[float] = None,
    end: Optional[float] = None,
    num_frames: Optional[int] = 8,
    sampling: Sampling = "uniform",
    fps: Optional[float] = None,
    generator: RandomSource = None,
) -> np.ndarray:
    """Presentation indices of the frames `read_clip` returns for this request, one per output frame.

    `start`/`end` default to the whole video and are clamped to [0, duration]. "uniform" takes the frame
    shown at the middle of each of `num_frames` equal parts of [start, end); "random" a random instant in
    each part; "fps" the frames shown at start + k/fps, for every such instant before `end` when
    `num_frames` is None, otherwise for k < num_frames, repeating the clip's last sample past its end.
    """
    _check_request(start, end, num_frames, None, "auto", sampling, fps)
    lo = 0.0 if start is None else min(max(float(start), 0.0), info.duration)
    hi = info.duration if end is None else min(max(float(end), 0.0), info.duration)
    return frames_at(info.frame_times, _sample_times(lo, hi, num_frames, sampling, fps, generator))


def decode_frames(info: VideoInfo, frames: np.ndarray, size: Optional[tuple[int, int]], backend: Backend) -> np.ndarray:
    """Decode sorted, distinct frame indices; returns uint8 [len(frames), H, W, 3] RGB.

    "auto" and "pyav" run the decode plan with PyAV. The plan decodes no more than decord does for the
    same frames (it also skips GOP tails and unreferenced frames nobody asked for), and in
    tools/bench_loader.py it matched or beat decord on every row (docs/bench_loader.md), so the planner
    never picks decord: it is used only when asked for.
    """
    if backend == "decord":
        return decode_decord(info, frames, size)
    return decode_pyav(info, frames, plan_runs(frames, info.keyframes), size)


def read_clip(
    path: Union[str, os.PathLike],
    start: Optional[float] = None,
    end: Optional[float] = None,
    num_frames: Optional[int] = 8,
    size: Optional[tuple[int, int]] = None,
    backend: Backend = "auto",
    sampling: Sampling = "uniform",
    fps: Optional[float] = None,
    generator: RandomSource = None,
) -> torch.Tensor:
    """Read `num_frames` frames of [start, end) seconds as a uint8 tensor [T, H, W, 3] (RGB).

    See `frame_indices` for how frames are chosen; clips shorter than `num_frames` frames repeat frames.
    `size=(H, W)` resizes (bilinear) inside the decoder; PyAV and decord may then differ by interpolation
    rounding (a grey level or two); full-size frames agreed exactly in our tests. `backend` picks the decoder
    (see `decode_frames`); every backend returns the same frames. `generator` makes "random" sampling
    reproducible. Raises `VideoDecodeError` for unusable files and `ClipRequestError` for bad arguments.
    """
    _check_request(start, end, num_frames, size, backend, sampling, fps)
    info = probe_video(path)
    indices = frame_indices(info, start, end, num_frames, sampling, fps, generator)
    frames, inverse = np.unique(indices, return_inverse=True)
    pixels = decode_frames(info, frames, None if size is None else (int(size[0]), int(size[1])), backend)
    return torch.from_numpy(pixels[inverse.reshape(-1)])

"""Video features for a whole manifest, one file per video, resumable after an interruption.

Two modes: clip features, one per segment at a level (or per narration sentence), each clip sampled
uniformly with `num_frames` frames; or frame features at a fixed rate, sample i taken at the middle of
the i-th 1/fps interval of [0, duration) and encoded as a clip of the `num_frames` samples centred on
it (neighbours 1/fps apart, repeated at the ends). Frame mode decodes a whole video at once, so it
decodes at the encoder's input scale (`decode_size`) to keep that small.

Layout of the output folder FEATS:

    FEATS/<video_id>.safetensors   one per video (ids with characters outside [A-Za-z0-9._-] are %-escaped)
        features  float32 [N, D]   L2-normalised embeddings in the shared video-text space
        start, end  float64 [N]    clip mode: segment bounds in seconds
        times     float64 [N]      frame mode: sample times in seconds
        metadata: format, video_id, model, settings (JSON), and in clip mode segment_ids (JSON list;
                  the manifest's segment index paths such as "0.2", or "n<i>" for narration sentences)
    FEATS/index.json               format, model, settings, dim, and per video (manifest order) its
                                   status: "ok" (file, count, resumed), "failed" (reason) or "pending"

Every file is written atomically, so a file that exists is complete: a rerun skips those videos and
encodes only the rest (after checking they were made with the same model and settings). Undecodable
videos are recorded as failed and skipped; a rerun tries them again.
"""

from __future__ import annotations


import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import quote

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor
from tqdm import tqdm

from videolang.data.manifest import LEVEL_RANK, ClipPair, VideoRecord, frame_times
from videolang.data.video import VideoDecodeError, probe_video
from videolang.errors import VideolangError
from videolang.eval.features import clip_embeddings, frame_embeddings
from videolang.models.video_encoder import VideoEncoder
from videolang.utils.io import atomic_open, atomic_write_json

FEATURES_FORMAT = "videolang.features/1"
INDEX_NAME = "index.json"
LEVEL_CHOICES = (*LEVEL_RANK, "narration")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class ExtractError(VideolangError):
    """Extraction cannot start or finish: bad settings, a folder from another run, nothing decodable."""


class _VideoFailed(Exception):
    """One video could not be read; the message is the reason recorded in index.json."""


@dataclass(frozen=True)
class ExtractSettings:
    """What the features are: exactly one of `level` (clip mode) and `fps` (frame mode)."""

    level: Optional[str] = None
    fps: Optional[float] = None
    num_frames: int = 8  # per clip (clip mode), or per window around each sample (frame mode)

    def __post_init__(self) -> None:
        if (self.level is None) == (self.fps is None):
            raise ExtractError("settings: give exactly one of level (clip features) and fps (frame features)")
        if self.level is not None and self.level not in LEVEL_CHOICES:
            raise ExtractError(f"level: expected one of {', '.join(LEVEL_CHOICES)}, got {self.level!r}")
        if self.fps is not None and not self.fps > 0:
            raise ExtractError(f"fps: must be positive, got {self.fps}")
        if self.num_frames < 1:
            raise ExtractError(f"num_frames: must be >= 1, got {self.num_frames}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ExtractResult:
    index: Path
    extracted: list[str] = field(default_factory=list)  # video ids encoded in this run
    resumed: list[str] = field(default_factory=list)  # video ids whose file already existed
    failed: dict[str, str] = field(default_factory=dict)  # video id -> reason
    status: dict[str, dict[str, Any]] = field(default_factory=dict)  # video id -> its index.json entry
    header: dict[str, Any] = field(default_factory=dict)


def feature_file(out_dir: str | Path, video_id: str) -> Path:
    """`out_dir/<video_id>.safetensors`, escaping ids that are not plain file names."""
    name = video_id if _SAFE_ID.fullmatch(video_id) else quote(video_id, safe="")
    return Path(out_dir) / f"{name}.safetensors"


def read_features(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata (settings and segment_ids decoded from JSON) of one feature file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            return tensors, _metadata(f, path)
    except (SafetensorError, OSError) as e:
        raise ExtractError(f"{path}: not a readable feature file ({e})") from None


def _metadata(f: Any, path: Path | str) -> dict[str, Any]:
    meta: dict[str, Any] = dict(f.metadata() or {})
    try:
        for key in ("settings", "segment_ids"):
            if key in meta:
                meta[key] = json.loads(meta[key])
    except json.JSONDecodeError:
        raise ExtractError(f"{path}: metadata {key!r} is not JSON; not a videolang feature file") from None
    return meta


def extract_features(
    encoder: VideoEncoder,
    videos: Sequence[VideoRecord],
    out_dir: str | Path,
    settings: ExtractSettings,
    *,
    model: str = "",
    batch_size: int = 16,
    backend: str = "auto",
    progress: bool = True,
    write_index: bool = True,
) -> ExtractResult:
    """Write features of `videos` into `out_dir` (see the module docstring); `model` names the encoder.

    `write_index=False` leaves `index.json` to the caller (under torchrun each rank extracts a share and
    rank 0 writes one index from every rank's `result.status`)."""
    if settings.num_frames > encoder.config.max_frames:
        raise ExtractError(
            f"num_frames: {settings.num_frames} exceeds the encoder's max_frames={encoder.config.max_frames}"
        )
    if batch_size < 1:
        raise ExtractError(f"batch_size: must be >= 1, got {batch_size}")
    segments = {}
    if settings.level is not None:
        segments = {v.video_id: _segments(v, settings.level) for v in videos}
        if videos and not any(segments.values()):  # (a torchrun share may be empty; the caller checks all)
            raise ExtractError(f"level: no video in the manifest has {settings.level!r} segments")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.eval()
    header = {"format": FEATURES_FORMAT, "model": model, "settings": settings.to_dict(),
              "dim": encoder.config.embed_dim}
    # Check every finished file before writing anything, so a refused rerun leaves the folder as it was.
    finished = {}
    for video in videos:
        path = feature_file(out_dir, video.video_id)
        if path.is_file():
            finished[video.video_id] = {"status": "ok", "file": path.name, "count": _check_resumable(path, header),
                                        "resumed": True}
    result = ExtractResult(out_dir / INDEX_NAME, header=header)
    status: dict[str, dict[str, Any]] = {}
    try:
        with tqdm(videos, desc="extract", unit="video", disable=not progress) as bar:
            for video in bar:
                entry = finished.get(video.video_id) or _extract_one(
                    encoder, video, settings, segments.get(video.video_id), out_dir, header, batch_size, backend
                )
                status[video.video_id] = entry
                if entry["status"] == "failed":
                    result.failed[video.video_id] = entry["reason"]
                    bar.set_postfix(failed=len(result.failed))
                else:
                    (result.resumed if entry["resumed"] else result.extracted).append(video.video_id)
    finally:
        # Also on an exception or Ctrl-C: the index then shows which videos are still pending.
        result.status = {v.video_id: status.get(v.video_id, {"status": "pending"}) for v in videos}
        if write_index:
            write_index_file(result.index, header, result.status)
    return result


def write_index_file(path: Path, header: dict[str, Any], status: dict[str, dict[str, Any]]) -> None:
    """`index.json`: the header and each video's entry, in the order given (the manifest's)."""
    atomic_write_json(path, {**header, "videos": status})


def _extract_one(
    encoder: VideoEncoder,
    video: VideoRecord,
    settings: ExtractSettings,
    pairs: Optional[list[ClipPair]],
    out_dir: Path,
    header: dict[str, Any],
    batch_size: int,
    backend: str,
) -> dict[str, Any]:
    """Encode one video and write its feature file; returns its index.json entry."""
    path = feature_file(out_dir, video.video_id)
    try:
        tensors, extra = _encode_video(encoder, video, settings, pairs, batch_size, backend)
    except _VideoFailed as e:
        return {"status": "failed", "reason": str(e)}
    meta = {"format": FEATURES_FORMAT, "video_id": video.video_id, "model": header["model"],
            "settings": json.dumps(header["settings"]), **extra}
    with atomic_open(path, "wb") as f:
        f.write(save(tensors, metadata=meta))
    return {"status": "ok", "file": path.name, "count": len(tensors["features"]), "resumed": False}


def has_segments(videos: Sequence[VideoRecord], level: str) -> bool:
    return any(_segments(v, level) for v in videos)


def _segments(video: VideoRecord, level: str) -> list[ClipPair]:
    """Every segment at `level` (labelled or captioned), or every narration sentence."""
    if level == "narration":
        return [
            ClipPair(video.video_id, video.resolved_path, n.start, n.end, n.text, level, f"n{i}")
            for i, n in enumerate(video.narration)
        ]
    return [
        ClipPair(video.video_id, video.resolved_path, s.start, s.end, s.caption or "", level, s.segment_id,
                 s.label, s.script)
        for s in video.iter_segments(level)
    ]


def _check_resumable(path: Path, header: dict[str, Any]) -> int:
    """Row count of an existing file, after checking it was made by the same model and settings.

    Reads the header only, so resuming a large corpus does not reread every finished file.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = _metadata(f, path)
            count = f.get_slice("features").get_shape()[0] if "features" in f.keys() else None
    except (SafetensorError, OSError) as e:
        raise ExtractError(f"{path}: not a readable feature file ({e})") from None
    for key in ("model", "settings"):
        if meta.get(key) != header[key]:
            raise ExtractError(
                f"{path}: made with {key} {meta.get(key)!r}, not {header[key]!r}; use another output folder"
            )
    if count is None:
        raise ExtractError(f"{path}: has no 'features' tensor; not a videolang feature file")
    return count


def decode_size(height: int, width: int, image_size: int) -> Optional[tuple[int, int]]:
    """(H, W) with the shortest side at `image_size`, aspect kept; None if the video is no larger.

    The encoder resizes to that scale anyway; doing it in the decoder keeps a whole video sampled at
    `fps` small in memory.
    """
    short = min(height, width)
    if short <= image_size:
        return None
    scale = image_size / short
    return max(image_size, round(height * scale)), max(image_size, round(width * scale))


def _encode_video(
    encoder: VideoEncoder,
    video: VideoRecord,
    settings: ExtractSettings,
    pairs: Optional[list[ClipPair]],
    batch_size: int,
    backend: str,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and extra metadata of one video's feature file; raises `_VideoFailed`."""
    dim = encoder.config.embed_dim
    try:
        info = probe_video(video.resolved_path)
        if video.duration is None:  # optional in manifests: the file knows how long it is
            video = replace(video, duration=info.duration)
        if settings.fps is not None:
            times = frame_times(video.span_end, settings.fps)
            size = decode_size(info.height, info.width, encoder.config.image_size)
            features = torch.zeros(0, dim)
            if times:
                features = frame_embeddings(encoder.encode, video, settings.fps, window=settings.num_frames,
                                            size=size, batch_size=batch_size, backend=backend)
            return {"features": features, "times": torch.tensor(times, dtype=torch.float64)}, {}
    except VideoDecodeError as e:
        raise _VideoFailed(str(e)) from None
    got = clip_embeddings(encoder.encode, pairs, num_frames=settings.num_frames, batch_size=batch_size,
                          backend=backend, progress=False)
    if got.failed:
        raise _VideoFailed(next(iter(got.failed.values())))
    tensors = {
        "features": got.embeddings if pairs else torch.zeros(0, dim),
        "start": torch.tensor([p.start for p in pairs], dtype=torch.float64),
        "end": torch.tensor([p.end for p in pairs], dtype=torch.float64),
    }
    return tensors, {"segment_ids": json.dumps([p.segment_id for p in pairs])}

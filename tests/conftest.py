"""Shared fixtures: small synthetic videos whose frames carry their own index.

Every frame is a 4x4 grid of flat blocks: the first 12 blocks spell the frame index in binary (white is
1, most significant bit first), the last four are pure red, green, blue and white. Blocks this size
survive any codec at the quality used here, so a test can decode a frame and read back which frame it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np
import pytest
import torch

# Tiny models run fastest on one thread, and a 2-core machine shared with DataLoader workers and
# subprocesses punishes oversubscription (measured up to 30x slower steps with 2 threads under load).
torch.set_num_threads(1)

GRID = 4
BITS = 12
MARKERS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))


def _cells(height: int, width: int):
    """(row slice, column slice) of each block, in reading order."""
    ch, cw = height // GRID, width // GRID
    for cell in range(GRID * GRID):
        r, c = divmod(cell, GRID)
        yield slice(r * ch, (r + 1) * ch), slice(c * cw, (c + 1) * cw)


class FrameCode:
    """Draw a frame index into an RGB image and read it back from a decoded (possibly resized) frame."""

    @staticmethod
    def draw(index: int, height: int, width: int) -> np.ndarray:
        image = np.zeros((height, width, 3), dtype=np.uint8)
        for cell, (rows, cols) in enumerate(_cells(height, width)):
            if cell < BITS:
                image[rows, cols] = 255 * ((index >> (BITS - 1 - cell)) & 1)
            else:
                image[rows, cols] = MARKERS[cell - BITS]
        return image

    @staticmethod
    def block_means(frame: np.ndarray) -> np.ndarray:
        """Mean RGB of the central half of every block: [16, 3]."""
        height, width = frame.shape[:2]
        means = []
        for rows, cols in _cells(height, width):
            r0, r1 = rows.start + (rows.stop - rows.start) // 4, rows.stop - (rows.stop - rows.start) // 4
            c0, c1 = cols.start + (cols.stop - cols.start) // 4, cols.stop - (cols.stop - cols.start) // 4
            means.append(np.asarray(frame[r0:r1, c0:c1], dtype=np.float64).reshape(-1, 3).mean(0))
        return np.stack(means)

    @classmethod
    def read(cls, frame) -> int:
        bits = cls.block_means(np.asarray(frame))[:BITS].mean(1) > 127
        return int(sum(int(bit) << (BITS - 1 - i) for i, bit in enumerate(bits)))


@dataclass(frozen=True)
class SyntheticVideo:
    """How a test video was made; `path` is filled in once it is written."""

    name: str
    codec: str
    suffix: str
    width: int
    height: int
    num_frames: int
    gop: int
    pix_fmt: str = "yuv420p"
    rate: Fraction = Fraction(25)
    bframes: Optional[int] = None
    options: dict = field(default_factory=dict)
    muxer: Optional[str] = None
    muxer_options: dict = field(default_factory=dict)
    path: str = ""

    @property
    def timed(self) -> bool:
        """Whether the container knows presentation timestamps (raw H.264 does not; AVI does not know
        them for H.264 with B-frames)."""
        return self.muxer != "h264" and not (self.suffix == "avi" and self.codec == "libx264")


def _x264(gop: int) -> dict:
    return {"preset": "veryfast", "crf": "12", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}


def _vp9(gop: int) -> dict:
    return {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0", "keyint_min": str(gop)}


# One video per codec/container the loaders promise to handle, plus the awkward cases: odd sizes
# (x264 needs 4:4:4 for those), long GOPs, an NTSC rate in Matroska (millisecond timestamps), open GOPs
# (MPEG-4 part 2 with B-frames), an index-first ("faststart") MP4, and streams without presentation
# timestamps: H.264 with B-frames in AVI, and raw H.264.
SPECS = (
    SyntheticVideo("h264_gop25", "libx264", "mp4", 160, 120, 150, 25, options=_x264(25)),
    SyntheticVideo("h264_gop250", "libx264", "mp4", 160, 120, 600, 250, options=_x264(250)),
    SyntheticVideo(
        "h264_faststart", "libx264", "mp4", 64, 48, 100, 25, options=_x264(25), muxer_options={"movflags": "faststart"}
    ),
    SyntheticVideo("h264_odd", "libx264", "mp4", 97, 61, 100, 25, pix_fmt="yuv444p", options=_x264(25)),
    SyntheticVideo("h264_ntsc_mkv", "libx264", "mkv", 160, 120, 120, 30, rate=Fraction(30000, 1001), options=_x264(30)),
    SyntheticVideo("mpeg4_mp4", "mpeg4", "mp4", 97, 61, 150, 25, bframes=2),
    SyntheticVideo("mpeg4_avi", "mpeg4", "avi", 160, 120, 150, 25, bframes=2),
    SyntheticVideo("vp9_webm", "libvpx-vp9", "webm", 97, 61, 150, 25, options=_vp9(25)),
    SyntheticVideo("vp9_gop250_webm", "libvpx-vp9", "webm", 160, 120, 300, 250, options=_vp9(250)),
    SyntheticVideo("mjpeg_avi", "mjpeg", "avi", 97, 61, 100, 1, pix_fmt="yuvj420p"),
    SyntheticVideo("mjpeg_mkv", "mjpeg", "mkv", 160, 120, 100, 1, pix_fmt="yuvj420p"),
    SyntheticVideo("h264_avi", "libx264", "avi", 160, 120, 100, 25, options=_x264(25)),
    SyntheticVideo("h264_raw", "libx264", "h264", 160, 120, 60, 25, options=_x264(25), muxer="h264"),
)


def write_video(spec: SyntheticVideo, path: Path) -> None:
    with av.open(str(path), "w", format=spec.muxer, options=spec.muxer_options) as container:
        stream = container.add_stream(spec.codec, rate=spec.rate)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
        stream.codec_context.gop_size = spec.gop
        stream.codec_context.bit_rate = 4_000_000  # MPEG-4 / MJPEG: near-lossless; x264 and VP9 use crf
        if spec.bframes is not None:
            stream.codec_context.max_b_frames = spec.bframes
        stream.options = dict(spec.options)
        for index in range(spec.num_frames):
            frame = av.VideoFrame.from_ndarray(FrameCode.draw(index, spec.height, spec.width), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="session")
def synthetic_videos(tmp_path_factory) -> dict[str, SyntheticVideo]:
    """Name -> written `SyntheticVideo` for every entry of `SPECS` (about a second to make)."""
    folder = tmp_path_factory.mktemp("videos")
    videos = {}
    for spec in SPECS:
        path = folder / f"{spec.name}.{spec.suffix}"
        write_video(spec, path)
        videos[spec.name] = SyntheticVideo(**{**spec.__dict__, "path": str(path)})
    return videos


@pytest.fixture(params=[spec.name for spec in SPECS])
def each_synthetic_video(request, synthetic_videos) -> SyntheticVideo:
    """Each synthetic video in turn."""
    return synthetic_videos[request.param]


@pytest.fixture(scope="session")
def frame_code() -> type[FrameCode]:
    return FrameCode


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A saved tiny random `VideoTextModel` (32 px video tower, tiny BERT), shared by the tests that
    only need some model folder to load, export or extract from."""
    from videolang.config import ModelConfig
    from videolang.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(video_encoder="tiny", text_encoder="tiny", embed_dim=16, max_frames=8))
    return model.eval().save_pretrained(tmp_path_factory.mktemp("model"))

"""Decoders behind `read_clip`: a container probe and two frame decoders, PyAV and decord.

Frames are addressed by presentation index, the k-th frame in timestamp order. The probe (a PyAV demux
pass over packet headers, no decoding) fixes that numbering once per file; both decoders are then asked
for indices and must return exactly those pictures, so a request gives the same frames whichever decoder
serves it. Each call opens its own reader and closes it before returning: decord readers made in a parent
process hang forked DataLoader workers, and long-lived readers leak memory on some files.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Literal, Optional, Sequence

import av
import numpy as np

from videolang.data.decode_plan import Run
from videolang.errors import VideolangError

Reason = Literal["missing", "unreadable", "empty", "truncated", "not_video", "undecodable", "unsupported"]
Size = Optional[tuple[int, int]]

# Leading bytes of the containers we expect, to tell a damaged video from a file that is not one.
_SIGNATURES = ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (0, b"\x1a\x45\xdf\xa3"),
               (0, b"RIFF"), (0, b"FLV"), (0, b"\x00\x00\x01\xba"), (0, b"OggS"))


class VideoDecodeError(VideolangError):
    """A video file cannot be used; `reason` says why (see `Reason`), `detail` how we found out."""

    def __init__(self, path: str, reason: Reason, detail: str):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason.replace('_', ' ')}: {detail}")


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """What the sampler and the decoders need to know about one video stream.

    `pts` holds the stream timestamps of all frames in presentation order: index k in it *is* frame k.
    `keyframes` are the presentation indices of frames a decoder can start from. Streams without usable
    timestamps (raw elementary streams, H.264 with B-frames in AVI) are `timed=False`: their frames are
    numbered in decoder output order, spaced 1/fps apart, and reached only by decoding from the start.
    """

    path: str
    format_name: str
    codec: str
    width: int
    height: int
    fps: float
    time_base: Fraction
    pts: np.ndarray
    keyframes: np.ndarray
    timed: bool = True

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def __post_init__(self) -> None:
        # Cached and shared between callers, so nobody may change them in place.
        self.pts.setflags(write=False)
        self.keyframes.setflags(write=False)

    @cached_property
    def frame_times(self) -> np.ndarray:
        """Seconds from the first frame to each frame, in presentation order."""
        if self.timed:
            times = (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)
        else:
            times = np.arange(self.num_frames, dtype=np.float64) / self.fps
        times.setflags(write=False)
        return times

    @cached_property
    def duration(self) -> float:
        """Seconds from the first frame until the last one leaves the screen (one typical frame interval later)."""
        times = self.frame_times
        step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / self.fps
        return float(times[-1] + step)


def _first_line(err: BaseException, limit: int = 200) -> str:
    """A one-line summary of a library error (decord's carry a stack trace)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


def _open_error(path: str, err: Exception) -> VideoDecodeError:
    """Classify a failure to open a container: a damaged video, or something that is not a video."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    if any(head[at:at + len(magic)] == magic for at, magic in _SIGNATURES):
        return VideoDecodeError(path, "truncated", f"the container cannot be parsed ({_first_line(err)})")
    return VideoDecodeError(path, "not_video", f"not a recognised video container ({_first_line(err)})")


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path)
    except PermissionError:
        raise VideoDecodeError(path, "unreadable", "permission denied") from None
    except av.error.FFmpegError as err:
        raise _open_error(path, err) from None


def _output_follows_timestamps(path: str, limit: int = 48) -> bool:
    """Whether the decoder hands out the first `limit` frames in timestamp order.

    AVI stores no presentation timestamps. FFmpeg makes them up in decode order, which is wrong for
    codecs with reordered (B-) frames unless a parser repairs them, as it does for MPEG-4 part 2 but
    not for H.264. Such streams are then numbered in decoder output order instead.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "NONE"
        stamps = []
        try:
            for frame in container.decode(stream):
                stamps.append(frame.pts)
                if len(stamps) >= limit:
                    break
        except av.error.FFmpegError:
            pass  # judge by what came out; a damaged file is reported when its frames are read
    return None not in stamps and all(a < b for a, b in zip(stamps, stamps[1:]))


def probe(path: str) -> VideoInfo:
    """Index a video by demuxing its packets (headers only; nothing is decoded)."""
    with _open(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(path, "not_video", f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stamps: list[Optional[int]] = []
        keys: list[bool] = []
        present = 0  # packets the container holds for this stream, kept or not
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None and packet.dts is None:
                    continue  # the end-of-stream marker PyAV appends
                present += 1
                if packet.size == 0 or packet.is_discard:
                    continue
                stamps.append(packet.pts if packet.pts is not None else packet.dts)
                keys.append(packet.is_keyframe)
        except av.error.FFmpegError as err:
            raise VideoDecodeError(
                path, "truncated", f"demuxing failed after {present} frames ({_first_line(err)})"
            ) from None
        if not stamps:
            raise VideoDecodeError(path, "empty", "the video stream holds no frames")
        listed = stream.frames
        if listed and present < listed:
            raise VideoDecodeError(
                path, "truncated", f"the container lists {listed} frames, only {present} are present"
            )
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        timed = None not in stamps and len(set(stamps)) == len(stamps)
        if timed and container.format.name == "avi":
            timed = _output_follows_timestamps(path)
        if timed:
            order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
            pts = np.asarray(stamps, dtype=np.int64)[order]
            keyframes = np.flatnonzero(np.asarray(keys)[order])
            if not fps and len(pts) > 1:
                fps = (len(pts) - 1) / float((pts[-1] - pts[0]) * stream.time_base)
        else:
            pts = np.arange(len(stamps), dtype=np.int64)
            keyframes = np.zeros(1, dtype=np.int64)
        if not fps:
            raise VideoDecodeError(path, "undecodable", "the stream has neither timestamps nor a frame rate")
        return VideoInfo(
            path=path,
            format_name=container.format.name,
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            time_base=stream.time_base or Fraction(1, 1),
            pts=pts,
            keyframes=keyframes.astype(np.int64),
            timed=timed,
        )


class _PyAVReader:
    """One open container whose decoder is driven run by run; wanted frames are converted on arrival."""

    def __init__(self, info: VideoInfo, size: Size):
        self.size = size
        self.container = _open(info.path)
        self.stream = self.container.streams.video[0]
        self.codec = self.stream.codec_context
        # One thread: frame threading adds latency to every seek, and DataLoader workers fill the cores anyway.
        self.codec.thread_type = "NONE"
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.last_error: Optional[str] = None

    def __enter__(self) -> "_PyAVReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def convert(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        height, width = self.size
        # Bilinear, like decord's scaler, so that both paths agree up to rounding.
        return self.reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation="BILINEAR"
        ).to_ndarray()

    def decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return self.codec.decode(packet)
        except av.error.FFmpegError as err:  # a damaged packet: go on; frames that never come out are reported
            self.last_error = _first_line(err)
            return []

    def fetch_by_pts(self, targets: dict[int, int], out: np.ndarray, start: Optional[int], skip: bool) -> None:
        """Store every frame whose timestamp is in `targets` (pts -> row of `out`) and remove it from there.

        Decoding starts at the keyframe with timestamp `start`, or where the reader stands if None. With
        `skip`, frames that nobody asked for and no other frame refers to are not decoded at all.
        """
        if start is not None:
            self.container.seek(start, backward=True, stream=self.stream)
        checked = start is None
        last = max(targets)
        discard = "DEFAULT"
        for packet in self.container.demux(self.stream):
            if not checked and packet.size:
                checked = True
                if packet.pts is not None and packet.pts > start:
                    return  # landed past the keyframe: the caller replays from the start of the stream
            if skip:
                mode = "DEFAULT" if packet.pts in targets or not packet.size else "NONREF"
                if mode != discard:
                    self.codec.skip_frame = discard = mode
            for frame in self.decode(packet):
                row = targets.pop(frame.pts, None)
                if row is not None:
                    out[row] = self.convert(frame)
                elif frame.pts is not None and frame.pts > last:
                    return  # frames come out in presentation order: whatever is left will not come
            if not targets:
                return

    def fetch_in_order(self, targets: dict[int, int], out: np.ndarray) -> None:
        """Like `fetch_by_pts` from the start, but frames are numbered by decoder output order."""
        position = 0
        for packet in self.container.demux(self.stream):
            for frame in self.decode(packet):
                row = targets.pop(position, None)
                if row is not None:
                    out[row] = self.convert(frame)
                position += 1
            if not targets:
                return


def _output(info: VideoInfo, count: int, size: Size) -> np.ndarray:
    height, width = size if size is not None else (info.height, info.width)
    return np.empty((count, height, width, 3), dtype=np.uint8)


def decode_pyav(info: VideoInfo, frames: np.ndarray, runs: Sequence[Run], size: Size) -> np.ndarray:
    """Decode sorted, distinct `frames` with PyAV following the plan `runs`; returns [len(frames), H, W, 3]."""
    out = _output(info, len(frames), size)
    row_of = {int(f): row for row, f in enumerate(frames)}
    with _PyAVReader(info, size) as reader:
        if info.timed:
            left: dict[int, int] = {}
            for number, run in enumerate(runs):
                wanted = {int(info.pts[f]): row_of[f] for f in run.frames}
                start = None if number == 0 and run.keyframe == 0 else int(info.pts[run.keyframe])
                reader.fetch_by_pts(wanted, out, start, skip=True)
                left.update(wanted)
        else:
            left = dict(row_of)
            reader.fetch_in_order(left, out)
        error = reader.last_error
    if left and info.timed:
        # A seek that landed past its keyframe, or a container that packs several frames per packet:
        # replay from the start of the stream, decoding everything.
        with _PyAVReader(info, size) as reader:
            reader.fetch_by_pts(left, out, None, skip=False)
            error = reader.last_error or error
    if left:
        missing = sorted(int(frames[row]) for row in left.values())
        cause = f"; last decoder error: {error}" if error else ""
        detail = f"no picture for frame {missing[0]} ({len(missing)} of {len(frames)} requested){cause}"
        raise VideoDecodeError(info.path, "undecodable", detail)
    return out


_DECORD_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"})


def decode_decord(info: VideoInfo, frames: np.ndarray, size: Size) -> np.ndarray:
    """Decode sorted, distinct `frames` with decord; returns [len(frames), H, W, 3].

    decord numbers frames itself. In MPEG-TS, raw streams and H.264 in AVI its numbering is off even
    when reading from the start, so only timed streams in the containers where it is tested are
    accepted. Its seeks also land on the
    wrong frame with open GOPs (MPEG-4 part 2 with B-frames); when its keyframe positions differ from
    the probe's, frames are read one after another from the start, which it gets right.
    """
    if info.format_name not in _DECORD_FORMATS or not info.timed:
        what = f"{info.format_name!r} files" if info.timed else "streams without presentation timestamps"
        detail = f"decord numbers frames unreliably in {what}; use backend='pyav'"
        raise VideoDecodeError(info.path, "unsupported", detail)
    import decord

    height, width = size if size is not None else (-1, -1)
    try:
        reader = decord.VideoReader(info.path, width=width, height=height, num_threads=1)
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoDecodeError(info.path, "undecodable", f"decord cannot open it ({_first_line(err)})") from None
    try:
        if len(reader) != info.num_frames:
            raise VideoDecodeError(
                info.path, "unsupported", f"decord counts {len(reader)} frames, the container index {info.num_frames}"
            )
        if np.array_equal(reader.get_key_indices(), info.keyframes):
            return reader.get_batch(frames.tolist()).asnumpy()
        out = _output(info, len(frames), size)
        position = 0
        for row, frame in enumerate(frames.tolist()):
            for _ in range(frame - position):
                reader.next()
            out[row] = reader.next().asnumpy()
            position = frame + 1
        return out
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoDecodeError(info.path, "undecodable", f"decord failed ({_first_line(err)})") from None
    finally:
        del reader

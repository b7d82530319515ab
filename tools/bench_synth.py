"""Benchmark the synthetic corpus generator: corpus build time per frame size, and the keyframe interval.

Prints markdown tables. Timings on a shared machine are noisy, so each table compares its rows within
one run and reports ratios to the first row.

    python tools/bench_synth.py            # 100 videos per size
    python tools/bench_synth.py --quick    # 10 videos, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from videolang.data.synth import NarrationNoise, build_video, synthesize_corpus
from videolang.data.synth_render import encode_mp4, render_frames


def bench_corpus(videos: int, sizes: list[tuple[int, int, float]], root: Path) -> list[str]:
    rows = []
    base = None
    for height, width, fps in sizes:
        out = root / f"corpus_{width}x{height}_{fps:g}"
        start = time.perf_counter()
        manifest = synthesize_corpus(out, videos, seed=0, size=(height, width), fps=fps)
        total = time.perf_counter() - start
        # Stage split on the same videos (planning, numpy rendering, H.264 encoding).
        plan = render = encode = 0.0
        for i in range(videos):
            t0 = time.perf_counter()
            _, spec = build_video(0, i, NarrationNoise(), height, width, fps)
            t1 = time.perf_counter()
            frames = render_frames(spec)
            t2 = time.perf_counter()
            encode_mp4(frames, root / "stage.mp4", fps, spec.keyframe_interval)
            t3 = time.perf_counter()
            plan, render, encode = plan + t1 - t0, render + t2 - t1, encode + t3 - t2
        mb = sum(p.stat().st_size for p in (out / "videos").glob("*.mp4")) / 1e6
        minutes = sum(json.loads(line)["duration"] for line in manifest.open()) / 60
        base = base or total
        rows.append(
            f"| {width}x{height} @ {fps:g} fps | {minutes:.1f} | {total:.1f} | {videos / total:.1f} | "
            f"{plan:.2f} / {render:.1f} / {encode:.1f} | {mb:.2f} | {total / base:.2f} |"
        )
    head = [
        "| frames | video minutes | corpus s | videos/s | plan / render / encode s | MB | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    return head + rows


def seek_clip(path: Path, start: float, num_frames: int, fps: float) -> int:
    """PyAV: seek to the keyframe before `start`, decode until `num_frames` frames from `start` are out."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        c.seek(int(start / stream.time_base), stream=stream)
        decoded = kept = 0
        for frame in c.decode(stream):
            decoded += 1
            if frame.time >= start - 0.5 / fps:
                frame.to_ndarray(format="rgb24")
                kept += 1
                if kept == num_frames:
                    break
    return decoded


def bench_keyframes(videos: int, intervals: list[int], clips: int, root: Path) -> list[str]:
    fps = 8.0
    frames = [render_frames(build_video(0, i, NarrationNoise(), 96, 128, fps)[1]) for i in range(videos)]
    rng = np.random.default_rng(0)
    starts = [(int(rng.integers(videos)), float(rng.uniform(0, 20))) for _ in range(clips)]
    rows, base_ms, base_mb = [], None, None
    for k in intervals:
        paths = []
        for i, f in enumerate(frames):
            paths.append(root / f"gop{k}_{i}.mp4")
            encode_mp4(f, paths[-1], fps, k)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        t0 = time.perf_counter()
        decoded = sum(seek_clip(paths[v], s, 8, fps) for v, s in starts)
        ms = (time.perf_counter() - t0) / clips * 1e3
        base_ms, base_mb = base_ms or ms, base_mb or mb
        rows.append(
            f"| {k} ({k / fps:g} s) | {mb:.2f} | {mb / base_mb:.2f} | {decoded / clips:.1f} | "
            f"{ms:.2f} | {ms / base_ms:.2f} |"
        )
    head = [
        "| keyframe interval | MB | size ratio | frames decoded per 8-frame clip | ms per clip | time ratio |",
        "|---|---|---|---|---|---|",
    ]
    return head + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 videos, fewer sizes and clips")
    parser.add_argument("--videos", type=int, help="videos per corpus (default: 100, or 10 with --quick)")
    args = parser.parse_args()
    videos = args.videos or (10 if args.quick else 100)
    sizes = [(96, 128, 8.0), (120, 160, 10.0)] + ([] if args.quick else [(224, 224, 8.0)])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"### Corpus build ({videos} videos, default noise)\n")
        print("\n".join(bench_corpus(videos, sizes, root)))
        print("\n### Keyframe interval (128x96 @ 8 fps, random 8-frame clips read with PyAV seek)\n")
        print("\n".join(bench_keyframes(min(videos, 20), [16, 80, 250], 40 if args.quick else 200, root)))


if __name__ == "__main__":
    main()

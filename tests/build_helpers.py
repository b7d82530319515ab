"""Helpers shared by the manifest-builder tests: fake and real video files, options, reading the result."""

from __future__ import annotations

import json
import os
from pathlib import Path

from videolang.data.builders import BuildOptions
from videolang.data.manifest import check_manifest


def touch(folder: Path, *stems: str, ext: str = "mp4") -> None:
    for stem in stems:
        path = folder / f"{stem}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def write_clip(path: Path, frames: int, fps: int) -> None:
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            image = np.full((32, 32, 3), (20 * i) % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def options(videos: Path, **kw) -> BuildOptions:
    return BuildOptions(videos=videos, progress=False, **kw)


def read_out(path: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["video_id"]: r for r in records}


def rel(file: Path, out: Path) -> str:
    return os.path.relpath(file, out.parent)


def assert_valid(out: Path) -> None:
    _, problems, _ = check_manifest(out, check_files=True)
    assert problems == []

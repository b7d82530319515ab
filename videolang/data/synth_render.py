"""Pixels of the synthetic corpus: a textured scene background, one flat-coloured sprite, an mp4 writer.

Everything drawn is a closed-form function of a `RenderSpec`, and the spec is stored verbatim in each
video's manifest `meta["render"]`, so tests (and users) can predict any pixel from the manifest alone:

- Frame `n` is shown at `n / fps`. Spans are half-open frame ranges `[start, end)`.
- Camera: `offset(n) = interp(n, camera.frames, camera.offsets)` in pixels (piecewise linear). The
  background is sampled at `x + offset`, so a growing offset (a pan to the right) moves the scene left.
- Background pixel `(x, y)` (column, row) = `clip(rint(rgb + amplitude * v))` in every channel, with
  `u = 2π (x + offset) / period`, `w = 2π y / period` and `v = sin(u)` (`stripes`),
  `sin(u) * sin(w)` (`tiles`) or `sin(u + w)` (`waves`).
- Sprite at `t = (n - start) / (end - start)`: centre and size interpolate linearly from `*_from` to
  `*_to`; with `(dx, dy)` a pixel's offset from the centre and `r = size / 2`, it covers
  `dx² + dy² <= r²` (circle), `max(|dx|, |dy|) <= r` (square), `|dx| + |dy| <= r` (diamond) or
  `|dy| <= r and |dx| <= (dy + r) / 2` (triangle, apex up).

Colours are chosen so every sprite colour is far from every scene colour; textures are smooth sines so
the H.264 files stay small and the decoded colours stay close to the spec.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    rgb: RGB
    pattern: str
    period: float  # pixels at the reference height of 96 px


# Muted backgrounds; phase labels are these names.
SCENES: dict[str, Scene] = {
    "forest": Scene((34, 85, 45), "tiles", 32),
    "desert": Scene((170, 140, 90), "waves", 40),
    "ocean": Scene((25, 80, 120), "stripes", 24),
    "night": Scene((25, 25, 60), "tiles", 24),
    "studio": Scene((110, 110, 110), "stripes", 32),
    "brick": Scene((120, 55, 40), "waves", 28),
}
# Saturated sprite colours, each far from every scene colour.
COLORS: dict[str, RGB] = {
    "red": (230, 30, 30),
    "green": (40, 210, 60),
    "blue": (40, 80, 240),
    "yellow": (245, 225, 30),
    "purple": (170, 50, 230),
    "orange": (255, 140, 0),
    "white": (245, 245, 245),
    "cyan": (30, 230, 230),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PATTERNS = ("stripes", "tiles", "waves")
TEXTURE_AMPLITUDE = 12
# Two seconds between keyframes (no scene-cut keyframes): a seek never decodes more than 2 s of video,
# which keeps random clip sampling cheap while the files stay small.
KEYFRAME_SECONDS = 2.0


@dataclass(frozen=True)
class BackgroundSpan:
    start: int
    end: int
    scene: str
    rgb: RGB
    pattern: str
    period: float
    amplitude: float


@dataclass(frozen=True)
class SpriteSpan:
    start: int
    end: int
    shape: str
    color: str
    rgb: RGB
    center_from: tuple[float, float]  # (x, y) in pixels
    center_to: tuple[float, float]
    size_from: float
    size_to: float


@dataclass(frozen=True)
class CameraTrack:
    frames: tuple[int, ...]
    offsets: tuple[float, ...]

    def offset(self, n: np.ndarray) -> np.ndarray:
        return np.interp(n, self.frames, self.offsets)


@dataclass(frozen=True)
class RenderSpec:
    height: int
    width: int
    fps: float
    num_frames: int
    keyframe_interval: int
    backgrounds: tuple[BackgroundSpan, ...]
    sprites: tuple[SpriteSpan, ...]
    camera: CameraTrack = field(default_factory=lambda: CameraTrack((0,), (0.0,)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RenderSpec":
        return cls(
            height=d["height"],
            width=d["width"],
            fps=d["fps"],
            num_frames=d["num_frames"],
            keyframe_interval=d["keyframe_interval"],
            backgrounds=tuple(
                BackgroundSpan(**{**b, "rgb": tuple(b["rgb"])}) for b in d["backgrounds"]
            ),
            sprites=tuple(
                SpriteSpan(
                    **{
                        **s,
                        "rgb": tuple(s["rgb"]),
                        "center_from": tuple(s["center_from"]),
                        "center_to": tuple(s["center_to"]),
                    }
                )
                for s in d["sprites"]
            ),
            camera=CameraTrack(tuple(d["camera"]["frames"]), tuple(d["camera"]["offsets"])),
        )


def texture(pattern: str, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Texture value in [-1, 1] at (already camera-shifted) column `x` and row `y` (broadcasting)."""
    u = 2 * np.pi * x / period
    w = 2 * np.pi * y / period
    if pattern == "stripes":
        return np.sin(u)
    if pattern == "tiles":
        return np.sin(u) * np.sin(w)
    if pattern == "waves":
        return np.sin(u + w)
    raise ValueError(f"unknown texture pattern '{pattern}'")


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Pixels covered by `shape` of side/diameter `size`, given offsets from its centre (broadcasting)."""
    r = size / 2
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "triangle":
        return (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape '{shape}'")


def render_frames(spec: RenderSpec) -> np.ndarray:
    """All frames of a video as uint8 `[N, H, W, 3]` RGB, vectorised over frames within each span."""
    frames = np.zeros((spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8)
    x = np.arange(spec.width, dtype=np.float64)[None, None, :]
    y = np.arange(spec.height, dtype=np.float64)[None, :, None]
    for bg in spec.backgrounds:
        # A static camera repeats offsets: draw each distinct offset once, then copy.
        offsets, which = np.unique(spec.camera.offset(np.arange(bg.start, bg.end)), return_inverse=True)
        v = texture(bg.pattern, x + offsets[:, None, None], y, bg.period)
        pixels = np.asarray(bg.rgb, dtype=np.float64) + bg.amplitude * v[..., None]
        frames[bg.start : bg.end] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[which.reshape(-1)]
    for sp in spec.sprites:
        n = np.arange(sp.start, sp.end, dtype=np.float64)
        t = ((n - sp.start) / (sp.end - sp.start))[:, None, None]
        (x0, y0), (x1, y1) = sp.center_from, sp.center_to
        cx = x0 + t * (x1 - x0)
        cy = y0 + t * (y1 - y0)
        size = sp.size_from + t * (sp.size_to - sp.size_from)
        # Only the box the sprite sweeps over needs testing.
        r = max(sp.size_from, sp.size_to) / 2 + 1
        cols = slice(max(0, int(min(x0, x1) - r)), min(spec.width, int(max(x0, x1) + r) + 1))
        rows = slice(max(0, int(min(y0, y1) - r)), min(spec.height, int(max(y0, y1) + r) + 1))
        mask = shape_mask(sp.shape, x[..., cols] - cx, y[:, rows] - cy, size)
        frames[sp.start : sp.end, rows, cols][mask] = sp.rgb
    return frames


def encode_mp4(frames: np.ndarray, path: str | Path, fps: float, keyframe_interval: int) -> None:
    """Write RGB frames as H.264 (yuv420p) mp4, single-threaded so the bytes are reproducible.

    The file appears atomically (written beside it, then renamed), so an interrupted run never leaves a
    truncated video behind a manifest line.
    """
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    height, width = frames.shape[1:3]
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.thread_count = 1
            k = keyframe_interval
            stream.codec_context.options = {
                "preset": "veryfast",
                "crf": "20",
                "x264-params": f"keyint={k}:min-keyint={k}:scenecut=0",
            }
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

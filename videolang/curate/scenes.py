"""Scene cuts of long videos -> `clip` segments (`videolang curate scenes`).

Vript captions scenes that PySceneDetect cut. The built-in detector follows the same content rule (a cut
where consecutive frames differ by more than a threshold, at most one per `min_seconds`) on frames
sampled at `fps` and shrunk to 64 px, read a minute at a time so memory does not grow with the video.
Frames 1/fps apart also differ during a fast pan, so each candidate is confirmed on the video's own
frames between the two samples: a cut is one large step between two adjacent frames, a pan many small
ones. The confirmed cut is placed at the first frame of the new scene.
It needs nothing beyond the decoders videolang already has; `detector="pyscenedetect"` uses the real
thing when the optional `scenedetect` package is installed (`pip install scenedetect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from videolang.data.video import probe_video, read_clip
from videolang.errors import VideolangError

Detector = Literal["builtin", "pyscenedetect"]
CHUNK_SECONDS = 60.0


@dataclass(frozen=True)
class SceneRules:
    fps: float = 4.0  # frames compared per second
    threshold: float = 27.0  # mean absolute difference of HSV pixels (0-255) that makes a cut
    min_seconds: float = 1.0  # shortest scene
    detector: Detector = "builtin"


def _hsv(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] -> float HSV in 0-255 (hue on the same scale), as ContentDetector scores."""
    rgb = frames.float() / 255.0
    mx, argmax = rgb.max(dim=-1)
    mn = rgb.min(dim=-1).values
    delta = mx - mn
    r, g, b = rgb.unbind(-1)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack([hue, sat, mx], dim=-1) * 255.0


def frame_scores(path: str | Path, rules: SceneRules) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(times [N], score [N] of frame k against frame k-1 (0 for the first), duration)."""
    duration = probe_video(path).duration
    times, scores = [], []
    previous: Optional[torch.Tensor] = None
    t0 = 0.0
    while t0 < duration:
        t1 = min(t0 + CHUNK_SECONDS, duration)
        frames = read_clip(path, t0, t1, num_frames=None, size=(64, 64), sampling="fps", fps=rules.fps)
        hsv = _hsv(frames)
        n = min(hsv.shape[0], max(1, round((t1 - t0) * rules.fps + 1e-6)))  # the last frame repeats past `end`
        hsv = hsv[:n]
        both = hsv if previous is None else torch.cat([previous[None], hsv])
        diff = (both[1:] - both[:-1]).abs().mean(dim=(1, 2, 3))
        scores.append(diff if previous is not None else torch.cat([torch.zeros(1), diff]))
        times.append(t0 + torch.arange(n, dtype=torch.float64) / rules.fps)
        previous = hsv[-1]
        t0 = t1
    return torch.cat(times), torch.cat(scores), duration


def confirm_cut(path: str | Path, before: float, after: float, threshold: float) -> Optional[float]:
    """The time of the first frame after the largest step between adjacent frames of (before, after],
    if that step exceeds `threshold` and stands out (at least twice the median step of the frames from
    one interval before to one after: a pan moves every frame about equally); None otherwise."""
    from videolang.data.video import decode_frames

    info = probe_video(path)
    times = info.frame_times
    gap = after - before
    idx = np.flatnonzero((times >= before - gap - 1e-6) & (times <= after + gap + 1e-6))
    inside = (times[idx[1:]] > before + 1e-6) & (times[idx[1:]] <= after + 1e-6)  # steps ending in (before, after]
    if len(idx) < 2 or not inside.any():
        return after
    hsv = _hsv(torch.from_numpy(decode_frames(info, idx, (64, 64), "auto")))
    steps = (hsv[1:] - hsv[:-1]).abs().mean(dim=(1, 2, 3))
    k = int(torch.where(torch.from_numpy(inside), steps, torch.full_like(steps, -1.0)).argmax())
    others = torch.cat([steps[:k], steps[k + 1:]])
    typical = float(others.median()) if len(others) else 0.0
    return float(times[idx[k + 1]]) if float(steps[k]) > threshold and float(steps[k]) >= 2 * typical else None


def detect_cuts(path: str | Path, times: torch.Tensor, scores: torch.Tensor, rules: SceneRules) -> list[float]:
    """Cut times: where a sample differs from the one before by more than the threshold and one pair of
    adjacent frames in between does too, at most one per `min_seconds`."""
    cuts: list[float] = []
    last = 0.0
    t_list = times.tolist()
    for k, s in enumerate(scores.tolist()):
        if k == 0 or s <= rules.threshold:
            continue
        cut = confirm_cut(path, t_list[k - 1], t_list[k], rules.threshold)
        if cut is not None and cut - last >= rules.min_seconds:
            cuts.append(cut)
            last = cut
    return cuts


def _pyscenedetect(path: str | Path, rules: SceneRules) -> tuple[list[float], float]:
    try:
        from scenedetect import ContentDetector, detect
    except ImportError:
        raise VideolangError("--detector pyscenedetect needs the scenedetect package: pip install scenedetect") from None
    scenes = detect(str(path), ContentDetector(threshold=rules.threshold, min_scene_len=max(1, round(rules.min_seconds * 25))))
    duration = probe_video(path).duration
    return [float(start.get_seconds()) for start, _ in scenes[1:]], duration


def detect_scenes(path: str | Path, rules: SceneRules) -> list[tuple[float, float]]:
    """Scene spans `[(start, end)]` covering [0, duration) of one video; raises `VideoDecodeError`."""
    if rules.detector == "pyscenedetect":
        cuts, duration = _pyscenedetect(path, rules)
    else:
        times, scores, duration = frame_scores(path, rules)
        cuts = detect_cuts(path, times, scores, rules)
    # The tail after the last cut must be a scene too; a sliver shorter than min_seconds joins the one before.
    bounds = [0.0] + [c for c in cuts if 0.0 < c < duration] + [duration]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < rules.min_seconds:
        del bounds[-2]
    return [(round(a, 3), round(b, 3)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

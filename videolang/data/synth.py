"""Synthetic procedural corpus: short mp4s whose phase > step > task structure is known exactly.

- phase = scene (textured background), labelled with the scene name;
- step  = one object (colour x shape) on screen, labelled e.g. "red circle";
- task  = one motion of that object (left / right / up / down / grow / shrink), labelled e.g. "move left".

Each video draws a 2x2 grid of objects (two colours x two shapes) and shows all four, so an object is only
told apart from its neighbours by colour *and* shape; each step's tasks are distinct motions, drawn
where the frame allows from a per-video pool of four, so the same object moves in several ways and
different objects share motions.
Task captions therefore need appearance and motion together. Tasks also carry Vript-style `script`s
(shot type from the object's size, camera movement from a simulated pan, content = the caption).

The `narration` track is the clean one-sentence-per-task commentary degraded by `NarrationNoise`
(Norton-style): some sentences shifted in time, some replaced by off-topic talk, and extra idle clips
(scene only, no object) that no sentence describes. `meta["narration_kind"]` says which sentence is which
and `meta["idle"]` lists the idle clips, so noisy-correspondence results can be scored exactly.

Randomness is split into per-video streams (structure, then noise), so video i is the same whatever the
corpus size, and narration noise never changes the pixels (idle clips only insert time). Rendering is
fully described by `meta["render"]` (see `videolang.data.synth_render`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from videolang.data import synth_text as text
from videolang.data.synth_render import (
    COLORS,
    KEYFRAME_SECONDS,
    SCENES,
    SHAPES,
    TEXTURE_AMPLITUDE,
    BackgroundSpan,
    CameraTrack,
    RenderSpec,
    SpriteSpan,
    encode_mp4,
    render_frames,
)
from videolang.errors import VideolangError

GENERATOR = "videolang.synth/1"
CORPUS = "synth"
VAL_EVERY = 5  # every 5th video (index 4, 9, ...) is in the "val" split
REFERENCE_HEIGHT = 96  # geometry below is in pixels at this frame size and scales with min(H, W)
MIN_SIZE, MAX_SIZE = 16.0, 44.0  # sprite side/diameter
MARGIN = 2.0  # sprites stay this far inside the frame
TASK_SECONDS = (1.5, 3.0)
LEAD_IN_SECONDS = (0.5, 1.0)  # scene-only time at the start of each phase
PAN_SPEED = 8.0  # pixels per second of simulated camera pan
CAMERA_MOVES = ("static", "pan left", "pan right")
CAMERA_PROBS = (0.6, 0.2, 0.2)
TASKS_PER_VIDEO = (9, 15)


class SynthError(VideolangError):
    """Invalid arguments to the synthetic corpus generator."""


@dataclass(frozen=True)
class NarrationNoise:
    """Norton-style narration noise, as fractions of the clean one-sentence-per-task track.

    `shift`: sentences moved in time by `shift_seconds` (asynchronous narration); `irrelevant`: sentences
    replaced by off-topic talk (disjoint from the shifted ones); `unmatched_clips`: idle clips added per
    task clip, which no sentence describes. Counts per video are `floor(fraction * n + u)` with `u`
    uniform, so they average exactly to the fraction over a corpus. All zero gives a clean track.
    """

    shift: float = 0.25
    irrelevant: float = 0.15
    unmatched_clips: float = 0.15
    shift_seconds: tuple[float, float] = (2.0, 6.0)

    def __post_init__(self) -> None:
        for name in ("shift", "irrelevant", "unmatched_clips"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SynthError(f"noise.{name} must be a fraction in [0, 1], got {value}")
        if self.shift + self.irrelevant > 1.0:
            raise SynthError(
                f"noise.shift + noise.irrelevant must be at most 1, got {self.shift} + {self.irrelevant}"
            )
        lo, hi = self.shift_seconds
        if not 0.0 < lo <= hi:
            raise SynthError(f"noise.shift_seconds must satisfy 0 < low <= high, got {self.shift_seconds}")

    @classmethod
    def preset(cls, name: str) -> "NarrationNoise":
        if name not in NOISE_PRESETS:
            raise SynthError(f"unknown noise preset '{name}'; expected one of {', '.join(NOISE_PRESETS)}")
        return NOISE_PRESETS[name]


NOISE_PRESETS = {
    "none": NarrationNoise(0.0, 0.0, 0.0),
    "low": NarrationNoise(0.1, 0.05, 0.05),
    "default": NarrationNoise(),
    "high": NarrationNoise(0.5, 0.3, 0.3),
}


# --------------------------------------------------------------------------------------------------
# Plan: the clean structure of one video, in frames


@dataclass
class TaskPlan:
    motion: str
    frames: int
    center_from: tuple[float, float]
    center_to: tuple[float, float]
    size_from: float
    size_to: float
    camera: str
    caption: str
    narration: str


@dataclass
class StepPlan:
    color: str
    shape: str
    caption: str
    tasks: list[TaskPlan]

    @property
    def name(self) -> str:
        return text.object_name(self.color, self.shape)


@dataclass
class PhasePlan:
    scene: str
    lead_in: int
    caption: str
    steps: list[StepPlan]


class _Geometry:
    """Frame bounds and motion magnitudes, scaled from the 96-px reference to the actual frame."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.k = min(height, width) / REFERENCE_HEIGHT
        self.min_size, self.max_size = MIN_SIZE * self.k, MAX_SIZE * self.k
        self.margin = MARGIN * self.k

    def room(self, c: tuple[float, float], size: float) -> dict[str, float]:
        """How far each motion can go from centre `c` with the sprite staying inside the frame."""
        x, y = c
        r = size / 2 + self.margin
        fit = 2 * (min(x, self.width - 1 - x, y, self.height - 1 - y) - self.margin)
        return {
            "left": x - r,
            "right": self.width - 1 - x - r,
            "up": y - r,
            "down": self.height - 1 - y - r,
            "grow": min(self.max_size, fit) - size,
            "shrink": size - self.min_size,
        }

    def minimum(self, motion: str) -> float:
        """Smallest motion worth a caption: clearly visible at this frame size."""
        return (12.0 if motion in ("grow", "shrink") else 14.0) * self.k

    def wanted(self, motion: str, rng: np.random.Generator) -> float:
        lo, hi = (12.0, 20.0) if motion in ("grow", "shrink") else (16.0, 32.0)
        return float(rng.uniform(lo, hi)) * self.k


def _round2(v: float) -> float:
    return round(float(v), 2)


def _plan_step(
    rng: np.random.Generator,
    geo: _Geometry,
    fps: float,
    color: str,
    shape: str,
    scene: str,
    n_tasks: int,
    pool: list[str],
) -> StepPlan:
    """One object's sequence of distinct motions, each kept inside the frame."""
    size = _round2(rng.uniform(20.0, 30.0) * geo.k)
    half = size / 2 + geo.margin
    # Start near the middle so the first motions have room in every direction.
    x = rng.uniform(geo.width / 3, 2 * geo.width / 3)
    y = rng.uniform(max(half, 3 * geo.height / 8), min(geo.height - 1 - half, 5 * geo.height / 8))
    c = (_round2(x), _round2(y))
    obj = text.object_name(color, shape)
    tasks: list[TaskPlan] = []
    used: set[str] = set()
    for _ in range(n_tasks):
        room = geo.room(c, size)
        feasible = [m for m in text.MOTIONS if room[m] >= geo.minimum(m)]
        # Prefer an unused motion from the video's pool; fall back so the sprite never leaves the frame
        # (left or right always fits, so `feasible` is never empty).
        preferences = (
            [m for m in pool if m in feasible and m not in used],
            [m for m in feasible if m not in used],
            feasible,
        )
        candidates = next(options for options in preferences if options)
        motion = candidates[int(rng.integers(len(candidates)))]
        used.add(motion)
        amount = min(geo.wanted(motion, rng), room[motion])
        x, y = c
        new_c, new_size = c, size
        if motion == "left":
            new_c = (_round2(x - amount), y)
        elif motion == "right":
            new_c = (_round2(x + amount), y)
        elif motion == "up":
            new_c = (x, _round2(y - amount))
        elif motion == "down":
            new_c = (x, _round2(y + amount))
        elif motion == "grow":
            new_size = _round2(size + amount)
        else:
            new_size = _round2(size - amount)
        frames = max(2, int(round(rng.uniform(*TASK_SECONDS) * fps)))
        camera = CAMERA_MOVES[int(rng.choice(len(CAMERA_MOVES), p=CAMERA_PROBS))]
        tasks.append(
            TaskPlan(
                motion=motion,
                frames=frames,
                center_from=c,
                center_to=new_c,
                size_from=size,
                size_to=new_size,
                camera=camera,
                caption=text.task_caption(rng, obj, motion, scene),
                narration=text.narration_sentence(rng, obj, motion),
            )
        )
        c, size = new_c, new_size
    caption = text.step_caption(rng, obj, [t.motion for t in tasks])
    return StepPlan(color, shape, caption, tasks)


def plan_video(rng: np.random.Generator, height: int, width: int, fps: float) -> list[PhasePlan]:
    """The clean phase/step/task structure of one video (times in frames, no idle clips)."""
    geo = _Geometry(height, width)
    # Phases x steps x tasks, resampled until the task count gives a ~20-40 s video.
    while True:
        n_phases = int(rng.integers(2, 4))
        layout = [[int(rng.integers(2, 4)) for _ in range(int(rng.integers(2, 4)))] for _ in range(n_phases)]
        if TASKS_PER_VIDEO[0] <= sum(map(sum, layout)) <= TASKS_PER_VIDEO[1]:
            break
    scenes = rng.choice(list(SCENES), size=n_phases, replace=False)
    colors = rng.choice(list(COLORS), size=2, replace=False)
    shapes = rng.choice(SHAPES, size=2, replace=False)
    grid = [(str(c), str(s)) for c in colors for s in shapes]
    pool = sorted(rng.choice(text.MOTIONS, size=4, replace=False).tolist(), key=text.MOTIONS.index)
    # Every object of the grid appears once before any repeats; consecutive steps differ.
    order = [grid[i] for i in rng.permutation(len(grid))]
    n_steps = sum(len(p) for p in layout)
    while len(order) < n_steps:
        order.append(grid[int(rng.choice([i for i in range(len(grid)) if grid[i] != order[-1]]))])

    phases = []
    objects = iter(order)
    for scene, step_tasks in zip(scenes, layout):
        steps = []
        for n_tasks in step_tasks:
            color, shape = next(objects)
            steps.append(_plan_step(rng, geo, fps, color, shape, str(scene), n_tasks, pool))
        lead_in = max(1, int(round(rng.uniform(*LEAD_IN_SECONDS) * fps)))
        caption = text.phase_caption(rng, str(scene), [s.name for s in steps])
        phases.append(PhasePlan(str(scene), lead_in, caption, steps))
    return phases


# --------------------------------------------------------------------------------------------------
# Noise and layout


def _noisy_count(rng: np.random.Generator, fraction: float, n: int) -> int:
    """floor(fraction * n + u), u ~ U[0, 1): exact in expectation, within one of fraction * n."""
    return min(n, int(math.floor(fraction * n + rng.random())))


def _idle_slots(
    rng: np.random.Generator, noise: NarrationNoise, phases: list[PhasePlan], fps: float
) -> dict[tuple[int, int], list[int]]:
    """Idle clips (frame counts) keyed by (phase, slot): slot j is just before step j, or after the last."""
    n_tasks = sum(len(s.tasks) for p in phases for s in p.steps)
    slots = [(i, j) for i, p in enumerate(phases) for j in range(len(p.steps) + 1)]
    out: dict[tuple[int, int], list[int]] = {}
    for _ in range(_noisy_count(rng, noise.unmatched_clips, n_tasks)):
        slot = slots[int(rng.integers(len(slots)))]
        out.setdefault(slot, []).append(max(2, int(round(rng.uniform(*TASK_SECONDS) * fps))))
    return out


def _noisy_narration(
    rng: np.random.Generator, noise: NarrationNoise, clean: list[tuple[float, float, str]], duration: float
) -> tuple[list[dict[str, Any]], list[str], list[Optional[list[float]]]]:
    """Shift some sentences, replace others with off-topic talk; returns (narration, kind per entry, true
    [start, end] per entry: the time of the task a sentence describes, None for off-topic talk)."""
    n = len(clean)
    n_shift = _noisy_count(rng, noise.shift, n)
    n_irrelevant = min(n - n_shift, _noisy_count(rng, noise.irrelevant, n))
    order = rng.permutation(n)
    kinds = ["clean"] * n
    for i in order[:n_shift]:
        kinds[i] = "shifted"
    for i in order[n_shift : n_shift + n_irrelevant]:
        kinds[i] = "irrelevant"
    entries, truth = [], []
    for (start, end, sentence), kind in zip(clean, kinds):
        truth.append(None if kind == "irrelevant" else [round(start, 3), round(end, 3)])
        if kind == "shifted":
            delta = float(rng.uniform(*noise.shift_seconds)) * (1 if rng.random() < 0.5 else -1)
            # Keep the sentence inside the video: turn around, or stop at the edge with the most room.
            if start + delta < 0 or end + delta > duration:
                delta = -delta
            if start + delta < 0 or end + delta > duration:
                delta = -start if start > duration - end else duration - end
            start, end = start + delta, end + delta
        elif kind == "irrelevant":
            sentence = text.irrelevant_sentence(rng)
        entries.append({"start": round(start, 3), "end": round(end, 3), "text": sentence})
    # A transcript is in time order; ties keep task order (stable sort).
    order_by_time = sorted(range(n), key=lambda i: entries[i]["start"])
    return ([entries[i] for i in order_by_time], [kinds[i] for i in order_by_time],
            [truth[i] for i in order_by_time])


def _shot_type(mean_size: float, frame_min: int) -> str:
    ratio = mean_size / frame_min
    return "close-up" if ratio >= 0.4 else "medium shot" if ratio >= 0.25 else "long shot"


class _Layout:
    """Lays the clean plan out on the frame axis, inserting idle clips, and collects what is drawn."""

    def __init__(self, height: int, width: int, fps: float, idle: dict[tuple[int, int], list[int]]):
        self.fps = fps
        self.frame_min = min(height, width)
        self.pan_per_frame = PAN_SPEED * self.frame_min / REFERENCE_HEIGHT / fps
        self.idle_plan = idle
        self.cursor = 0
        self.backgrounds: list[BackgroundSpan] = []
        self.sprites: list[SpriteSpan] = []
        self.idle: list[list[float]] = []
        self.narration: list[tuple[float, float, str]] = []
        self.cam_frames, self.cam_offsets = [0], [0.0]

    def sec(self, frame: int) -> float:
        return round(frame / self.fps, 6)

    def phase(self, i: int, phase: PhasePlan) -> dict[str, Any]:
        start = self.cursor
        self.cursor += phase.lead_in
        steps = []
        for j, step in enumerate(phase.steps):
            self.add_idle((i, j))
            steps.append(self.step(step))
        self.add_idle((i, len(phase.steps)))
        scene = SCENES[phase.scene]
        period = round(scene.period * self.frame_min / REFERENCE_HEIGHT, 3)
        self.backgrounds.append(
            BackgroundSpan(start, self.cursor, phase.scene, scene.rgb, scene.pattern, period, TEXTURE_AMPLITUDE)
        )
        return self.segment("phase", start, phase.scene, phase.caption, children=steps)

    def step(self, step: StepPlan) -> dict[str, Any]:
        start = self.cursor
        tasks = [self.task(step, task) for task in step.tasks]
        return self.segment("step", start, step.name, step.caption, children=tasks)

    def task(self, step: StepPlan, task: TaskPlan) -> dict[str, Any]:
        start = self.cursor
        self.cursor += task.frames
        self.sprites.append(
            SpriteSpan(
                start, self.cursor, step.shape, step.color, COLORS[step.color],
                task.center_from, task.center_to, task.size_from, task.size_to,
            )
        )
        if task.camera != "static":
            direction = 1.0 if task.camera == "pan right" else -1.0
            if self.cam_frames[-1] != start:
                self.cam_frames.append(start)
                self.cam_offsets.append(self.cam_offsets[-1])
            self.cam_frames.append(self.cursor)
            self.cam_offsets.append(round(self.cam_offsets[-1] + direction * self.pan_per_frame * task.frames, 3))
        self.narration.append((self.sec(start), self.sec(self.cursor), task.narration))
        script = {
            "shot_type": _shot_type((task.size_from + task.size_to) / 2, self.frame_min),
            "camera_movement": task.camera,
            "content": task.caption,
            "title": text.task_title(step.name, task.motion),
        }
        return self.segment("task", start, text.MOTION_LABELS[task.motion], task.caption, script=script)

    def add_idle(self, slot: tuple[int, int]) -> None:
        for n in self.idle_plan.get(slot, []):
            self.idle.append([self.sec(self.cursor), self.sec(self.cursor + n)])
            self.cursor += n

    def segment(self, level: str, start: int, label: str, caption: str, **extra: Any) -> dict[str, Any]:
        """A manifest segment from `start` to the current frame."""
        return {
            "level": level, "start": self.sec(start), "end": self.sec(self.cursor), "label": label,
            "caption": caption, **extra,
        }


def build_video(
    seed: int, index: int, noise: NarrationNoise, height: int, width: int, fps: float
) -> tuple[dict[str, Any], RenderSpec]:
    """The manifest record and render spec of video `index` of corpus `seed`."""
    structure_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(2)
    )
    phases = plan_video(structure_rng, height, width, fps)
    layout = _Layout(height, width, fps, _idle_slots(noise_rng, noise, phases, fps))
    segments = [layout.phase(i, phase) for i, phase in enumerate(phases)]
    duration = layout.sec(layout.cursor)
    narration, kinds, truth = _noisy_narration(noise_rng, noise, layout.narration, duration)
    spec = RenderSpec(
        height=height,
        width=width,
        fps=fps,
        num_frames=layout.cursor,
        keyframe_interval=max(1, int(round(KEYFRAME_SECONDS * fps))),
        backgrounds=tuple(layout.backgrounds),
        sprites=tuple(layout.sprites),
        camera=CameraTrack(tuple(layout.cam_frames), tuple(layout.cam_offsets)),
    )
    video_id = f"{CORPUS}-s{seed}-{index:05d}"
    record = {
        "video_id": video_id,
        "path": f"videos/{video_id}.mp4",
        "split": "val" if index % VAL_EVERY == VAL_EVERY - 1 else "train",
        "corpus": CORPUS,
        "duration": duration,
        "meta": {
            "generator": GENERATOR,
            "seed": seed,
            "index": index,
            "noise": asdict(noise),
            "render": spec.to_dict(),
            "idle": layout.idle,
            "narration_kind": kinds,
            "narration_true": truth,  # for measuring re-alignment: where each sentence belongs
        },
        "segments": segments,
        "narration": narration,
    }
    return record, spec


# --------------------------------------------------------------------------------------------------
# Corpus


def _check_args(num_videos: int, size: tuple[int, int], fps: float) -> None:
    if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 1:
        raise SynthError(f"num_videos must be a positive integer, got {num_videos!r}")
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise SynthError(f"size must be (height, width) integers, got {size!r}")
    h, w = size
    if h % 2 or w % 2 or min(h, w) < 48 or max(h, w) > 2160:
        raise SynthError(f"size must be even, at least 48 and at most 2160 pixels per side, got {w}x{h} (WxH)")
    if not (isinstance(fps, (int, float)) and 1.0 <= fps <= 60.0):
        raise SynthError(f"fps must be between 1 and 60, got {fps!r}")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SynthError(f"{out_dir}: output path exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise SynthError(f"{out_dir}: output folder is not empty (pass --overwrite to replace its corpus)")
        # Only files this generator writes are removed; anything else in the folder is left alone.
        for old in (out_dir / "videos").glob(f"{CORPUS}-*.mp4"):
            old.unlink()
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)


def synthesize_corpus(
    out_dir: str | Path,
    num_videos: int,
    seed: int = 0,
    noise: Optional[NarrationNoise] = None,
    size: tuple[int, int] = (96, 128),
    fps: float = 8.0,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Render `num_videos` videos into `out_dir/videos/` and write `out_dir/manifest.jsonl`.

    `noise=None` means the default `NarrationNoise()`; pass `NarrationNoise.preset("none")` for a clean
    track. `size` is (height, width). Returns the manifest path. Same arguments, same bytes.
    """
    from tqdm import tqdm

    from videolang.utils.io import atomic_open

    _check_args(num_videos, size, fps)
    noise = NarrationNoise() if noise is None else noise
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    manifest = out_dir / "manifest.jsonl"
    with atomic_open(manifest, "w") as f:
        for index in tqdm(range(num_videos), desc="synth", unit="video", disable=not progress):
            record, spec = build_video(seed, index, noise, size[0], size[1], float(fps))
            encode_mp4(render_frames(spec), out_dir / record["path"], spec.fps, spec.keyframe_interval)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return manifest

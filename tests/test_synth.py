"""Synthetic corpus: decoded frames show what the manifest says, noise is realised as asked, bytes repeat.

Pixel checks decode the mp4s with PyAV (seeking to each timestamp) and compare against the documented
closed-form rendering in `meta["render"]`, re-derived here rather than by calling the renderer. Scene,
object and motion are read back from pixels and must agree with the labels and captions.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from videolang.cli import main
from videolang.commands.synth import NOISE_CHOICES
from videolang.data.manifest import load_manifest, validate_manifest
from videolang.data.synth import (
    NOISE_PRESETS,
    NarrationNoise,
    SynthError,
    build_video,
    synthesize_corpus,
)
from videolang.data.synth_render import COLORS, SCENES, SHAPES, TEXTURE_AMPLITUDE, RenderSpec, render_frames
from videolang.data.synth_text import IRRELEVANT, MOTION_LABELS, MOTION_PHRASES, MOTIONS

SIZE = (96, 128)
FPS = 8.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return synthesize_corpus(out, 5, seed=3, noise=NarrationNoise(0.3, 0.2, 0.3), size=SIZE, fps=FPS)


@pytest.fixture(scope="module")
def videos(corpus):
    return load_manifest(corpus, check_files=True)


# --------------------------------------------------------------------------------------------------
# Reference helpers: decode at a timestamp, and the documented rendering formulas


class Decoder:
    """PyAV frames at timestamps: seek to the keyframe before `t`, decode up to the frame shown at `t`."""

    def __init__(self, path: Path):
        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def at(self, t: float) -> np.ndarray:
        self.container.seek(int(t / self.stream.time_base), stream=self.stream)
        shown = None
        for frame in self.container.decode(self.stream):
            if frame.time > t + 1e-6:
                break
            shown = frame
        assert shown is not None, f"nothing decoded at {t}"
        return shown.to_ndarray(format="rgb24").astype(np.int32)


def frame_index(t: float, fps: float = FPS) -> int:
    return int(math.floor(t * fps + 1e-6))


def camera_offset(render: dict, n: int) -> float:
    return float(np.interp(n, render["camera"]["frames"], render["camera"]["offsets"]))


def expected_background(render: dict, n: int) -> np.ndarray:
    bg = next(b for b in render["backgrounds"] if b["start"] <= n < b["end"])
    x = np.arange(render["width"])[None, :] + camera_offset(render, n)
    y = np.arange(render["height"])[:, None]
    u, w = 2 * np.pi * x / bg["period"], 2 * np.pi * y / bg["period"]
    v = {"stripes": np.sin(u) * np.ones_like(w), "tiles": np.sin(u) * np.sin(w), "waves": np.sin(u + w)}
    return np.clip(np.rint(np.asarray(bg["rgb"]) + bg["amplitude"] * v[bg["pattern"]][..., None]), 0, 255)


def sprite_state(render: dict, n: int):
    """(sprite, centre x, centre y, size) on frame n, or None."""
    for sp in render["sprites"]:
        if sp["start"] <= n < sp["end"]:
            t = (n - sp["start"]) / (sp["end"] - sp["start"])
            (x0, y0), (x1, y1) = sp["center_from"], sp["center_to"]
            size = sp["size_from"] + t * (sp["size_to"] - sp["size_from"])
            return sp, x0 + t * (x1 - x0), y0 + t * (y1 - y0), size
    return None


def far_from_sprite(render: dict, n: int, margin: float = 4.0) -> np.ndarray:
    keep = np.ones((render["height"], render["width"]), dtype=bool)
    state = sprite_state(render, n)
    if state is not None:
        _, cx, cy, size = state
        y, x = np.mgrid[: render["height"], : render["width"]]
        keep &= (np.abs(x - cx) > size / 2 + margin) | (np.abs(y - cy) > size / 2 + margin)
    return keep


def reference_mask(shape: str, cx: float, cy: float, size: float, hw: tuple[int, int]) -> np.ndarray:
    y, x = np.mgrid[: hw[0], : hw[1]]
    dx, dy, r = x - cx, y - cy, size / 2
    return {
        "circle": dx**2 + dy**2 <= r**2,
        "square": (np.abs(dx) <= r) & (np.abs(dy) <= r),
        "diamond": np.abs(dx) + np.abs(dy) <= r,
        "triangle": (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2),
    }[shape]


def colour_mask(frame: np.ndarray, rgb) -> np.ndarray:
    return np.linalg.norm(frame - np.asarray(rgb), axis=-1) < 70


def nearest(colour: np.ndarray, palette: dict) -> str:
    return min(palette, key=lambda k: np.linalg.norm(colour - np.asarray(palette[k])))


def read_motion(a: np.ndarray, b: np.ndarray, rgb) -> str:
    """The motion between two frames, from the centroid and area of the object-coloured pixels."""
    ma, mb = colour_mask(a, rgb), colour_mask(b, rgb)
    assert ma.sum() > 50 and mb.sum() > 50, "object not visible"
    ratio = mb.sum() / ma.sum()
    if ratio > 1.2:
        return "grow"
    if ratio < 1 / 1.2:
        return "shrink"
    (ya, xa), (yb, xb) = np.argwhere(ma).mean(0), np.argwhere(mb).mean(0)
    dx, dy = xb - xa, yb - ya
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def tasks_of(video):
    for phase in video.segments:
        for step in phase.children:
            for task in step.children:
                yield phase, step, task


# --------------------------------------------------------------------------------------------------
# Frames show what the manifest says


def test_phase_frames_show_the_scene_background(videos):
    for video in videos:
        render = video.meta["render"]
        with Decoder(video.resolved_path) as dec:
            for phase in video.segments:
                for t in (phase.start, (phase.start + phase.end) / 2, phase.end - 1 / FPS):
                    frame = dec.at(t)
                    n = frame_index(t)
                    keep = far_from_sprite(render, n)
                    err = np.abs(frame - expected_background(render, n))[keep]
                    assert err.mean() < 3 and np.percentile(err, 99) < 16, (video.video_id, phase.label, t)
                    scenes = {name: scene.rgb for name, scene in SCENES.items()}
                    assert nearest(np.median(frame[keep], axis=0), scenes) == phase.label


def test_step_frames_show_the_labelled_object(videos):
    checked = 0
    for video in videos:
        render = video.meta["render"]
        with Decoder(video.resolved_path) as dec:
            for phase, step, task in tasks_of(video):
                color, shape = step.label.split()
                t = (task.start + task.end) / 2
                frame = dec.at(t)
                _, cx, cy, size = sprite_state(render, frame_index(t))
                patch = frame[round(cy) - 1 : round(cy) + 2, round(cx) - 1 : round(cx) + 2]
                centre = np.median(patch.reshape(-1, 3), axis=0)
                assert np.abs(centre - COLORS[color]).max() < 25, (video.video_id, step.label, t)
                assert nearest(centre, COLORS) == color
                seen = colour_mask(frame, COLORS[color])
                iou = {}
                for s in SHAPES:
                    ref = reference_mask(s, cx, cy, size, SIZE)
                    iou[s] = (seen & ref).sum() / (seen | ref).sum()
                assert max(iou, key=iou.get) == shape and iou[shape] > 0.6, (video.video_id, step.label, iou)
                checked += 1
    assert checked > 30


def test_task_frames_show_the_captioned_motion(videos):
    for video in videos:
        with Decoder(video.resolved_path) as dec:
            for _, step, task in tasks_of(video):
                color, shape = step.label.split()
                length = task.end - task.start
                a, b = dec.at(task.start + 0.2 * length), dec.at(task.start + 0.8 * length)
                motion = read_motion(a, b, COLORS[color])
                assert task.label == MOTION_LABELS[motion], (video.video_id, task.caption)
                assert any(p in task.caption for p in MOTION_PHRASES[motion]), task.caption
                assert f"{color} {shape}" in task.caption and f"{color} {shape}" in step.caption
                assert any(p in step.caption for p in MOTION_PHRASES[motion]), step.caption


def test_camera_movement_in_script_matches_background_shift(videos):
    moves = Counter()
    for video in videos:
        with Decoder(video.resolved_path) as dec:
            for _, step, task in tasks_of(video):
                rgb = COLORS[step.label.split()[0]]
                # Half a second apart: the pan shifts the texture by ~4 px, well under half a period.
                a, b = dec.at(task.start), dec.at(task.start + 0.5)
                rows = ~(colour_mask(a, rgb) | colour_mask(b, rgb)).any(axis=1)
                ra, rb = a[rows].astype(float), b[rows].astype(float)
                # Content moving by s pixels means b[:, x] == a[:, x - s].
                width = ra.shape[1]
                err = {s: np.abs(rb[:, 10:-10] - ra[:, 10 - s : width - 10 - s]).mean() for s in range(-8, 9)}
                shift = min(err, key=err.get)
                expected = {"static": 0, "pan right": -1, "pan left": 1}[task.script["camera_movement"]]
                assert np.sign(shift) == expected, (video.video_id, task.start, task.script, err)
                moves[task.script["camera_movement"]] += 1
    assert moves["static"] and moves["pan left"] and moves["pan right"]


def test_idle_clips_show_the_scene_only_and_are_never_narrated(videos):
    idle_total = 0
    for video in videos:
        render = video.meta["render"]
        kinds = video.meta["narration_kind"]
        steps = [s for p in video.segments for s in p.children]
        with Decoder(video.resolved_path) as dec:
            for start, end in video.meta["idle"]:
                idle_total += 1
                t = (start + end) / 2
                frame = dec.at(t)
                assert sprite_state(render, frame_index(t)) is None
                assert np.abs(frame - expected_background(render, frame_index(t))).mean() < 3
                assert not any(colour_mask(frame, rgb).sum() > 20 for rgb in COLORS.values())
                assert any(p.start <= start and end <= p.end for p in video.segments)
                assert not any(s.start < end and start < s.end for s in steps)
                for n, kind in zip(video.narration, kinds):
                    if kind == "clean":
                        assert not (n.start < end and start < n.end)
    assert idle_total > 0


def test_files_decode_with_decord_and_keyframes_every_two_seconds(videos):
    import decord

    video = videos[0]
    render = video.meta["render"]
    with av.open(str(video.resolved_path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == render["num_frames"]
    assert (frames[0].height, frames[0].width) == SIZE
    keys = [i for i, f in enumerate(frames) if f.key_frame]
    assert keys == list(range(0, render["num_frames"], render["keyframe_interval"]))
    assert render["keyframe_interval"] == 2 * FPS
    reader = decord.VideoReader(str(video.resolved_path))
    assert len(reader) == render["num_frames"]
    for n in (0, len(reader) // 2, len(reader) - 1):
        diff = np.abs(reader[n].asnumpy().astype(int) - frames[n].to_ndarray(format="rgb24").astype(int))
        assert diff.mean() < 2


# --------------------------------------------------------------------------------------------------
# Manifest content


def test_manifest_validates_with_splits_labels_and_scripts(corpus, videos):
    assert validate_manifest(corpus, check_files=True) == ([], [])
    assert [v.split for v in videos] == ["train", "train", "train", "train", "val"]
    assert len({v.video_id for v in videos}) == len(videos)
    for video in videos:
        assert video.corpus == "synth" and video.meta["seed"] == 3
        assert video.duration == pytest.approx(video.meta["render"]["num_frames"] / FPS)
        assert [p.label for p in video.segments] == [b["scene"] for b in video.meta["render"]["backgrounds"]]
        # Phases tile the video.
        edges = [0.0] + [x for p in video.segments for x in (p.start, p.end)] + [video.duration]
        assert all(a == pytest.approx(b) for a, b in zip(edges[::2], edges[1::2]))
        for phase, step, task in tasks_of(video):
            assert task.caption and step.caption and phase.caption
            assert set(task.script) == {"shot_type", "camera_movement", "content", "title"}
            assert task.script["content"] == task.caption
            ratio = _mean_size(video, task) / min(SIZE)
            want = "close-up" if ratio >= 0.4 else "medium shot" if ratio >= 0.25 else "long shot"
            assert task.script["shot_type"] == want


def _mean_size(video, task) -> float:
    sp = sprite_state(video.meta["render"], frame_index(task.start))[0]
    return (sp["size_from"] + sp["size_to"]) / 2


def test_captions_need_both_appearance_and_motion():
    phrase_owner = {p: m for m in MOTIONS for p in MOTION_PHRASES[m]}
    durations = []
    for index in range(20):
        record, _ = build_video(0, index, NarrationNoise.preset("none"), *SIZE, FPS)
        pairs = []
        for phase in record["segments"]:
            for step in phase["children"]:
                for task in step["children"]:
                    caption = task["caption"]
                    motions = {m for p, m in phrase_owner.items() if p in caption}
                    assert len(motions) == 1, caption  # exactly one motion reads from the words
                    assert step["label"] in caption
                    pairs.append((step["label"], motions.pop()))
        objects = {o for o, _ in pairs}
        colors, shapes = {o.split()[0] for o in objects}, {o.split()[1] for o in objects}
        # All four colour x shape combinations appear: neither colour nor shape alone names an object.
        assert len(colors) == 2 and len(shapes) == 2 and len(objects) == 4
        by_object = Counter(o for o, _ in set(pairs))
        by_motion = Counter(m for _, m in set(pairs))
        assert max(by_object.values()) >= 2 and max(by_motion.values()) >= 2
        durations.append(record["duration"])
    assert 20 <= np.mean(durations) <= 40 and max(durations) <= 60


# --------------------------------------------------------------------------------------------------
# Noise


def _records(noise: NarrationNoise, n: int = 40) -> list[dict]:
    return [build_video(11, i, noise, *SIZE, FPS)[0] for i in range(n)]


def test_narration_noise_is_realised_against_the_clean_track():
    clean = _records(NarrationNoise.preset("none"))
    noise = NarrationNoise(shift=0.3, irrelevant=0.2, unmatched_clips=0.0)
    noisy = _records(noise)
    motion_words = {w for phrases in MOTION_PHRASES.values() for p in phrases for w in p.split()}
    visual = set(COLORS) | set(SHAPES) | set(SCENES) | motion_words
    visual -= {"the", "to", "in", "toward"}
    totals = Counter()
    for c, d in zip(clean, noisy):
        assert c["segments"] == d["segments"] and c["meta"]["render"] == d["meta"]["render"]
        assert all(k == "clean" for k in c["meta"]["narration_kind"])
        n = len(c["narration"])
        clean_entries = Counter((e["start"], e["end"], e["text"]) for e in c["narration"])
        clean_texts = {e["text"] for e in c["narration"]}
        kinds = Counter()
        for entry, kind in zip(d["narration"], d["meta"]["narration_kind"]):
            key = (entry["start"], entry["end"], entry["text"])
            if clean_entries[key]:
                clean_entries[key] -= 1
                got = "clean"
            elif entry["text"] not in clean_texts:
                got = "irrelevant"
                assert entry["text"] in IRRELEVANT and not visual & set(entry["text"].replace(",", "").split())
            else:
                got = "shifted"
                same = [e for e in c["narration"] if e["text"] == entry["text"]]
                assert all(abs(entry["start"] - e["start"]) >= 1.0 for e in same)
                length = entry["end"] - entry["start"]
                assert any(abs(length - (e["end"] - e["start"])) < 2e-3 for e in same)
                assert 0 <= entry["start"] and entry["end"] <= d["duration"]
            assert got == kind
            kinds[got] += 1
        assert kinds["shifted"] in (math.floor(noise.shift * n), math.ceil(noise.shift * n))
        assert kinds["irrelevant"] in (math.floor(noise.irrelevant * n), math.ceil(noise.irrelevant * n))
        assert [e["start"] for e in d["narration"]] == sorted(e["start"] for e in d["narration"])
        totals.update(kinds)
        totals["all"] += n
    assert totals["shifted"] / totals["all"] == pytest.approx(noise.shift, abs=0.03)
    assert totals["irrelevant"] / totals["all"] == pytest.approx(noise.irrelevant, abs=0.03)


def test_unmatched_clips_insert_idle_time_without_changing_the_structure():
    clean = _records(NarrationNoise.preset("none"))
    noisy = _records(NarrationNoise(0.0, 0.0, unmatched_clips=0.4))

    def structure(record):
        return [(s["label"], s["caption"], s["level"]) for p in record["segments"] for s in _walk(p)]

    idle = tasks = 0
    for c, d in zip(clean, noisy):
        assert structure(c) == structure(d)
        n = len(c["narration"])
        k = len(d["meta"]["idle"])
        assert k in (math.floor(0.4 * n), math.ceil(0.4 * n))
        added = sum(e - s for s, e in d["meta"]["idle"])
        assert d["duration"] == pytest.approx(c["duration"] + added, abs=1e-4)
        assert [e["text"] for e in d["narration"]] == [e["text"] for e in c["narration"]]
        idle, tasks = idle + k, tasks + n
    assert idle / tasks == pytest.approx(0.4, abs=0.03)


def _walk(seg: dict):
    yield seg
    for child in seg.get("children", []):
        yield from _walk(child)


@pytest.mark.parametrize(
    "kwargs",
    [{"shift": -0.1}, {"irrelevant": 1.5}, {"unmatched_clips": 2.0}, {"shift": 0.7, "irrelevant": 0.4},
     {"shift_seconds": (0.0, 1.0)}],
)
def test_bad_noise_is_rejected_naming_the_field(kwargs):
    with pytest.raises(SynthError, match="noise."):
        replace(NarrationNoise(), **kwargs)


def test_cli_presets_exist():
    assert set(NOISE_CHOICES) == set(NOISE_PRESETS)
    assert NOISE_PRESETS["none"] == NarrationNoise(0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------------
# Determinism and the command line


def test_same_seed_same_bytes_and_videos_independent_of_corpus_size(tmp_path):
    kw = dict(size=(48, 64), fps=4.0)
    a = synthesize_corpus(tmp_path / "a", 2, seed=5, **kw)
    b = synthesize_corpus(tmp_path / "b", 3, seed=5, **kw)
    c = synthesize_corpus(tmp_path / "c", 2, seed=6, **kw)
    lines_a, lines_b = a.read_text().splitlines(), b.read_text().splitlines()
    assert lines_a == lines_b[:2]
    assert a.read_text() != c.read_text()
    for name in ("synth-s5-00000.mp4", "synth-s5-00001.mp4"):
        assert (a.parent / "videos" / name).read_bytes() == (b.parent / "videos" / name).read_bytes()


def test_cli_writes_corpus_at_requested_size(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["synth", "--out", str(out), "--videos", "1", "--size", "64x48", "--fps", "4", "--noise", "none",
                 "--unmatched", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert str((out / "manifest.jsonl").resolve()) in printed
    (video,) = load_manifest(out / "manifest.jsonl", check_files=True)
    render = video.meta["render"]
    assert (render["height"], render["width"], render["fps"]) == (48, 64, 4.0)
    assert video.meta["noise"]["unmatched_clips"] == 0.5 and video.meta["noise"]["shift"] == 0.0
    with av.open(str(video.resolved_path)) as c:
        frame = next(c.decode(video=0))
    assert (frame.height, frame.width) == (48, 64)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--size", "12x"], "--size"),
        (["--size", "127x96"], "size"),
        (["--fps", "0"], "fps"),
        (["--videos", "0"], "num_videos"),
        (["--noise", "loud"], "noise preset"),
        (["--shift", "1.5"], "noise.shift"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, needle):
    assert main(["synth", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_non_empty_out_dir_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(out), "--videos", "1", "--size", "64x48"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["synth", "--out", str(out), "--videos", "1", "--size", "64x48", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "videos" / "synth-s0-00000.mp4").is_file()


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "example:\n  videolang synth --out" in capsys.readouterr().out


def test_texture_amplitude_keeps_objects_and_scenes_apart():
    # The pixel checks above rely on this: no textured background pixel is near any object colour.
    for scene in SCENES.values():
        for rgb in COLORS.values():
            assert np.linalg.norm(np.subtract(scene.rgb, rgb)) - TEXTURE_AMPLITUDE * math.sqrt(3) > 70


def test_render_spec_round_trips_through_the_manifest_meta(videos):
    meta = videos[0].meta["render"]
    spec = RenderSpec.from_dict(meta)
    assert json.loads(json.dumps(spec.to_dict())) == meta
    frames = render_frames(spec)
    assert frames.shape == (meta["num_frames"], *SIZE, 3)
    # The decoded first frame is the rendered one up to compression.
    with av.open(str(videos[0].resolved_path)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(first - frames[0]).mean() < 3

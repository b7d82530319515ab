"""`videolang extract`: clip and frame features match the encoder on independently read clips; reruns
encode only what is missing (after a deleted file or an exception mid-run); broken videos are listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from videolang.cli import main
from videolang.data.manifest import frame_times, load_manifest
from videolang.data.synth import synthesize_corpus
from videolang.data.video import read_clip
from videolang.eval.extract import (
    ExtractError,
    ExtractSettings,
    decode_size,
    extract_features,
    feature_file,
    read_features,
)
from videolang.models import VideoEncoder, VideoEncoderConfig

FRAMES = 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return synthesize_corpus(tmp_path_factory.mktemp("synth"), 3, seed=1, size=(48, 64), fps=4.0)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """An exported encoder whose input size equals the synthetic videos' height: no resizing anywhere."""
    torch.manual_seed(1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=48, patch_size=16)
    encoder = VideoEncoder(VideoEncoderConfig(vision=vision, embed_dim=8, temporal_layers=1, max_frames=4))
    return encoder.save_pretrained(tmp_path_factory.mktemp("encoder"))


def encode(encoder: VideoEncoder, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder.encode(frames[None])[0]


def test_clip_features_end_to_end(manifest, model_dir, tmp_path, capsys):
    out = tmp_path / "feats"
    argv = ["extract", "--model", str(model_dir), "--manifest", str(manifest), "--out", str(out),
            "--level", "step", "--num-frames", str(FRAMES), "--batch-size", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and "3 extracted" in printed
    index = json.loads((out / "index.json").read_text())
    assert index["settings"] == {"level": "step", "num_frames": FRAMES} and index["dim"] == 16
    assert index["model"] == str(model_dir.resolve())
    from videolang.export import load_video_encoder

    encoder = load_video_encoder(model_dir)
    for video in load_manifest(manifest):
        steps = list(video.iter_segments("step"))
        entry = index["videos"][video.video_id]
        assert entry == {"status": "ok", "file": f"{video.video_id}.safetensors", "count": len(steps), "resumed": False}
        tensors, meta = read_features(out / entry["file"])
        assert meta["video_id"] == video.video_id and meta["segment_ids"] == [s.segment_id for s in steps]
        assert tensors["start"].tolist() == [s.start for s in steps]
        assert tensors["end"].tolist() == [s.end for s in steps]
        assert tensors["features"].shape == (len(steps), 16)
        for row, step in zip(tensors["features"], steps):
            frames = read_clip(video.resolved_path, step.start, step.end, num_frames=FRAMES, backend="pyav")
            torch.testing.assert_close(row, encode(encoder, frames), atol=1e-5, rtol=0)


def test_frame_features_from_an_exported_encoder(manifest, encoder_dir, tmp_path):
    out = tmp_path / "feats"
    argv = ["extract", "--model", str(encoder_dir), "--manifest", str(manifest), "--out", str(out), "--fps", "0.5",
            "--num-frames", "2"]
    assert main(argv) == 0
    encoder = VideoEncoder.from_pretrained(encoder_dir)
    video = load_manifest(manifest)[0]
    tensors, meta = read_features(feature_file(out, video.video_id))
    times = frame_times(video.duration, 0.5)
    assert meta["settings"] == {"fps": 0.5, "num_frames": 2} and "segment_ids" not in meta
    assert tensors["times"].tolist() == times and tensors["features"].shape == (len(times), 8)
    # Sample i is a 2-frame window centred on it: the frames shown at times[i - 1] and times[i].
    for i in (0, len(times) // 2, len(times) - 1):
        window = [times[max(i - 1, 0)], times[i]]
        frames = torch.cat([read_clip(video.resolved_path, t - 1.0, t + 1.0, num_frames=1) for t in window])
        torch.testing.assert_close(tensors["features"][i], encode(encoder, frames), atol=1e-5, rtol=0)


def test_frame_features_without_a_manifest_duration(manifest, encoder_dir, tmp_path):
    """`duration` is optional: the file's own duration decides how many frames there are."""
    rec = json.loads(manifest.read_text().splitlines()[0])
    full = load_manifest(manifest)[0]
    small = tmp_path / "m.jsonl"
    small.write_text(json.dumps({"video_id": rec["video_id"], "path": str(full.resolved_path)}) + "\n")
    out = tmp_path / "feats"
    assert main(["extract", "--model", str(encoder_dir), "--manifest", str(small), "--out", str(out),
                 "--fps", "0.5", "--num-frames", "1"]) == 0
    tensors, _ = read_features(feature_file(out, rec["video_id"]))
    assert tensors["features"].shape[0] == len(frame_times(full.duration, 0.5)) > 0


def test_decode_size_keeps_the_aspect_with_the_short_side_at_the_input_size():
    assert decode_size(720, 1280, 224) == (224, 398)
    assert decode_size(1080, 608, 224) == (398, 224)
    assert decode_size(224, 300, 224) is None and decode_size(96, 128, 224) is None


class Counting:
    """Wraps `encoder.encode`, counting clips, optionally raising once `fail_after` clips were encoded."""

    def __init__(self, encoder: VideoEncoder, fail_after: int | None = None):
        self.inner, self.fail_after, self.clips = encoder.encode, fail_after, 0
        encoder.encode = self

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.clips + len(frames) > self.fail_after:
            raise RuntimeError("injected failure")
        self.clips += len(frames)
        return self.inner(frames)


def run_api(model_dir: Path, manifest: Path, out: Path, fail_after: int | None = None):
    from videolang.export import load_video_encoder

    encoder = load_video_encoder(model_dir)
    counter = Counting(encoder, fail_after)
    settings = ExtractSettings(level="step", num_frames=FRAMES)
    result = extract_features(encoder, load_manifest(manifest), out, settings, model="m", batch_size=2, progress=False)
    return result, counter


def snapshot(out: Path) -> dict[str, tuple[int, dict]]:
    """mtime and contents (tensors as lists, metadata) of every feature file."""
    files = {}
    for path in sorted(out.glob("*.safetensors")):
        tensors, meta = read_features(path)
        files[path.name] = (path.stat().st_mtime_ns, {**meta, **{k: v.tolist() for k, v in tensors.items()}})
    return files


def test_rerun_encodes_only_the_missing_video(manifest, model_dir, tmp_path):
    out = tmp_path / "feats"
    videos = load_manifest(manifest)
    steps = {v.video_id: len(list(v.iter_segments("step"))) for v in videos}
    _, counter = run_api(model_dir, manifest, out)
    assert counter.clips == sum(steps.values())
    before = snapshot(out)
    missing = videos[1].video_id
    feature_file(out, missing).unlink()
    result, counter = run_api(model_dir, manifest, out)
    assert counter.clips == steps[missing]
    assert result.extracted == [missing] and sorted(result.resumed) == sorted(set(steps) - {missing})
    after = snapshot(out)
    for name, (mtime, data) in before.items():
        assert after[name][1] == data
        if name != f"{missing}.safetensors":
            assert after[name][0] == mtime
    index = json.loads((out / "index.json").read_text())
    assert [v["resumed"] for v in index["videos"].values()] == [True, False, True]


def test_exception_mid_run_then_rerun_completes(manifest, model_dir, tmp_path):
    out, clean = tmp_path / "feats", tmp_path / "clean"
    run_api(model_dir, manifest, clean)
    videos = load_manifest(manifest)
    first = len(list(videos[0].iter_segments("step")))
    with pytest.raises(RuntimeError, match="injected"):
        run_api(model_dir, manifest, out, fail_after=first + 1)
    index = json.loads((out / "index.json").read_text())
    assert [v["status"] for v in index["videos"].values()] == ["ok", "pending", "pending"]
    assert [p.name for p in out.glob("*.safetensors")] == [f"{videos[0].video_id}.safetensors"]
    done = snapshot(out)
    result, counter = run_api(model_dir, manifest, out)
    assert result.resumed == [videos[0].video_id] and len(result.extracted) == 2
    assert counter.clips == sum(len(list(v.iter_segments("step"))) for v in videos[1:])
    assert snapshot(out)[f"{videos[0].video_id}.safetensors"] == done[f"{videos[0].video_id}.safetensors"]
    assert not list(out.glob(".*.tmp"))
    for name, (_, data) in snapshot(clean).items():
        assert snapshot(out)[name][1] == data


def test_rerun_with_other_settings_is_refused(manifest, model_dir, tmp_path):
    out = tmp_path / "feats"
    run_api(model_dir, manifest, out)
    from videolang.export import load_video_encoder

    before = (out / "index.json").read_text(), snapshot(out)
    with pytest.raises(ExtractError, match="made with settings"):
        extract_features(load_video_encoder(model_dir), load_manifest(manifest), out,
                         ExtractSettings(level="task", num_frames=FRAMES), model="m", progress=False)
    assert ((out / "index.json").read_text(), snapshot(out)) == before


def with_broken_videos(manifest: Path, folder: Path) -> Path:
    """The synthetic manifest plus a garbage .mp4 and a missing file, next to the same videos."""
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[0])
    (manifest.parent / "videos" / "garbage.mp4").write_bytes(os.urandom(2048))
    extra = [dict(record, video_id="garbage", path="videos/garbage.mp4"),
             dict(record, video_id="gone", path="videos/gone.mp4")]
    out = manifest.parent / f"broken-{folder.name}.jsonl"
    out.write_text("\n".join(lines[:1] + [json.dumps(r) for r in extra] + lines[1:]) + "\n")
    return out


def test_undecodable_videos_are_skipped_and_listed(manifest, model_dir, tmp_path, capsys):
    broken = with_broken_videos(manifest, tmp_path)
    out = tmp_path / "feats"
    argv = ["extract", "--model", str(model_dir), "--manifest", str(broken), "--out", str(out), "--level", "phase",
            "--num-frames", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 failed" in printed and "  garbage: " in printed and "  gone: " in printed
    videos = json.loads((out / "index.json").read_text())["videos"]
    assert list(videos)[:3] == ["synth-s1-00000", "garbage", "gone"]
    assert videos["garbage"]["status"] == videos["gone"]["status"] == "failed"
    assert "garbage.mp4" in videos["garbage"]["reason"] and "gone.mp4" in videos["gone"]["reason"]
    assert sum(v["status"] == "ok" for v in videos.values()) == 3
    assert not feature_file(out, "garbage").exists()


@pytest.mark.parametrize(
    "settings",
    [ExtractSettings(level="step", num_frames=2), ExtractSettings(fps=0.25, num_frames=1)],
    ids=["clips", "frames"],
)
def test_a_video_failing_after_its_probe_leaves_no_partial_file(manifest, model_dir, tmp_path, monkeypatch, settings):
    import videolang.eval.features as features
    from videolang.data.video import VideoDecodeError
    from videolang.export import load_video_encoder

    videos = load_manifest(manifest)
    bad = str(videos[1].resolved_path)
    calls = {"bad": 0}

    def flaky_read_clip(path, start=None, *args, **kwargs):
        if str(path) == bad:
            calls["bad"] += 1
            # Clip mode: the first segments decode, a later one fails. Frame mode reads the video at once.
            if kwargs.get("sampling") == "fps" or start > 5:
                raise VideoDecodeError(bad, "undecodable", "corrupt packet")
        return read_clip(path, start, *args, **kwargs)

    monkeypatch.setattr(features, "read_clip", flaky_read_clip)
    result = extract_features(load_video_encoder(model_dir), videos, tmp_path, settings, progress=False)
    assert calls["bad"] >= 1 and list(result.failed) == [videos[1].video_id]
    assert "corrupt packet" in result.failed[videos[1].video_id]
    assert not feature_file(tmp_path, videos[1].video_id).exists()
    assert len(result.extracted) == 2


def test_nothing_decodable_fails_with_one_line(manifest, model_dir, tmp_path, capsys):
    broken = with_broken_videos(manifest, tmp_path)
    only_broken = tmp_path / "only.jsonl"
    only_broken.write_text("\n".join(broken.read_text().splitlines()[1:3]) + "\n")
    only_broken.with_name("videos").symlink_to(manifest.parent / "videos")
    argv = ["extract", "--model", str(model_dir), "--manifest", str(only_broken), "--out", str(tmp_path / "f"),
            "--level", "phase"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("videolang extract: error: no video could be extracted")


def test_cli_errors_are_one_line(manifest, model_dir, tmp_path, capsys):
    def error(argv: list[str]) -> str:
        assert main(["extract", "--manifest", str(manifest), "--out", str(tmp_path / "f"), *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "model folder not found" in error(["--model", str(tmp_path / "nope"), "--level", "step"])
    too_many = error(["--model", str(model_dir), "--level", "step", "--num-frames", "9"])
    assert "exceeds the encoder's max_frames=8" in too_many
    assert "no video in the manifest has 'clip' segments" in error(["--model", str(model_dir), "--level", "clip"])
    assert "no videos in split 'test'" in error(["--model", str(model_dir), "--level", "step", "--split", "test"])

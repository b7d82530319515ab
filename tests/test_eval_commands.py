"""`videolang eval ...` end-to-end on a tiny random model, plus oracle encoders that must score 100%."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videolang.cli import main
from videolang.config import ModelConfig
from videolang.data.manifest import frame_labels, load_manifest
from videolang.data.synth import synthesize_corpus
from videolang.eval import tasks
from videolang.eval.loading import load_eval_model
from videolang.models import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evalcmd")
    model = build_model(ModelConfig(video_encoder="tiny", text_encoder="tiny", embed_dim=16, caption_head=True))
    model.save_pretrained(root / "model")
    manifest = synthesize_corpus(root / "data", 5, seed=2)
    return root / "model", manifest


@pytest.mark.parametrize(
    "task, level, extra, keys",
    [
        ("retrieval", "task", [], ["t2v", "v2t"]),
        ("qa", "task", ["--choices", "4"], ["accuracy"]),
        ("recognition", "phase", ["--smooth", "3"], ["accuracy", "macro_f1", "confusion"]),
        ("segmentation", "step", ["--switch-penalty", "0.5"], ["acc", "edit", "F1@10", "F1@25", "F1@50"]),
        ("segmentation", "phase", ["--probe"], ["acc", "edit"]),
        ("captioning", "task", ["--batch-size", "32"], ["BLEU-4", "CIDEr-D", "shot_type_acc", "camera_movement_acc"]),
    ],
)
def test_eval_command_writes_results(setup, tmp_path, capsys, task, level, extra, keys):
    model, manifest = setup
    out = tmp_path / task
    code = main(["eval", task, "--model", str(model), "--manifest", str(manifest), "--level", level,
                 "--num-frames", "2", "--out", str(out), "--no-progress", *extra])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == task and all(k in results for k in keys)
    assert (out / "results.txt").read_text().strip()
    assert str(out / "results.json") in capsys.readouterr().out
    for plot in results.get("plots", []):
        assert Path(plot).is_file() and Path(plot).stat().st_size > 1000


def test_eval_errors_are_one_line(setup, tmp_path, capsys):
    model, manifest = setup
    assert main(["eval", "retrieval", "--model", str(tmp_path / "none"), "--manifest", str(manifest)]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert main(["eval", "retrieval", "--model", str(model), "--manifest", str(manifest), "--level", "scene"]) == 2
    assert "unknown level 'scene'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, extra, message",
    [
        ("segmentation", ["--fps", "0"], "--fps must be a positive number"),
        ("segmentation", ["--smooth", "2"], "--smooth must be an odd number"),
        ("recognition", ["--prompt", "{label}"], "--prompt must contain one '{}'"),
        ("recognition", ["--window", "0"], "--window must be at least 1"),
        ("qa", ["--choices", "1"], "--choices must be at least 2"),
        ("retrieval", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_arguments_fail_before_any_work(setup, capsys, task, extra, message):
    model, manifest = setup
    assert main(["eval", task, "--model", str(model), "--manifest", str(manifest), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_video_shorter_than_one_frame_is_skipped(setup, tmp_path):
    model, manifest = setup
    videos = load_manifest(manifest)
    videos[0].duration = 0.4  # less than one frame at 1 fps
    res = tasks.run_recognition(load_eval_model(model), videos, tasks.EvalOptions(level="phase", progress=False),
                                tmp_path, videos)
    assert res["videos"] == len(videos) - 1 and res["undecodable_videos"] == 1


def test_exported_encoder_needs_text_for_zero_shot(setup, tmp_path, capsys):
    model, manifest = setup
    enc_dir = tmp_path / "encoder"
    load_eval_model(model).video.save_pretrained(enc_dir)
    assert main(["eval", "recognition", "--model", str(enc_dir), "--manifest", str(manifest), "--level", "phase",
                 "--no-progress"]) == 2
    assert "has no text tower" in capsys.readouterr().err
    # ... but a linear probe needs no text tower.
    assert main(["eval", "recognition", "--model", str(enc_dir), "--manifest", str(manifest), "--level", "phase",
                 "--probe", "--out", str(tmp_path / "p"), "--no-progress"]) == 0


# --------------------------------------------------------------------------------------------------
# Oracles: encoders that know the answer. A perfect score proves clips, captions and labels are
# aligned through reading, batching, decoding and metric computation.


class _Oracle:
    """Maps each clip to the one-hot of its caption (by reading the clip's source via a side table)."""

    def __init__(self, vocab: list[str]):
        self.vocab = {c: i for i, c in enumerate(vocab)}

    def onehot(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(self.vocab))
        out[torch.arange(len(texts)), torch.tensor([self.vocab[t] for t in texts])] = 1
        return out


def test_retrieval_and_qa_oracle(setup, tmp_path, monkeypatch):
    model, manifest = setup
    videos = load_manifest(manifest)
    for v in videos:  # captions = motion labels: many clips now share a caption
        for seg in v.iter_segments("task"):
            seg.caption = seg.label
    em = load_eval_model(model)
    from videolang.data.manifest import clip_pairs

    pairs = clip_pairs(videos, "task")
    oracle = _Oracle(sorted({p.caption for p in pairs}))

    monkeypatch.setattr(tasks, "clip_embeddings", lambda encode, pairs, **kw: _clip_feats(pairs, oracle))
    monkeypatch.setattr(em, "full", _FakeFull(oracle))
    opts = tasks.EvalOptions(level="task", choices=4, progress=False)
    res = tasks.run_retrieval(em, videos, opts, tmp_path)
    # Clips share captions; identical captions are one query matching all their clips, so a perfect
    # model is perfect in both directions.
    assert res["captions"] < res["clips"] == len(pairs)
    for direction in ("t2v", "v2t"):
        assert res[direction]["R@1"] == 100.0 and res[direction]["MdR"] == 1.0
    assert tasks.run_qa(em, videos, opts, tmp_path)["accuracy"] == 100.0


def _clip_feats(pairs, oracle):
    from videolang.eval.features import ClipFeatures

    return ClipFeatures(oracle.onehot([p.caption for p in pairs]), list(range(len(pairs))), {})


class _FakeFull:
    caption_head = None

    def __init__(self, oracle):
        self.oracle = oracle

    def encode_text(self, texts):
        known = [t if t in self.oracle.vocab else next(iter(self.oracle.vocab)) for t in texts]
        return self.oracle.onehot(known)


def test_recognition_and_segmentation_oracle(setup, tmp_path, monkeypatch):
    model, manifest = setup
    videos = load_manifest(manifest)
    em = load_eval_model(model)
    classes = tasks._class_names(videos, "phase")
    prompt = "a {} scene"
    by_prompt = {prompt.format(c): i for i, c in enumerate(classes)}

    def fake_frames(encode, videos, fps, **kw):
        for vi, video in enumerate(videos):
            labels = frame_labels(video, "phase", fps)
            out = torch.zeros(len(labels), len(classes))
            for i, lbl in enumerate(labels):
                out[i, classes.index(lbl)] = 1
            yield vi, out

    class Text:
        caption_head = None

        @staticmethod
        def encode_text(texts):
            e = torch.zeros(len(texts), len(classes))
            e[torch.arange(len(texts)), torch.tensor([by_prompt[t] for t in texts])] = 1
            return e

    monkeypatch.setattr(tasks, "frame_embeddings_many", fake_frames)
    monkeypatch.setattr(em, "full", Text())
    opts = tasks.EvalOptions(level="phase", prompt=prompt, progress=False)
    rec = tasks.run_recognition(em, videos, opts, tmp_path, videos)
    assert rec["accuracy"] == 100.0 and rec["macro_f1"] == 100.0
    seg = tasks.run_segmentation(em, videos, opts, tmp_path, videos)
    assert seg["acc"] == 100.0 and seg["edit"] == 100.0 and seg["F1@50"] == 100.0


@pytest.mark.parametrize("window", [1, 3, 4])
def test_frame_embeddings_chunking_is_invisible(setup, window):
    """Reading a video in chunks gives the same per-frame features as one big chunk, and frame i is
    the clip of `window` frames centred on the middle of its 1/fps interval."""
    from videolang.data.video import read_clip
    from videolang.eval.features import frame_embeddings

    model, manifest = setup
    video = load_manifest(manifest)[0]
    calls = []

    def encode(clips):  # identity-like "encoder": mean pixel of each frame of the clip
        calls.append(clips.shape[0])
        # Sums of uint8 pixels are integers below 2**24, exact in float32 in any order, so the batch size
        # (and hence the reduction kernel) cannot change a bit of the result.
        return clips.float().mean(dim=(2, 3, 4))

    small = frame_embeddings(encode, video, 2.0, window=window, batch_size=5)
    big = frame_embeddings(encode, video, 2.0, window=window, batch_size=10_000)
    assert len(calls) > 2 and torch.equal(small, big)
    n = small.shape[0]
    assert n == len(frame_labels(video, "phase", 2.0))
    every = read_clip(video.resolved_path, 0.25, video.span_end, num_frames=None, sampling="fps", fps=2.0)
    means = every.float().mean(dim=(1, 2, 3))
    for i in (0, n // 2, n - 1):
        idx = [min(max(i + k - window // 2, 0), n - 1) for k in range(window)]
        assert torch.allclose(small[i], means[idx])


# --------------------------------------------------------------------------------------------------
# Reading through the data loader: workers change nothing but speed; bad files are skipped and counted.


def _with_corrupt_video(manifest: Path, tmp_path: Path, which: int = 1):
    import dataclasses

    videos = load_manifest(manifest)
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    videos[which] = dataclasses.replace(videos[which], path=str(bad), resolved_path=bad)
    return videos


def _pixel_means(clips):  # integer sums: exact in any order, so batching cannot change a bit
    return clips.float().mean(dim=(2, 3, 4))


@pytest.mark.parametrize("workers", [0, 2])
def test_clip_embeddings_skip_a_corrupt_video_in_input_order(setup, tmp_path, workers, caplog):
    from videolang.data.manifest import clip_pairs
    from videolang.data.video import read_clip
    from videolang.eval.features import clip_embeddings

    _, manifest = setup
    videos = _with_corrupt_video(manifest, tmp_path)
    pairs = clip_pairs(videos, "task")
    got = clip_embeddings(_pixel_means, pairs, num_frames=2, size=(32, 32), batch_size=3, num_workers=workers,
                          progress=False)
    bad = str(tmp_path / "corrupt.mp4")
    expected = [i for i, p in enumerate(pairs) if str(p.path) != bad]
    assert got.kept == expected and list(got.failed) == [bad]
    # Row r is the clip of pair kept[r], read again here in this process.
    for r in (0, len(expected) // 2, len(expected) - 1):
        p = pairs[expected[r]]
        ref = read_clip(p.path, p.start, p.end, num_frames=2, size=(32, 32))
        assert torch.equal(got.embeddings[r], _pixel_means(ref[None])[0])
    assert sum("corrupt.mp4" in rec.getMessage() for rec in caplog.records) == 1  # logged once, not per clip


def test_frame_embeddings_with_workers_match_the_calling_process(setup, tmp_path):
    from videolang.data.video import VideoDecodeError
    from videolang.eval.features import frame_embeddings, frame_embeddings_many

    _, manifest = setup
    videos = _with_corrupt_video(manifest, tmp_path, which=2)
    got = list(frame_embeddings_many(_pixel_means, videos, 2.0, window=3, size=(32, 32), batch_size=4, num_workers=2))
    assert [i for i, _ in got] == list(range(len(videos)))
    assert isinstance(got[2][1], VideoDecodeError)
    for i in (0, 1, 3):
        assert torch.equal(got[i][1], frame_embeddings(_pixel_means, videos[i], 2.0, window=3, size=(32, 32),
                                                       batch_size=7))
    with pytest.raises(VideoDecodeError):
        frame_embeddings(_pixel_means, videos[2], 2.0)


def test_eval_workers_flag_gives_the_same_results(setup, tmp_path):
    model, manifest = setup
    results = []
    for workers in ("0", "2"):
        out = tmp_path / workers
        assert main(["eval", "segmentation", "--model", str(model), "--manifest", str(manifest), "--level", "step",
                     "--num-frames", "2", "--out", str(out), "--no-progress", "--workers", workers]) == 0
        results.append(json.loads((out / "results.json").read_text()))
    assert results[0]["acc"] == results[1]["acc"] and results[0]["F1@25"] == results[1]["F1@25"]

"""Evaluation tasks over a manifest: each returns a JSON-able results dict and writes its figures.

- retrieval: clip-caption pairs of a level, text->video and video->text.
- recognition / segmentation: per-frame predictions at a fixed fps, zero-shot (frame-label prompt
  similarity) or from a linear probe trained on the `train` split's frozen features.
- captioning: generated scripts vs reference captions (BLEU-4, CIDEr-D, script-field accuracy).
- qa: multiple choice by retrieval (the choice text most similar to the clip wins).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from videolang.data.manifest import VideoRecord, clip_pairs, frame_labels, frame_times
from videolang.data.video import VideoDecodeError
from videolang.errors import VideolangError
from videolang.eval.features import clip_batches, clip_embeddings, frame_embeddings_many, text_embeddings
from videolang.eval.loading import EvalModel
from videolang.eval.metrics import (
    captioning_metrics,
    confusion_matrix,
    recognition_metrics,
    retrieval_metrics,
    segmentation_metrics,
)
from videolang.eval.probe import LinearProbe
from videolang.eval.zero_shot import BACKGROUND, background_threshold, decode

log = logging.getLogger(__name__)
BACKGROUND_NAME = "background"


@dataclass
class EvalOptions:
    level: str = "step"
    split: Optional[str] = None
    num_frames: int = 8
    fps: float = 1.0
    window: int = 1
    batch_size: int = 16
    prompt: str = "{}"
    smooth: int = 1
    switch_penalty: float = 0.0
    probe: bool = False
    dual_softmax: bool = False
    backend: str = "auto"
    max_plots: int = 4
    choices: int = 5
    seed: int = 0
    beam: int = 1
    progress: bool = True
    num_workers: int = 2  # decoding processes beside the one that encodes (0: read in the calling process)
    reject_background: bool = True  # zero-shot segmentation: Norton's background rule (see zero_shot.py)


def _size(model: EvalModel) -> tuple[int, int]:
    return (model.image_size, model.image_size)


def _failures(failed: dict[str, str]) -> dict[str, Any]:
    return {"undecodable_videos": len(failed), "undecodable": sorted(failed)}


# --------------------------------------------------------------------------------------------------
# Retrieval


def run_retrieval(model: EvalModel, videos: Sequence[VideoRecord], opts: EvalOptions, out: Path) -> dict:
    full = model.require_text("retrieval")
    pairs = clip_pairs(videos, opts.level, split=opts.split)
    if len(pairs) < 2:
        raise VideolangError(f"retrieval needs at least 2 captioned clips at level '{opts.level}', found {len(pairs)}")
    feats = clip_embeddings(model.encode_video, pairs, num_frames=opts.num_frames, size=_size(model),
                            batch_size=opts.batch_size, backend=opts.backend, num_workers=opts.num_workers,
                            progress=opts.progress, desc="clips")
    kept = [pairs[i] for i in feats.kept]
    # Clips often share a caption (procedural corpora repeat steps). Identical captions are one query
    # whose matches are all their clips, so a perfect model scores 100, not the share of unique captions.
    caption_index = {c: i for i, c in enumerate(dict.fromkeys(p.caption for p in kept))}
    captions = list(caption_index)
    caption_of_clip = torch.tensor([caption_index[p.caption] for p in kept], dtype=torch.long)
    text = text_embeddings(full.encode_text, captions, opts.batch_size)
    sim = text @ feats.embeddings.T  # [queries = distinct captions, candidates = clips]
    results = {
        "task": "retrieval", "level": opts.level, "clips": len(kept), "captions": len(captions),
        "t2v": retrieval_metrics(sim, candidate_to_query=caption_of_clip, dual_softmax=opts.dual_softmax),
        "v2t": retrieval_metrics(sim.T.contiguous(), query_to_target=caption_of_clip, dual_softmax=opts.dual_softmax),
        **_failures(feats.failed),
    }
    return results


# --------------------------------------------------------------------------------------------------
# Per-frame recognition and segmentation


def _frame_data(model: EvalModel, videos: Sequence[VideoRecord], opts: EvalOptions
                ) -> tuple[list[VideoRecord], list[torch.Tensor], list[list[str]], dict[str, str]]:
    kept, feats, labels, failed = [], [], [], {}
    readable = []
    for video in videos:
        if frame_times(video.span_end, opts.fps):
            readable.append(video)
        else:
            failed[str(video.resolved_path)] = f"shorter than one frame at {opts.fps:g} fps"
    for i, got in frame_embeddings_many(model.encode_video, readable, opts.fps, window=opts.window, size=_size(model),
                                        batch_size=opts.batch_size * 4, backend=opts.backend,
                                        num_workers=opts.num_workers, progress=opts.progress):
        video = readable[i]
        if isinstance(got, VideoDecodeError):
            failed[str(video.resolved_path)] = str(got)
            continue
        kept.append(video)
        feats.append(got)
        labels.append(frame_labels(video, opts.level, opts.fps, background=BACKGROUND_NAME))
    return kept, feats, labels, failed


def _class_names(videos: Sequence[VideoRecord], level: str) -> list[str]:
    names = sorted({s.label or s.caption for v in videos for s in v.iter_segments(level) if (s.label or s.caption)})
    if len(names) < 2:
        raise VideolangError(f"level '{level}' has {len(names)} class label(s); recognition needs at least 2")
    return names


def _frame_scores(model: EvalModel, all_videos: Sequence[VideoRecord], eval_videos: Sequence[VideoRecord],
                  classes: list[str], opts: EvalOptions):
    """Per-video score matrices [N, K] for `eval_videos` (zero-shot or probe) + a background threshold."""
    kept, feats, labels, failed = _frame_data(model, eval_videos, opts)
    if not kept:
        raise VideolangError("no video of the evaluation set could be decoded")
    if opts.probe:
        evaluated = {v.video_id for v in eval_videos}
        train = [v for v in all_videos if v.split == "train" and v.video_id not in evaluated]
        if not train:
            raise VideolangError("--probe needs videos with split 'train' besides the evaluated ones")
        _, tr_feats, tr_labels, tr_failed = _frame_data(model, train, opts)
        failed.update(tr_failed)
        index = {c: i for i, c in enumerate(classes)}
        x = torch.cat(tr_feats)
        y = torch.tensor([index.get(lbl, -1) for lbls in tr_labels for lbl in lbls])
        keep = y >= 0  # background frames carry no class to learn
        probe = LinearProbe(len(classes)).fit(x[keep], y[keep])
        scores = [probe.scores(f) for f in feats]
        threshold = None
    else:
        full = model.require_text("zero-shot prompts")
        prompts = [opts.prompt.format(c) for c in classes]
        label_emb = text_embeddings(full.encode_text, prompts, opts.batch_size)
        scores = [f @ label_emb.T for f in feats]
        threshold = background_threshold(label_emb)
    return kept, scores, labels, failed, threshold


def run_recognition(model: EvalModel, videos: Sequence[VideoRecord], opts: EvalOptions, out: Path,
                    all_videos: Sequence[VideoRecord]) -> dict:
    from videolang.eval.plots import confusion

    classes = _class_names(all_videos, opts.level)
    kept, scores, labels, failed, _ = _frame_scores(model, all_videos, videos, classes, opts)
    class_index = {c: i for i, c in enumerate(classes)}
    preds, gts, per_video = [], [], []
    for video, s, gt in zip(kept, scores, labels):
        pred = decode(s, smooth_window=opts.smooth, switch_penalty=opts.switch_penalty).tolist()
        # Recognition scores labelled frames only; segmentation is where background counts.
        keep = [i for i, g in enumerate(gt) if g != BACKGROUND_NAME]
        if not keep:
            continue
        p, g = [pred[i] for i in keep], [class_index[gt[i]] for i in keep]
        m = recognition_metrics([p], [g], num_classes=len(classes))
        per_video.append({"video_id": video.video_id, "accuracy": m["acc"], "macro_f1": m["F1"], "frames": len(g)})
        preds.append(p)
        gts.append(g)
    if not per_video:
        raise VideolangError(f"no labelled frames at level '{opts.level}' in the evaluated videos")
    overall = recognition_metrics(preds, gts, num_classes=len(classes))
    matrix = confusion_matrix(preds, gts, num_classes=len(classes)).numpy()
    plot = confusion(out / "confusion.png", matrix, classes, f"{opts.level} recognition")
    return {
        "task": "recognition", "level": opts.level, "mode": "probe" if opts.probe else "zero-shot",
        "fps": opts.fps, "videos": len(per_video), "classes": classes,
        "accuracy": overall["acc"], "macro_f1": overall["F1"],
        "per_video": per_video, "confusion": matrix.tolist(), "plots": [str(plot)], **_failures(failed),
    }


def run_segmentation(model: EvalModel, videos: Sequence[VideoRecord], opts: EvalOptions, out: Path,
                     all_videos: Sequence[VideoRecord]) -> dict:
    from videolang.eval.plots import timeline

    classes = _class_names(all_videos, opts.level)
    kept, scores, labels, failed, threshold = _frame_scores(model, all_videos, videos, classes, opts)
    preds = []
    for s in scores:
        below = threshold if opts.reject_background else None
        idx = decode(s, smooth_window=opts.smooth, switch_penalty=opts.switch_penalty, background_below=below)
        preds.append([BACKGROUND_NAME if i == BACKGROUND else classes[i] for i in idx.tolist()])
    metrics = segmentation_metrics(preds, labels, background=(BACKGROUND_NAME,))
    plots = []
    for video, p, g in list(zip(kept, preds, labels))[: opts.max_plots]:
        name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in video.video_id)
        plots.append(str(timeline(out / f"timeline_{name}.png", [("ground truth", g), ("prediction", p)],
                                  classes, f"{video.video_id} ({opts.level}, {opts.fps:g} fps)")))
    return {
        "task": "segmentation", "level": opts.level, "mode": "probe" if opts.probe else "zero-shot",
        "fps": opts.fps, "videos": len(kept), "classes": classes, **metrics,
        "background_threshold": threshold, "plots": plots, **_failures(failed),
    }


# --------------------------------------------------------------------------------------------------
# Captioning and QA


def run_captioning(model: EvalModel, videos: Sequence[VideoRecord], opts: EvalOptions, out: Path) -> dict:
    from videolang.models import parse_script

    full = model.require_text("captioning")
    if full.caption_head is None:
        raise VideolangError(f"{model.path}: this model has no caption head (train with model.caption_head=true)")
    pairs = clip_pairs(videos, opts.level, split=opts.split)
    if not pairs:
        raise VideolangError(f"no captioned clips at level '{opts.level}'")
    hyps, refs, fields, failed = [], [], [], {}
    for indices, frames in clip_batches(pairs, num_frames=opts.num_frames, size=_size(model),
                                        batch_size=opts.batch_size, backend=opts.backend,
                                        num_workers=opts.num_workers, failed=failed, progress=opts.progress):
        texts = full.generate_captions(frames.to(model.device), beam_size=opts.beam)
        for p, text in zip((pairs[i] for i in indices), texts):
            hyps.append(text)
            refs.append([p.script["content"]] if p.script and p.script.get("content") else [p.caption])
            parsed = parse_script(text)
            fields.append(({"shot_type": parsed.get("shot"), "camera_movement": parsed.get("camera")}, p.script or {}))
    if not hyps:
        raise VideolangError("no clip could be decoded for captioning")
    metrics = captioning_metrics(hyps, refs, [f[0] for f in fields], [f[1] for f in fields])
    samples = [{"hypothesis": h, "reference": r[0]} for h, r in list(zip(hyps, refs))[:20]]
    return {"task": "captioning", "level": opts.level, "clips": len(hyps), **metrics, "samples": samples,
            **_failures(failed)}


def run_qa(model: EvalModel, videos: Sequence[VideoRecord], opts: EvalOptions, out: Path) -> dict:
    """Each captioned clip is a question whose choices are its caption plus `choices - 1` distinct
    captions of the same level, taken from the same video first (hard negatives), then elsewhere."""
    full = model.require_text("multiple-choice QA")
    pairs = clip_pairs(videos, opts.level, split=opts.split)
    captions = sorted({p.caption for p in pairs})
    if len(captions) < opts.choices:
        raise VideolangError(f"QA with {opts.choices} choices needs {opts.choices} distinct captions at level "
                             f"'{opts.level}', found {len(captions)}")
    rng = random.Random(opts.seed)
    by_video: dict[str, list[str]] = {}
    for p in pairs:
        by_video.setdefault(p.video_id, []).append(p.caption)
    feats = clip_embeddings(model.encode_video, pairs, num_frames=opts.num_frames, size=_size(model),
                            batch_size=opts.batch_size, backend=opts.backend, num_workers=opts.num_workers,
                            progress=opts.progress, desc="clips")
    text_index = {c: i for i, c in enumerate(captions)}
    text_emb = text_embeddings(full.encode_text, captions, opts.batch_size)
    correct = 0
    for row, i in enumerate(feats.kept):
        p = pairs[i]
        same = [c for c in dict.fromkeys(by_video[p.video_id]) if c != p.caption]
        others = [c for c in captions if c != p.caption and c not in same]
        rng.shuffle(same)
        rng.shuffle(others)
        choices = [p.caption] + (same + others)[: opts.choices - 1]
        scores = text_emb[[text_index[c] for c in choices]] @ feats.embeddings[row]
        # Ties count against the model: the answer must score strictly above every distractor.
        correct += int(bool((scores[0] > scores[1:]).all()))
    n = len(feats.kept)
    return {"task": "qa", "level": opts.level, "questions": n, "choices": opts.choices,
            "accuracy": 100.0 * correct / max(n, 1), "chance": 100.0 / opts.choices, **_failures(feats.failed)}

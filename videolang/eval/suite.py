"""Every evaluation task on one held-out set, with the settings the synthetic corpus calls for.

Used by the demo and the evidence benchmarks: text<->video retrieval of task clips, zero-shot phase
recognition and segmentation (and segmentation by a linear probe on frozen features), step segmentation
(zero-shot), and captioning of task clips when the model has a caption head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from videolang.data.manifest import VideoRecord, clip_pairs
from videolang.eval import tasks
from videolang.eval.features import clip_embeddings, text_embeddings
from videolang.eval.loading import EvalModel

# Prompts that read like the corpus' captions: "A ocean scene with ...", "The green diamond moves ...".
PHASE_PROMPT = "a {} scene"
STEP_PROMPT = "the {} moves"


def evaluate_model(model: EvalModel, val: Sequence[VideoRecord], all_videos: Sequence[VideoRecord], out: Path,
                   num_frames: int, *, which: Sequence[str] = ("retrieval", "recognition", "segmentation",
                                                               "segmentation_probe", "step_segmentation", "captioning"),
                   ) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    base = dict(num_frames=num_frames, progress=False)
    results: dict[str, Any] = {}
    if "retrieval" in which:
        results["retrieval"] = tasks.run_retrieval(model, val, tasks.EvalOptions(level="task", **base), out)
    # Every frame of the synthetic corpus has a phase and a step: no background to reject.
    phase = dict(level="phase", fps=1.0, smooth=3, prompt=PHASE_PROMPT, reject_background=False, **base)
    if "recognition" in which:
        (out / "recognition").mkdir(exist_ok=True)
        results["recognition"] = tasks.run_recognition(model, val, tasks.EvalOptions(**phase), out / "recognition",
                                                       all_videos)
    if "segmentation" in which:
        (out / "segmentation").mkdir(exist_ok=True)
        results["segmentation"] = tasks.run_segmentation(model, val, tasks.EvalOptions(**phase), out / "segmentation",
                                                         all_videos)
    if "segmentation_probe" in which:
        (out / "segmentation_probe").mkdir(exist_ok=True)
        results["segmentation_probe"] = tasks.run_segmentation(
            model, val, tasks.EvalOptions(**phase, probe=True), out / "segmentation_probe", all_videos)
    if "step_segmentation" in which:
        (out / "step_segmentation").mkdir(exist_ok=True)
        step = dict(level="step", fps=2.0, smooth=3, prompt=STEP_PROMPT, reject_background=False, **base)
        results["step_segmentation"] = tasks.run_segmentation(
            model, val, tasks.EvalOptions(**step), out / "step_segmentation", all_videos)
    if "captioning" in which and model.full is not None and model.full.caption_head is not None:
        results["captioning"] = tasks.run_captioning(model, val, tasks.EvalOptions(level="task", **base), out)
    return results


@torch.no_grad()
def retrieval_figure(model: EvalModel, val: Sequence[VideoRecord], path: Path, num_frames: int,
                     queries: int = 3, k: int = 3) -> Path:
    """A few task captions with their top-k clips as frame strips (green: a matching clip)."""
    from videolang.data.video import read_clip
    from videolang.eval.plots import retrieval_examples

    full = model.require_text("retrieval examples")
    pairs = clip_pairs(val, "task")
    size = (model.image_size, model.image_size)
    feats = clip_embeddings(model.encode_video, pairs, num_frames=num_frames, size=size, progress=False)
    kept = [pairs[i] for i in feats.kept]
    captions = list(dict.fromkeys(p.caption for p in kept))
    step = max(1, len(captions) // queries)
    chosen = captions[::step][:queries]
    text = text_embeddings(full.encode_text, chosen)
    rows = []
    for caption, emb in zip(chosen, text):
        top = (feats.embeddings @ emb).topk(min(k, len(kept))).indices.tolist()
        clips = []
        for i in top:
            p = kept[i]
            frames = read_clip(p.path, p.start, p.end, num_frames=num_frames).numpy()
            clips.append((frames, p.caption == caption))
        rows.append((caption, clips))
    return retrieval_examples(path, rows)



"""Chance levels of the evaluation tasks on a held-out set, and the demo's markdown report.

A number means little without its floor: every metric of the report stands next to what a random
model scores on the same clips and frames, and next to the same model before training.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from videolang.data.manifest import VideoRecord, clip_pairs, frame_labels


def chance_levels(val: Sequence[VideoRecord], all_videos: Sequence[VideoRecord]) -> dict[str, float]:
    """Expected scores of a random ranking / a random or constant predictor on `val` (percent).

    - t2v R@1: a caption query (identical captions are one query) hits with probability
      matches / clips; averaged over queries. v2t R@1: 1 / distinct captions.
    - recognition: 1 / classes (uniform guess) and the majority class's share of labelled frames.
    - segmentation: frame accuracy of predicting background everywhere, and of the majority class.
    """
    pairs = clip_pairs(val, "task")
    counts = Counter(p.caption for p in pairs)
    n = max(len(pairs), 1)
    classes = sorted({s.label or s.caption for v in all_videos for s in v.iter_segments("phase") if s.label or s.caption})
    frames = [lbl for v in val for lbl in frame_labels(v, "phase", 1.0)]
    labelled = [f for f in frames if f != "background"]
    majority = Counter(labelled).most_common(1)[0][1] if labelled else 0
    return {
        "t2v_R@1": 100.0 * sum(c / n for c in counts.values()) / max(len(counts), 1),
        "v2t_R@1": 100.0 / max(len(counts), 1),
        "recognition_acc": 100.0 / max(len(classes), 1),
        "recognition_majority_acc": 100.0 * majority / max(len(labelled), 1),
        "segmentation_all_background_acc": 100.0 * (len(frames) - len(labelled)) / max(len(frames), 1),
        "segmentation_majority_acc": 100.0 * majority / max(len(frames), 1),
    }


def _get(d: dict, path: str) -> Any:
    for part in path.split("/"):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


ROWS = [  # (label, path in the results, chance key or None, format)
    ("text→video R@1 (task clips)", "retrieval/t2v/R@1", "t2v_R@1", "{:.1f}"),
    ("text→video R@5", "retrieval/t2v/R@5", None, "{:.1f}"),
    ("video→text R@1", "retrieval/v2t/R@1", "v2t_R@1", "{:.1f}"),
    ("zero-shot phase recognition, accuracy", "recognition/accuracy", "recognition_acc", "{:.1f}"),
    ("zero-shot phase recognition, macro-F1", "recognition/macro_f1", None, "{:.1f}"),
    ("phase segmentation, zero-shot, frame acc", "segmentation/acc", "segmentation_all_background_acc", "{:.1f}"),
    ("phase segmentation, zero-shot, F1@25", "segmentation/F1@25", None, "{:.1f}"),
    ("phase segmentation, linear probe, frame acc", "segmentation_probe/acc", "segmentation_majority_acc", "{:.1f}"),
    ("phase segmentation, linear probe, edit", "segmentation_probe/edit", None, "{:.1f}"),
    ("step segmentation, zero-shot, frame acc", "step_segmentation/acc", None, "{:.1f}"),
    ("captioning BLEU-4", "captioning/BLEU-4", None, "{:.3f}"),
    ("captioning CIDEr-D", "captioning/CIDEr-D", None, "{:.3f}"),
    ("script field accuracy: shot type", "captioning/shot_type_acc", None, "{:.1f}"),
    ("script field accuracy: camera movement", "captioning/camera_movement_acc", None, "{:.1f}"),
]
CHANCE_NOTES = {
    "t2v_R@1": "random ranking",
    "v2t_R@1": "random ranking",
    "recognition_acc": "uniform guess",
    "segmentation_all_background_acc": "all background",
    "segmentation_majority_acc": "majority phase",
}


def write_report(out: Path, summary: dict[str, Any], figures: Path, examples: Path) -> Path:
    """`out/report.md`: the numbers next to chance and the untrained model, then the figures."""
    from videolang.eval.plots import loss_curves

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curves = loss_curves(figures / "loss_curves.png", records, "demo training: loss per term")
    trained, untrained, chance = summary["eval"], summary["untrained"], summary["chance"]
    lines = [
        "# videolang demo report", "",
        f"Corpus: {summary['corpus']['videos']} synthetic videos ({summary['corpus']['hours'] * 60:.1f} min), "
        f"evaluated on the {summary['val_videos']} held-out (`val`) videos. Training: "
        f"{summary['train']['steps']} steps in {summary['train']['seconds']} s (config: `{summary['config']}`). "
        f"Whole demo: {summary['seconds']} s.", "",
        "| metric | untrained | trained | chance |", "|---|---|---|---|",
    ]
    for label, path, chance_key, fmt in ROWS:
        after, before = _get(trained, path), _get(untrained, path)
        if after is None:
            continue
        floor = f"{chance[chance_key]:.1f} ({CHANCE_NOTES[chance_key]})" if chance_key else "—"
        lines.append(f"| {label} | {fmt.format(before) if before is not None else '—'} | **{fmt.format(after)}** | {floor} |")
    lines += [
        "", f"Retrieval: {trained['retrieval']['clips']} clips, {trained['retrieval']['captions']} distinct captions. "
        "Recognition and segmentation at 1 frame per second; the linear probe is fit on the training videos' "
        "frozen features. Chance: expected score of a random ranking or guess on the same clips and frames.", "",
        "## Training", "", f"![loss curves]({curves.relative_to(out)})", "",
        "## Retrieval examples", "", "Each row: a caption and its three best clips (green: a clip of that caption).", "",
        f"![retrieval examples]({examples.relative_to(out)})", "",
    ]
    seg_plots = trained.get("segmentation", {}).get("plots", [])[:2] + trained.get("segmentation_probe", {}).get("plots", [])[:1]
    if seg_plots:
        lines += ["## Phase segmentation", "", "Ground truth above the prediction (zero-shot, then linear probe).", ""]
        lines += [f"![timeline]({Path(p).resolve().relative_to(out.resolve())})" for p in seg_plots] + [""]
    conf = trained.get("recognition", {}).get("plots", [])
    if conf:
        lines += ["## Phase recognition", "", f"![confusion matrix]({Path(conf[0]).resolve().relative_to(out.resolve())})", ""]
    samples = trained.get("captioning", {}).get("samples", [])[:5]
    if samples:
        lines += ["## Captions", "", "| generated | reference |", "|---|---|"]
        lines += [f"| {s['hypothesis']} | {s['reference']} |" for s in samples] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path

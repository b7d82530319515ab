"""Zero-shot recognition metrics, following the surgical phase-recognition protocol (SurgVLP, SurgLaVi).

Per video: accuracy is the share of correctly labelled items (frames or clips); macro-F1 is the mean,
over the classes present in that video's ground truth or predictions, of F1_c = 2 TP / (2 TP + FP + FN)
(what scikit-learn's `f1_score(average="macro")` gives, which the SurgVLP evaluation calls per video).
A class predicted but absent from the ground truth therefore scores 0 and pulls the mean down; a class
absent from both is ignored. Both numbers are averaged over videos with equal weight, so a short video
counts as much as a long one. The confusion matrix sums all videos.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from videolang.eval.metrics.errors import MetricInputError


def recognition_metrics(
    preds: Sequence[Sequence[int]], gts: Sequence[Sequence[int]], num_classes: Optional[int] = None
) -> dict[str, float]:
    """`{"acc", "F1"}` in percent: per-video accuracy and macro-F1, averaged over videos.

    `preds[v]` and `gts[v]` are the class indices of video v's items, in any order but aligned.
    """
    pred, gt, video, num_classes = _flatten(preds, gts, num_classes)
    num_videos = len(preds)
    key = video * num_classes
    correct = (pred == gt).double()
    # Per (video, class): true positives, ground-truth and predicted counts, all [videos, classes].
    true_pos = torch.bincount(key + gt, weights=correct, minlength=num_videos * num_classes)
    gt_count = torch.bincount(key + gt, minlength=num_videos * num_classes).double()
    pred_count = torch.bincount(key + pred, minlength=num_videos * num_classes).double()
    true_pos, gt_count, pred_count = (x.view(num_videos, num_classes) for x in (true_pos, gt_count, pred_count))
    present = (gt_count + pred_count) > 0
    f1 = torch.where(present, 2 * true_pos / (gt_count + pred_count).clamp(min=1), torch.zeros_like(true_pos))
    video_f1 = f1.sum(1) / present.sum(1)
    video_acc = true_pos.sum(1) / gt_count.sum(1)
    return {"acc": 100.0 * float(video_acc.mean()), "F1": 100.0 * float(video_f1.mean())}


def confusion_matrix(
    preds: Sequence[Sequence[int]], gts: Sequence[Sequence[int]], num_classes: Optional[int] = None
) -> Tensor:
    """`LongTensor[classes, classes]` summed over videos: entry [g, p] counts items of class g predicted as p."""
    pred, gt, _, num_classes = _flatten(preds, gts, num_classes)
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def _flatten(
    preds: Sequence[Sequence[int]], gts: Sequence[Sequence[int]], num_classes: Optional[int]
) -> tuple[Tensor, Tensor, Tensor, int]:
    """All videos concatenated: (pred, gt, video index) as CPU LongTensors, plus the class count."""
    if not isinstance(preds, Sequence) or not isinstance(gts, Sequence) or len(preds) == 0:
        raise MetricInputError("preds: expected a non-empty list of per-item class sequences, one per video")
    if len(preds) != len(gts):
        raise MetricInputError(f"gts: {len(gts)} videos but preds has {len(preds)}")
    pred_parts, gt_parts = [], []
    for index, (pred, gt) in enumerate(zip(preds, gts)):
        pred, gt = _classes(pred, f"preds[{index}]"), _classes(gt, f"gts[{index}]")
        if pred.numel() != gt.numel():
            raise MetricInputError(f"preds[{index}]: {pred.numel()} items but gts[{index}] has {gt.numel()}")
        if gt.numel() == 0:
            raise MetricInputError(f"gts[{index}]: a video needs at least one item")
        pred_parts.append(pred)
        gt_parts.append(gt)
    pred, gt = torch.cat(pred_parts), torch.cat(gt_parts)
    lengths = torch.tensor([p.numel() for p in pred_parts])
    video = torch.repeat_interleave(torch.arange(len(pred_parts)), lengths)
    largest = int(torch.maximum(pred.max(), gt.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise MetricInputError(f"num_classes: expected a positive integer, got {num_classes!r}")
    elif largest >= num_classes:
        raise MetricInputError(f"preds/gts: class index {largest} is out of range for num_classes={num_classes}")
    return pred, gt, video, num_classes


def _classes(seq: Sequence[int], name: str) -> Tensor:
    try:
        x = torch.as_tensor(seq).detach().cpu() if isinstance(seq, Tensor) else torch.as_tensor(list(seq))
    except (TypeError, ValueError, RuntimeError) as e:
        raise MetricInputError(f"{name}: expected integer class indices ({e})") from None
    if x.numel() == 0:
        return x.reshape(0).long()
    if x.ndim != 1 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise MetricInputError(
            f"{name}: expected a 1-D sequence of integer class indices, got {x.dtype} {tuple(x.shape)}"
        )
    if int(x.min()) < 0:
        raise MetricInputError(f"{name}: class indices must be >= 0, got {int(x.min())}")
    return x.long()

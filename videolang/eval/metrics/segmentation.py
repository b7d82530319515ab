"""Temporal action segmentation metrics, following the MS-TCN protocol (yabufarha/ms-tcn, eval.py).

- Segments are maximal runs of equal labels in the full frame sequence (end exclusive); background runs
  are then dropped, so two actions separated by background stay two segments.
- Frame accuracy counts every frame of every video, background included (micro average).
- Edit score per video: (1 - Levenshtein(P, Y) / max(|P|, |Y|)) * 100 over the segment label
  sequences, averaged over videos.
- F1@tau: each predicted segment, in time order, takes the ground-truth segment with the highest IoU
  (IoU counts only same-label pairs; the first one wins a tie); it is a true positive if that IoU >= tau
  and the ground-truth segment is still unmatched, else a false positive; unmatched ground truth are false
  negatives. Counts are summed over all videos before precision, recall and F1 are formed.

Edge cases the reference leaves undefined (it divides by zero or takes the argmax of nothing):
- a video with no segments in either sequence (all background): edit 100 for that video;
- no ground-truth segments but some predicted ones: every prediction is a false positive (edit 0);
- F1 over the whole set with no segment anywhere (TP + FP + FN = 0): 100, as nothing was missed or
  invented; with TP = 0 otherwise: 0;
- a video with no frames, a length mismatch, or an empty list of videos: `MetricInputError`.
"""

from __future__ import annotations

from typing import Any, Collection, Hashable, Sequence

import numpy as np

from videolang.eval.metrics.errors import MetricInputError

OVERLAPS = (0.10, 0.25, 0.50)


def segmentation_metrics(
    preds: Sequence[Sequence[Hashable]],
    gts: Sequence[Sequence[Hashable]],
    background: Collection[Hashable] = (),
) -> dict[str, float]:
    """`{"acc", "edit", "F1@10", "F1@25", "F1@50"}` in percent over per-frame label sequences, one per video.

    Labels may be ints or strings (lists, numpy arrays or tensors); `background` lists the labels that
    are dropped for edit and F1 but still count for frame accuracy.
    """
    if not isinstance(preds, Sequence) or not isinstance(gts, Sequence) or len(preds) == 0:
        raise MetricInputError("preds: expected a non-empty list of per-frame label sequences, one per video")
    if len(preds) != len(gts):
        raise MetricInputError(f"gts: {len(gts)} videos but preds has {len(preds)}")
    background = set(background)
    correct = frames = 0
    edits = []
    tp = np.zeros(len(OVERLAPS), dtype=np.int64)
    fp = np.zeros_like(tp)
    fn = np.zeros_like(tp)
    for index, (pred, gt) in enumerate(zip(preds, gts)):
        pred, gt = _labels(pred, f"preds[{index}]"), _labels(gt, f"gts[{index}]")
        if len(pred) != len(gt):
            raise MetricInputError(f"preds[{index}]: {len(pred)} frames but gts[{index}] has {len(gt)}")
        if len(gt) == 0:
            raise MetricInputError(f"gts[{index}]: a video needs at least one frame")
        correct += int(np.count_nonzero(pred == gt))
        frames += len(gt)
        pred_segments = label_segments(pred, background)
        gt_segments = label_segments(gt, background)
        edits.append(edit_score(pred_segments[0], gt_segments[0]))
        video_tp, video_fp, video_fn = f1_counts(pred_segments, gt_segments, OVERLAPS)
        tp += video_tp
        fp += video_fp
        fn += video_fn
    out = {"acc": 100.0 * correct / frames, "edit": float(np.mean(edits))}
    for k, overlap in enumerate(OVERLAPS):
        out[f"F1@{round(overlap * 100)}"] = _f1(int(tp[k]), int(fp[k]), int(fn[k]))
    return out


def label_segments(
    labels: np.ndarray, background: Collection[Hashable] = ()
) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Runs of equal labels as (labels, starts, ends), ends exclusive, background runs dropped."""
    if len(labels) == 0:
        return [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(labels)]))
    run_labels = labels[starts].tolist()
    keep = np.array([label not in background for label in run_labels], dtype=bool)
    return [label for label, k in zip(run_labels, keep) if k], starts[keep], ends[keep]


def edit_score(pred_labels: Sequence[Hashable], gt_labels: Sequence[Hashable]) -> float:
    """(1 - Levenshtein / max length) * 100 of two segment label sequences; 100 when both are empty."""
    longest = max(len(pred_labels), len(gt_labels))
    if longest == 0:
        return 100.0
    return (1.0 - levenshtein(pred_labels, gt_labels) / longest) * 100.0


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Edit distance with unit-cost insertion, deletion and substitution (two-row dynamic programme)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def f1_counts(
    pred_segments: tuple[list[Hashable], np.ndarray, np.ndarray],
    gt_segments: tuple[list[Hashable], np.ndarray, np.ndarray],
    overlaps: Sequence[float] = OVERLAPS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN) per overlap threshold for one video, as `int64[len(overlaps)]` arrays.

    The greedy matching needs no loop: every prediction takes its best ground-truth segment whether or
    not that one is taken already, so the true positives are the distinct ground-truth segments chosen by
    predictions whose best IoU clears the threshold (the first such prediction wins, the rest are FP).
    """
    pred_labels, pred_starts, pred_ends = pred_segments
    gt_labels, gt_starts, gt_ends = gt_segments
    num_pred, num_gt = len(pred_labels), len(gt_labels)
    thresholds = np.asarray(overlaps, dtype=np.float64)
    if thresholds.ndim != 1 or not ((thresholds > 0) & (thresholds <= 1)).all():
        raise MetricInputError(f"overlaps: expected IoU thresholds in (0, 1], got {list(overlaps)}")
    if num_pred == 0 or num_gt == 0:
        zeros = np.zeros(len(thresholds), dtype=np.int64)
        return zeros, zeros + num_pred, zeros + num_gt
    p_start, p_end = pred_starts[:, None], pred_ends[:, None]
    g_start, g_end = gt_starts[None, :], gt_ends[None, :]
    intersection = np.minimum(p_end, g_end) - np.maximum(p_start, g_start)
    union = np.maximum(p_end, g_end) - np.minimum(p_start, g_start)
    same_label = _label_codes(pred_labels, gt_labels)
    iou = np.where(same_label, np.maximum(intersection, 0) / union, 0.0)
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(num_pred), best]
    tp = np.array([len(np.unique(best[best_iou >= t])) for t in thresholds], dtype=np.int64)
    return tp, num_pred - tp, num_gt - tp


def _label_codes(pred_labels: list[Hashable], gt_labels: list[Hashable]) -> np.ndarray:
    """`[P, G]` bool matrix: prediction p and ground truth g carry the same label."""
    codes: dict[Hashable, int] = {}
    pred_codes = np.array([codes.setdefault(label, len(codes)) for label in pred_labels])
    gt_codes = np.array([codes.setdefault(label, len(codes)) for label in gt_labels])
    return pred_codes[:, None] == gt_codes[None, :]


def _f1(tp: int, fp: int, fn: int) -> float:
    if tp + fp + fn == 0:
        return 100.0
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 100.0 * 2 * precision * recall / (precision + recall)


def _labels(seq: Any, name: str) -> np.ndarray:
    """A per-frame label sequence as a 1-D numpy array (tensors are moved to the CPU)."""
    if hasattr(seq, "detach"):
        seq = seq.detach().cpu().numpy()
    if isinstance(seq, (str, bytes)):
        raise MetricInputError(f"{name}: expected a sequence of per-frame labels, got a string")
    try:
        array = np.asarray(seq)
    except (TypeError, ValueError) as e:
        raise MetricInputError(f"{name}: cannot read per-frame labels ({e})") from None
    if array.ndim != 1:
        raise MetricInputError(f"{name}: expected a 1-D sequence of per-frame labels, got shape {array.shape}")
    if array.dtype.kind == "f" and len(array) and not np.isfinite(array).all():
        raise MetricInputError(f"{name}: contains NaN or infinite labels")
    return array

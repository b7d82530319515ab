"""MS-TCN segmentation metrics against a literal frame-by-frame reading of the protocol."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import torch

from videolang.eval import MetricInputError, segmentation_metrics

BG = -1


# ---- slow, obviously correct reference ---------------------------------------------------------------


def ref_segments(frames, background):
    """(label, set of frame indices) per run of equal labels, background runs skipped."""
    segments = []
    for t, label in enumerate(frames):
        if t == 0 or label != frames[t - 1]:
            segments.append((label, set()))
        segments[-1][1].add(t)
    return [(label, span) for label, span in segments if label not in background]


def ref_levenshtein(a, b):
    @functools.lru_cache(maxsize=None)
    def d(i, j):  # distance between a[:i] and b[:j]
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def ref_counts(pred_segs, gt_segs, overlap):
    tp = fp = 0
    hit = [False] * len(gt_segs)
    for label, span in pred_segs:
        best, best_iou = None, -1.0
        for g, (gt_label, gt_span) in enumerate(gt_segs):
            iou = len(span & gt_span) / len(span | gt_span) if gt_label == label else 0.0
            if iou > best_iou:
                best, best_iou = g, iou
        if best is not None and best_iou >= overlap and not hit[best]:
            tp += 1
            hit[best] = True
        else:
            fp += 1
    return tp, fp, len(gt_segs) - sum(hit)


def ref_metrics(preds, gts, background):
    correct = total = 0
    edits = []
    counts = {o: [0, 0, 0] for o in (0.10, 0.25, 0.50)}
    for pred, gt in zip(preds, gts):
        correct += sum(p == g for p, g in zip(pred, gt))
        total += len(gt)
        p_segs, g_segs = ref_segments(list(pred), background), ref_segments(list(gt), background)
        p_labels, g_labels = tuple(x for x, _ in p_segs), tuple(x for x, _ in g_segs)
        longest = max(len(p_labels), len(g_labels))
        edits.append(100.0 if longest == 0 else (1 - ref_levenshtein(p_labels, g_labels) / longest) * 100)
        for o in counts:
            for k, v in enumerate(ref_counts(p_segs, g_segs, o)):
                counts[o][k] += v
    out = {"acc": 100.0 * correct / total, "edit": sum(edits) / len(edits)}
    for o, (tp, fp, fn) in counts.items():
        if tp + fp + fn == 0:
            f1 = 100.0
        elif tp == 0:
            f1 = 0.0
        else:
            precision, recall = tp / (tp + fp), tp / (tp + fn)
            f1 = 100.0 * 2 * precision * recall / (precision + recall)
        out[f"F1@{round(o * 100)}"] = f1
    return out


# ---- random videos -----------------------------------------------------------------------------------


def random_video(rng: random.Random, labels: list[int], length: int) -> tuple[list[int], list[int]]:
    """A ground truth of runs (background included) and a prediction with shifted edges, flips and noise."""
    gt: list[int] = []
    while len(gt) < length:
        gt += [rng.choice(labels)] * rng.randint(1, 12)
    gt = gt[:length]
    pred = list(gt)
    for t in range(1, length):  # move some boundaries by a frame or two
        if gt[t] != gt[t - 1] and rng.random() < 0.5:
            for s in range(t, min(length, t + rng.randint(1, 2))):
                pred[s] = gt[t - 1]
    for _ in range(rng.randint(0, 3)):  # overwrite a short stretch with one label
        start = rng.randrange(length)
        label = rng.choice(labels)
        for t in range(start, min(length, start + rng.randint(1, 6))):
            pred[t] = label
    return pred, gt


@pytest.mark.parametrize("seed", range(12))
def test_random_videos_match_reference(seed):
    rng = random.Random(seed)
    labels = [BG, 0, 1, 2, 3] if seed % 3 else [BG, 0, 1]
    videos = [random_video(rng, labels, rng.randint(1, 80)) for _ in range(rng.randint(1, 6))]
    preds, gts = [p for p, _ in videos], [g for _, g in videos]
    for background in ((BG,), (), (BG, 2)):
        got = segmentation_metrics(preds, gts, background=background)
        assert got == pytest.approx(ref_metrics(preds, gts, set(background)))


def test_all_background_video_is_perfect_edit_and_f1():
    got = segmentation_metrics([[BG, BG, BG]], [[BG, BG, BG]], background=[BG])
    assert got == {"acc": 100.0, "edit": 100.0, "F1@10": 100.0, "F1@25": 100.0, "F1@50": 100.0}


def test_no_ground_truth_segments_makes_predictions_false_positives():
    got = segmentation_metrics([[BG, 1, 1, BG]], [[BG, BG, BG, BG]], background=[BG])
    assert got["edit"] == 0.0 and got["F1@10"] == 0.0 and got["acc"] == 50.0


def test_no_predicted_segments_leaves_ground_truth_missed():
    got = segmentation_metrics([[BG] * 4], [[0, 0, 1, 1]], background=[BG])
    assert got["edit"] == 0.0 and got["F1@50"] == 0.0 and got["acc"] == 0.0


def test_worked_example():
    # GT: a a a b b b  (2 segments); prediction: a a b b b c (3 segments, one inserted "c").
    # Levenshtein(abc, ab) = 1 -> edit (1 - 1/3) * 100. IoU(a) = 2/3, IoU(b) = 3/4, c has no partner.
    # F1@50: TP 2, FP 1, FN 0 -> P 2/3, R 1 -> F1 0.8. Frame accuracy: 4 of 6.
    got = segmentation_metrics([list("aabbbc")], [list("aaabbb")])
    assert got["acc"] == pytest.approx(400 / 6)
    assert got["edit"] == pytest.approx(200 / 3)
    assert got["F1@50"] == pytest.approx(80.0)


def test_second_prediction_on_a_taken_segment_is_a_false_positive():
    # Two predicted "a" runs both pick the one GT "a" segment; only the first one counts.
    got = segmentation_metrics([[1, 1, 1, 0, 1]], [[1, 1, 1, 1, 1]], background=[0])
    assert got == pytest.approx(ref_metrics([[1, 1, 1, 0, 1]], [[1, 1, 1, 1, 1]], {0}))
    assert got["F1@10"] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)


def test_input_types_agree():
    rng = random.Random(7)
    videos = [random_video(rng, [BG, 0, 1, 2], 40) for _ in range(3)]
    preds, gts = [p for p, _ in videos], [g for _, g in videos]
    expected = segmentation_metrics(preds, gts, background=[BG])
    as_arrays = segmentation_metrics([torch.tensor(p) for p in preds], [np.array(g) for g in gts], background=[BG])
    assert as_arrays == expected
    names = {BG: "background", 0: "cut", 1: "stir", 2: "pour"}
    as_text = segmentation_metrics(
        [[names[x] for x in p] for p in preds], [[names[x] for x in g] for g in gts], background=["background"]
    )
    assert as_text == expected


@pytest.mark.parametrize(
    "preds, gts, field",
    [
        ([], [], "preds"),
        ([[0, 1]], [[0, 1], [1]], "gts"),
        ([[0, 1]], [[0, 1, 1]], r"preds\[0\]"),
        ([[]], [[]], r"gts\[0\]"),
        ([[[0, 1]]], [[[0, 1]]], r"preds\[0\]"),
        (["ab"], ["ab"], r"preds\[0\]"),
    ],
)
def test_bad_inputs_raise(preds, gts, field):
    with pytest.raises(MetricInputError, match=field):
        segmentation_metrics(preds, gts)

"""Per-video accuracy / macro-F1 and the confusion matrix against plain loops."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from videolang.eval import MetricInputError, confusion_matrix, recognition_metrics


def reference(preds, gts):
    accs, f1s = [], []
    for pred, gt in zip(preds, gts):
        accs.append(sum(p == g for p, g in zip(pred, gt)) / len(gt))
        per_class = []
        for c in sorted(set(pred) | set(gt)):
            tp = sum(p == c and g == c for p, g in zip(pred, gt))
            fp = sum(p == c and g != c for p, g in zip(pred, gt))
            fn = sum(p != c and g == c for p, g in zip(pred, gt))
            per_class.append(2 * tp / (2 * tp + fp + fn))
        f1s.append(sum(per_class) / len(per_class))
    return {"acc": 100 * sum(accs) / len(accs), "F1": 100 * sum(f1s) / len(f1s)}


def random_videos(seed: int, num_classes: int):
    rng = random.Random(seed)
    preds, gts = [], []
    for _ in range(rng.randint(1, 8)):
        present = rng.sample(range(num_classes), rng.randint(1, num_classes))
        gt = [rng.choice(present) for _ in range(rng.randint(1, 60))]
        pred = [g if rng.random() < 0.6 else rng.randrange(num_classes) for g in gt]
        preds.append(pred)
        gts.append(gt)
    return preds, gts


@pytest.mark.parametrize("seed", range(10))
def test_matches_reference(seed):
    preds, gts = random_videos(seed, num_classes=2 + seed % 6)
    assert recognition_metrics(preds, gts) == pytest.approx(reference(preds, gts))
    assert recognition_metrics(preds, gts, num_classes=20) == pytest.approx(reference(preds, gts))


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_matches_loop(seed):
    preds, gts = random_videos(seed, num_classes=5)
    expected = np.zeros((7, 7), dtype=np.int64)
    for pred, gt in zip(preds, gts):
        for p, g in zip(pred, gt):
            expected[g, p] += 1
    assert confusion_matrix(preds, gts, num_classes=7).tolist() == expected.tolist()


def test_a_class_predicted_but_absent_counts_as_zero():
    # Video 1: perfect. Video 2: class 1 never occurs but is predicted once -> its F1 is 0.
    got = recognition_metrics([[0, 0], [0, 1]], [[0, 0], [0, 0]])
    assert got["acc"] == pytest.approx(75.0)
    assert got["F1"] == pytest.approx((100 + (100 * 2 / 3 + 0) / 2) / 2)


def test_tensors_and_lists_agree():
    preds, gts = random_videos(3, num_classes=4)
    expected = recognition_metrics(preds, gts)
    assert recognition_metrics([torch.tensor(p) for p in preds], [np.array(g) for g in gts]) == expected


@pytest.mark.parametrize(
    "preds, gts, kwargs, field",
    [
        ([], [], {}, "preds"),
        ([[0]], [[0], [1]], {}, "gts"),
        ([[0, 1]], [[0]], {}, r"preds\[0\]"),
        ([[]], [[]], {}, r"gts\[0\]"),
        ([[0.5]], [[0]], {}, r"preds\[0\]"),
        ([[0]], [[-1]], {}, r"gts\[0\]"),
        ([[0, 3]], [[0, 1]], {"num_classes": 3}, "num_classes"),
        ([[0]], [[0]], {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_inputs_raise(preds, gts, kwargs, field):
    with pytest.raises(MetricInputError, match=field):
        recognition_metrics(preds, gts, **kwargs)

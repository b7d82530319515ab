"""BLEU-4 and CIDEr-D against pycocoevalcap (the coco-caption scorers), and script-field accuracy."""

from __future__ import annotations

import random

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from videolang.eval import MetricInputError, bleu4, captioning_metrics, cider_d, script_field_accuracy
from videolang.eval.metrics import tokenize


def random_corpus(seed: int):
    """Sentences over a tiny vocabulary, so 3- and 4-grams overlap often; some are empty or one word."""
    rng = random.Random(seed)
    vocab = ["a", "man", "cuts", "the", "onion", "slowly"][: rng.randint(3, 6)]

    def sentence() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.choice([0, 1, 2, 5, 8, 12])))

    videos = rng.randint(1, 15)
    hyps = [sentence() for _ in range(videos)]
    refs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(videos)]
    return hyps, refs


def coco(hyps, refs):
    gts = {i: list(r) for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return 100 * bleu[3], 100 * cider


@pytest.mark.parametrize("seed", range(25))
def test_matches_pycocoevalcap(seed):
    hyps, refs = random_corpus(seed)
    expected_bleu, expected_cider = coco(hyps, refs)
    assert bleu4(hyps, refs) == pytest.approx(expected_bleu, rel=1e-9, abs=1e-12)
    assert cider_d(hyps, refs) == pytest.approx(expected_cider, rel=1e-9, abs=1e-12)


def test_corpus_with_real_overlap_matches_pycocoevalcap():
    rng = random.Random(0)
    refs = [["a man cuts the onion on a board", "someone slices an onion"]]
    refs += [["a dog runs in the park", "the dog is running"]]
    refs += [[f"the cook adds {w} to the pan and stirs it"] for w in ("salt", "oil", "garlic", "rice")]
    hyps = [rng.choice(r) if i % 2 else "a man is cutting an onion" for i, r in enumerate(refs)]
    got = captioning_metrics(hyps, refs)
    expected_bleu, expected_cider = coco(hyps, refs)
    assert got["BLEU-4"] == pytest.approx(expected_bleu, rel=1e-9)
    assert got["CIDEr-D"] == pytest.approx(expected_cider, rel=1e-9)
    assert 10 < got["BLEU-4"] < 100 and got["CIDEr-D"] > 10


def test_case_and_punctuation_are_ignored():
    hyps = ["A man cuts the onion.", "The dog runs!"]
    refs = [["a man cuts the onion slowly"], ["the dog runs in the park", "A dog, running."]]
    plain_hyps = [" ".join(tokenize(h)) for h in hyps]
    plain_refs = [[" ".join(tokenize(r)) for r in rs] for rs in refs]
    assert plain_hyps == ["a man cuts the onion", "the dog runs"]
    assert captioning_metrics(hyps, refs) == captioning_metrics(plain_hyps, plain_refs)
    assert tokenize("A close-up shot; don't move.") == ["a", "close-up", "shot", "don't", "move"]


def test_identical_captions_score_full_bleu():
    refs = [["a man cuts the onion on a board"], ["the dog runs across the wet grass"]]
    assert bleu4([r[0] for r in refs], refs) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "hyps, refs, field",
    [
        ([], [], "hyps"),
        ("a caption", ["a caption"], "hyps"),
        (["a"], [], "refs"),
        (["a"], [[]], r"refs\[0\]"),
        (["a"], ["a"], r"refs\[0\]"),
        ([3], [["a"]], r"hyps\[0\]"),
        (["a"], [["a", None]], r"refs\[0\]"),
    ],
)
def test_bad_caption_inputs_raise(hyps, refs, field):
    with pytest.raises(MetricInputError, match=field):
        captioning_metrics(hyps, refs)


def test_script_field_accuracy_matches_loop():
    rng = random.Random(1)
    shots = ["close-up", "medium shot", "wide shot"]
    moves = ["static", "pan left", "zoom in"]
    gts = [{"shot_type": rng.choice(shots), "camera_movement": rng.choice(moves)} for _ in range(40)]
    preds = [{"shot_type": rng.choice(shots), "camera_movement": rng.choice(moves)} for _ in range(40)]
    got = script_field_accuracy(preds, gts)
    for field in ("shot_type", "camera_movement"):
        assert got[field] == pytest.approx(100 * sum(p[field] == g[field] for p, g in zip(preds, gts)) / 40)


def test_script_field_normalisation_failures_and_missing_ground_truth():
    gts = [
        {"shot_type": "Close-up"},
        {"shot_type": "wide shot", "camera_movement": "pan"},
        {"camera_movement": "static"},
    ]
    preds = [{"shot_type": "close up"}, None, {"shot_type": "wide", "camera_movement": " Static. "}]
    got = script_field_accuracy(preds, gts)
    assert got["shot_type"] == pytest.approx(50.0)  # 2 scored: normalised match, failed parse
    assert got["camera_movement"] == pytest.approx(50.0)  # 2 scored: failed parse, normalised match


@pytest.mark.parametrize(
    "preds, gts, kwargs, field",
    [
        ([], [], {}, "preds"),
        ([{}], [{}, {}], {}, "preds"),
        ([{}], [{"shot_type": "x"}], {}, "camera_movement"),
        (["close-up"], [{"shot_type": "x"}], {"fields": ["shot_type"]}, r"preds\[0\]"),
        ([{}], ["x"], {"fields": ["shot_type"]}, r"gts\[0\]"),
    ],
)
def test_bad_script_inputs_raise(preds, gts, kwargs, field):
    with pytest.raises(MetricInputError, match=field):
        script_field_accuracy(preds, gts, **kwargs)


def test_captioning_metrics_add_the_script_fields_ground_truth_has():
    hyps, refs = ["a man cuts", "a dog runs"], [["a man cuts"], ["a dog runs"]]
    preds = [{"shot_type": "close-up", "camera_movement": "pan"}, {"shot_type": "wide"}]
    gts = [{"shot_type": "Close-up"}, {"shot_type": "medium"}]
    got = captioning_metrics(hyps, refs, preds, gts)
    assert got["shot_type_acc"] == pytest.approx(50.0)
    assert "camera_movement_acc" not in got  # no ground truth has it
    assert set(captioning_metrics(hyps, refs, [None, None], [{}, {}])) == {"BLEU-4", "CIDEr-D"}
    with pytest.raises(MetricInputError, match="gt_scripts"):
        captioning_metrics(hyps, refs, preds, None)

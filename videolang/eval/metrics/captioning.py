"""Captioning metrics: corpus BLEU-4 and CIDEr-D as coco-caption defines them, and script-field accuracy.

Video-captioning papers report the numbers of the coco-caption toolkit (PyPI `pycocoevalcap`); its BLEU
and CIDEr-D are pure Python but the package ships ~100 MB of Java jars for its tokenizer, METEOR and
SPICE, so the two scorers are re-implemented here from its definitions and tested against it:

- BLEU-4: clipped n-gram matches (n <= 4) and hypothesis n-gram counts summed over the corpus, their
  ratios multiplied (numerator + 1e-15, denominator + 1e-9, so a corpus without a 4-gram match scores
  ~0 rather than failing), 4th root, times the brevity penalty exp(1 - r / c) when the corpus length c
  is below r, the sum over sentences of the reference length closest to the hypothesis length (the
  shorter one on a tie).
- CIDEr-D: n-gram (n <= 4) tf-idf vectors, idf = log(#videos) - log(#videos whose references contain
  the n-gram); per n, the hypothesis weights are clipped at the reference's (min(h, r) * r) and divided
  by both norms, times a Gaussian length penalty exp(-delta**2 / (2 * 6**2)) where delta is the
  difference in bigram counts (coco-caption's length; the word-count difference for sentences of two
  or more words); averaged over n and over references, times 10, then averaged over videos.

Both are returned times 100, as papers print them (BLEU-4 40.1, CIDEr-D 52.3). Text is lowercased and
split into word tokens, dropping punctuation (`tokenize`); coco-caption's Stanford tokenizer splits
contractions ("do n't") where `tokenize` keeps them whole, so text with contractions can differ slightly.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

from videolang.eval.metrics.errors import MetricInputError

MAX_N = 4
CIDER_SIGMA = 6.0
SCRIPT_FIELDS = ("shot_type", "camera_movement")
_WORD = re.compile(r"\w+(?:['-]\w+)*")
_NOT_WORD = re.compile(r"[\W_]+")


def captioning_metrics(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    pred_scripts: Optional[Sequence[Optional[Mapping[str, Any]]]] = None,
    gt_scripts: Optional[Sequence[Mapping[str, Any]]] = None,
) -> dict[str, float]:
    """`{"BLEU-4", "CIDEr-D"}` of one generated caption per video against that video's references.

    Given parsed scripts too, adds `"<field>_acc"` (see `script_field_accuracy`) for each of
    `SCRIPT_FIELDS` that at least one ground-truth script has.
    """
    out = {"BLEU-4": bleu4(hyps, refs), "CIDEr-D": cider_d(hyps, refs)}
    if pred_scripts is not None or gt_scripts is not None:
        if pred_scripts is None or gt_scripts is None:
            raise MetricInputError("pred_scripts/gt_scripts: give both or neither")
        if len(gt_scripts) != len(hyps):
            raise MetricInputError(f"gt_scripts: expected one per hypothesis ({len(hyps)}), got {len(gt_scripts)}")
        fields = [f for f in SCRIPT_FIELDS if any(isinstance(g, Mapping) and g.get(f) is not None for g in gt_scripts)]
        if fields:
            accuracy = script_field_accuracy(pred_scripts, gt_scripts, fields)
            out.update({f"{field}_acc": value for field, value in accuracy.items()})
    return out


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; punctuation is dropped, inner apostrophes and hyphens kept ("close-up")."""
    return _WORD.findall(text.lower())


def bleu4(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (coco-caption conventions, see the module docstring), times 100."""
    hyp_tokens, ref_tokens = _tokenized(hyps, refs)
    matches = [0] * MAX_N
    guesses = [0] * MAX_N
    hyp_length = ref_length = 0
    for hyp, references in zip(hyp_tokens, ref_tokens):
        hyp_length += len(hyp)
        ref_length += min((len(r) for r in references), key=lambda n: (abs(n - len(hyp)), n))
        best_ref_counts: Counter = Counter()
        for reference in references:
            best_ref_counts |= _ngram_counts(reference)
        for gram, count in _ngram_counts(hyp).items():
            matches[len(gram) - 1] += min(count, best_ref_counts[gram])
        for n in range(MAX_N):
            guesses[n] += max(len(hyp) - n, 0)
    score = 1.0
    for n in range(MAX_N):
        score *= (matches[n] + 1e-15) / (guesses[n] + 1e-9)
    score **= 1.0 / MAX_N
    ratio = (hyp_length + 1e-15) / (ref_length + 1e-9)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return 100.0 * score


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], sigma: float = CIDER_SIGMA) -> float:
    """Corpus CIDEr-D (coco-caption conventions, see the module docstring), times 100.

    The idf comes from the references of the videos scored, so the value depends on the whole set.
    """
    hyp_tokens, ref_tokens = _tokenized(hyps, refs)
    hyp_counts = [_ngram_counts(h) for h in hyp_tokens]
    ref_counts = [[_ngram_counts(r) for r in references] for references in ref_tokens]
    document_frequency: Counter = Counter()
    for references in ref_counts:
        document_frequency.update(set().union(*references))
    log_videos = math.log(len(ref_counts))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float], int]:
        vectors: list[dict] = [{} for _ in range(MAX_N)]
        for gram, tf in counts.items():
            vectors[len(gram) - 1][gram] = tf * (log_videos - math.log(max(1.0, document_frequency[gram])))
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vectors]
        return vectors, norms, _bigram_total(counts)

    total = 0.0
    for hyp, references in zip(hyp_counts, ref_counts):
        hyp_vec, hyp_norm, hyp_len = tfidf(hyp)
        video_score = 0.0
        for reference in references:
            ref_vec, ref_norm, ref_len = tfidf(reference)
            penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
            for n in range(MAX_N):
                overlap = sum(min(w, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, w in hyp_vec[n].items())
                if hyp_norm[n] != 0 and ref_norm[n] != 0:
                    overlap /= hyp_norm[n] * ref_norm[n]
                video_score += overlap * penalty / MAX_N
        total += 10.0 * video_score / len(references)
    return 100.0 * total / len(hyp_counts)


def script_field_accuracy(
    preds: Sequence[Optional[Mapping[str, Any]]],
    gts: Sequence[Mapping[str, Any]],
    fields: Sequence[str] = SCRIPT_FIELDS,
) -> dict[str, float]:
    """Percent of videos whose parsed field (e.g. shot type, camera movement) equals the ground truth.

    Values compare case-, spacing- and punctuation-insensitively ("Close-up" == "close up"). A prediction
    that failed to parse (None) or lacks the field is wrong; ground truth without the field is skipped.
    """
    if not isinstance(preds, Sequence) or len(preds) == 0 or len(preds) != len(gts):
        raise MetricInputError(f"preds: expected one parsed script per ground truth ({len(gts)}), got {_length(preds)}")
    out = {}
    for field in fields:
        scored = correct = 0
        for index, (pred, gt) in enumerate(zip(preds, gts)):
            if not isinstance(gt, Mapping):
                raise MetricInputError(f"gts[{index}]: expected a mapping of script fields, got {type(gt).__name__}")
            if pred is not None and not isinstance(pred, Mapping):
                kind = type(pred).__name__
                raise MetricInputError(f"preds[{index}]: expected a mapping of script fields or None, got {kind}")
            if gt.get(field) is None:
                continue
            scored += 1
            correct += pred is not None and _normalized(pred.get(field)) == _normalized(gt[field])
        if scored == 0:
            raise MetricInputError(f"gts: no ground truth has a {field!r} field")
        out[field] = 100.0 * correct / scored
    return out


def _ngram_counts(tokens: list[str]) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, MAX_N + 1) for i in range(len(tokens) - n + 1))


def _bigram_total(counts: Counter) -> int:
    return sum(c for gram, c in counts.items() if len(gram) == 2)


def _normalized(value: Any) -> Optional[str]:
    return None if value is None else _NOT_WORD.sub(" ", str(value).lower()).strip()


def _tokenized(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[list[list[str]]]]:
    if not isinstance(hyps, Sequence) or isinstance(hyps, str) or len(hyps) == 0:
        raise MetricInputError("hyps: expected a non-empty list of captions, one per video")
    if not isinstance(refs, Sequence) or len(refs) != len(hyps):
        raise MetricInputError(
            f"refs: expected one list of references per hypothesis ({len(hyps)}), got {_length(refs)}"
        )
    hyp_tokens, ref_tokens = [], []
    for index, (hyp, references) in enumerate(zip(hyps, refs)):
        if not isinstance(hyp, str):
            raise MetricInputError(f"hyps[{index}]: expected a string, got {type(hyp).__name__}")
        if isinstance(references, str) or not isinstance(references, Sequence) or len(references) == 0:
            raise MetricInputError(f"refs[{index}]: expected a non-empty list of reference strings")
        if not all(isinstance(r, str) for r in references):
            raise MetricInputError(f"refs[{index}]: every reference must be a string")
        hyp_tokens.append(tokenize(hyp))
        ref_tokens.append([tokenize(r) for r in references])
    return hyp_tokens, ref_tokens


def _length(x: Any) -> str:
    return str(len(x)) if isinstance(x, Sequence) else type(x).__name__

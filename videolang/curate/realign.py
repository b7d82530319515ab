"""Re-time narration with optimal transport (`videolang curate realign`).

Narration is often early, late or about something else (Norton's observation on HowTo100M). Per video,
sentences and sliding windows of the video are embedded by a trained model, and a *partial* (or
unbalanced) transport plan moves each sentence's mass to the windows it matches, leaving the mass of
sentences that match nothing untransported. A sentence then moves to the centre of the windows that
received its mass (keeping its duration), and the fraction of its mass that found a window is its
confidence; sentences under `min_confidence` are flagged unmatched and keep their times. POT solves the
transport (`ot.partial.partial_wasserstein`, `ot.unbalanced.sinkhorn_unbalanced`).

The cost is `1 - cosine + time_weight * |window centre - sentence centre| / time_scale`: the time term
keeps a sentence near where it was said when two windows look alike (steps repeat in procedural videos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch

from videolang.data.manifest import ClipPair, Narration, VideoRecord

Solver = Literal["partial", "unbalanced"]


@dataclass(frozen=True)
class RealignRules:
    window: float = 4.0  # seconds per video window
    stride: float = 1.0  # seconds between window starts
    solver: Solver = "partial"
    mass: float = 0.7  # partial: share of the sentences' mass that must be transported
    reg: float = 0.05  # unbalanced: entropic regularisation
    reg_m: float = 0.5  # unbalanced: marginal relaxation (smaller: more mass may stay untransported)
    time_weight: float = 0.2
    time_scale: float = 10.0  # seconds
    min_confidence: float = 0.5
    min_gain: float = 0.0  # move a sentence only if its new place beats its old one by this much cosine

    def check(self) -> None:
        if not (self.window > 0 and self.stride > 0):
            raise ValueError("window and stride must be positive")
        if not 0 < self.mass <= 1:
            raise ValueError(f"mass must be in (0, 1], got {self.mass}")
        if not (self.reg > 0 and self.reg_m > 0 and self.time_scale > 0 and self.time_weight >= 0):
            raise ValueError("reg, reg_m and time_scale must be positive, time_weight non-negative")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


@dataclass
class Realigned:
    narration: list[Narration]  # new times (unmatched sentences keep theirs)
    confidence: list[float]
    matched: list[bool]


def windows(duration: float, rules: RealignRules) -> list[tuple[float, float]]:
    """Windows of `rules.window` seconds every `rules.stride`, the last one ending at the video's end."""
    if duration <= rules.window:
        return [(0.0, duration)]
    starts = np.arange(0.0, duration - rules.window + 1e-9, rules.stride).tolist()
    if starts[-1] + rules.window < duration - 1e-6:
        starts.append(duration - rules.window)
    return [(round(s, 3), round(s + rules.window, 3)) for s in starts]


def window_pairs(video: VideoRecord, spans: list[tuple[float, float]]) -> list[ClipPair]:
    return [ClipPair(video.video_id, video.resolved_path, s, e, "", "window", f"w{i}") for i, (s, e) in enumerate(spans)]


def transport_plan(cost: np.ndarray, rules: RealignRules) -> np.ndarray:
    """Plan [S, W] with row sums <= 1/S: each sentence's mass, the part that found windows."""
    import ot

    s, w = cost.shape
    a = np.full(s, 1.0 / s)
    b = np.full(w, max(1.0 / s, 1.0 / w))  # any window can take a whole sentence
    if rules.solver == "partial":
        return ot.partial.partial_wasserstein(a, b, cost, m=rules.mass)
    plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, rules.reg, rules.reg_m)
    scale = np.minimum(1.0, a / np.maximum(plan.sum(1), 1e-300))  # KL relaxation may also add mass: cap rows at a_i
    return plan * scale[:, None]


def realign_video(sentences: list[Narration], sim: torch.Tensor, spans: list[tuple[float, float]],
                  duration: float, rules: RealignRules) -> Realigned:
    """New times for one video's sentences given their cosine similarities `sim` [S, W] to the windows."""
    centres = np.array([(a + b) / 2 for a, b in spans])
    said = np.array([(n.start + n.end) / 2 for n in sentences])
    simn = sim.double().numpy()
    cost = (1.0 - simn) + rules.time_weight * np.abs(said[:, None] - centres[None, :]) / rules.time_scale
    plan = transport_plan(cost, rules)
    share = plan.sum(1) * len(sentences)  # fraction of each sentence's mass transported
    here = np.abs(said[:, None] - centres[None, :]).argmin(1)  # the window where each sentence was said
    out, confidence, matched = [], [], []
    for i, n in enumerate(sentences):
        conf = float(np.clip(share[i], 0.0, 1.0))
        ok = conf >= rules.min_confidence
        row = plan[i]
        best = int(row.argmax())
        if ok and best != here[i] and simn[i, best] - simn[i, here[i]] >= rules.min_gain:
            near = row >= 0.5 * row.max()  # the windows that took most of it (one run, usually)
            target = float((row[near] * centres[near]).sum() / row[near].sum())
            # Moved by the distance between window centres, so a sentence at either end of the video (which
            # no window centre reaches) is not pulled inwards when it stays in its own window.
            length = n.end - n.start
            start = min(max(n.start + target - centres[here[i]], 0.0), max(duration - length, 0.0))
            n = Narration(round(start, 3), round(min(start + length, duration), 3), n.text)
        out.append(n)
        confidence.append(round(conf, 4))
        matched.append(ok)
    return Realigned(out, confidence, matched)


def realign_records(records: list[VideoRecord], scorer, rules: RealignRules, drop_unmatched: bool = False,
                    progress: bool = True, videos_per_pass: int = 32) -> tuple[list[VideoRecord], dict]:
    """Every record with narration re-timed; per-sentence confidence and flags go to
    `meta.realign`. Returns the records and counts for the report."""
    import copy

    from tqdm import tqdm

    from videolang.curate.io import follow_narration

    out, stats = [], {"videos": 0, "sentences": 0, "matched": 0, "unmatched": 0, "dropped": 0,
                      "mean_abs_shift_s": 0.0, "undecodable_videos": []}
    shifts: list[float] = []
    for rec, duration, spans, embeddings in tqdm(_window_features(records, scorer, rules, videos_per_pass),
                                                 total=len(records), desc="realign", unit="video",
                                                 disable=not progress):
        if embeddings is None:
            if rec.narration:
                stats["undecodable_videos"].append(rec.video_id)
            out.append(rec)  # kept as it was: nothing to re-align (against)
            continue
        text = scorer.texts([n.text for n in rec.narration])
        result = realign_video(rec.narration, text @ embeddings.T, spans, duration, rules)
        rows = sorted(
            ((new, old, conf, ok, i) for i, (new, old, conf, ok) in
             enumerate(zip(result.narration, rec.narration, result.confidence, result.matched))
             if ok or not drop_unmatched),
            key=lambda r: (r[0].start, r[0].end),
        )
        shifts += [abs(new.start - old.start) for new, old, _, ok, _ in rows if ok]
        stats["dropped"] += len(result.narration) - len(rows)
        order = [r[4] for r in rows]
        previous = rec.meta.get("realign", {}).get("source_index") if isinstance(rec.meta.get("realign"), dict) else None
        if not (isinstance(previous, list) and len(previous) == len(rec.narration)):
            previous = list(range(len(rec.narration)))
        rec = copy.copy(rec)
        rec.meta = follow_narration(rec.meta, order, len(rec.narration))  # per-sentence lists follow the new order
        rec.narration = [r[0] for r in rows]
        # Per sentence of the new (time-ordered) track: where it was, how sure the move is, whether it matched,
        # and its index in the first track this video had (kept through repeated re-alignments).
        rec.meta["realign"] = {"original": [[r[1].start, r[1].end] for r in rows],
                               "confidence": [r[2] for r in rows], "matched": [r[3] for r in rows],
                               "source_index": [previous[i] for i in order]}
        stats["videos"] += 1
        stats["sentences"] += len(result.matched)
        stats["matched"] += sum(result.matched)
        stats["unmatched"] += len(result.matched) - sum(result.matched)
        out.append(rec)
    stats["mean_abs_shift_s"] = round(float(np.mean(shifts)), 3) if shifts else 0.0
    return out, stats


def _window_features(records: list[VideoRecord], scorer, rules: RealignRules, videos_per_pass: int):
    """(record, duration, window spans, window embeddings or None) per record, in order. The windows of
    `videos_per_pass` videos go through one loader pass (workers start once per pass, not per video);
    None: no narration, or the video could not be decoded."""
    from videolang.data.video import VideoDecodeError, probe_video

    for lo in range(0, len(records), videos_per_pass):
        block = records[lo : lo + videos_per_pass]
        plans: list = []
        pairs: list[ClipPair] = []
        for rec in block:
            if not rec.narration:
                plans.append(None)
                continue
            try:
                duration = rec.duration if rec.duration is not None else probe_video(rec.resolved_path).duration
            except VideoDecodeError:
                plans.append(None)
                continue
            spans = windows(duration, rules)
            plans.append((duration, spans, len(pairs)))
            pairs += window_pairs(rec, spans)
        feats = scorer.clips(pairs, desc="windows") if pairs else None
        row_of = {i: r for r, i in enumerate(feats.kept)} if feats is not None else {}
        for rec, plan in zip(block, plans):
            if plan is None:
                yield rec, 0.0, [], None
                continue
            duration, spans, first = plan
            rows = [row_of.get(first + k) for k in range(len(spans))]
            if any(r is None for r in rows):  # some window failed to decode: the video is unusable
                yield rec, duration, spans, None
                continue
            yield rec, duration, spans, feats.embeddings[rows]


def start_errors(video: VideoRecord, truth: list[Optional[list[float]]]) -> tuple[list[float], list[float]]:
    """|start - true start| before and after re-alignment, over sentences with a known true time;
    `truth` is per sentence of the current track (the synthetic corpus' `meta.narration_true`, which
    re-alignment keeps in step with the track)."""
    info = video.meta["realign"]
    before, after = [], []
    for n, original, t in zip(video.narration, info["original"], truth):
        if t is not None:
            before.append(abs(original[0] - t[0]))
            after.append(abs(n.start - t[0]))
    return before, after

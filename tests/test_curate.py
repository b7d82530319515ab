"""`videolang curate`: transcript segmentation, scene cuts, pair filtering rules, OT re-alignment on an
oracle similarity, dedup and the LLM hand-off. The steps with a trained model are in test_curate_trained.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videolang.cli import main
from videolang.curate import filter as flt
from videolang.curate.dedup import duplicates, normalise
from videolang.curate.enrich import export_lines
from videolang.curate.io import prune_segments
from videolang.curate.realign import RealignRules, realign_video, transport_plan, windows
from videolang.curate.scenes import SceneRules, detect_scenes
from videolang.curate.segment import SegmentRules, Word, segment_words
from videolang.data.manifest import ClipPair, Narration, Segment, load_manifest
from videolang.data.synth import NarrationNoise, synthesize_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return synthesize_corpus(tmp_path_factory.mktemp("curate") / "data", 4, seed=3,
                             noise=NarrationNoise(shift=0.3, irrelevant=0.3, unmatched_clips=0.0))


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --------------------------------------------------------------------------------------------------
# segment


def _words(spec: str) -> list[Word]:
    """'text@start-end ...' -> words."""
    out = []
    for item in spec.split():
        text, times = item.split("@")
        a, b = times.split("-")
        out.append(Word(text, float(a), float(b)))
    return out


def test_units_end_at_sentence_ends_and_pauses():
    words = _words("so@0-0.5 we@0.5-1 cut.@1-1.6 now@1.7-2.2 the@2.2-2.9 clip@4-4.5 goes@4.5-5 in.@5-5.5")
    rules = SegmentRules(pause=1.0, min_seconds=1.0, max_seconds=15)
    # "cut." ends a sentence; the 1.1 s silence after "the" ends the next unit; "in." ends the last.
    assert [(u.start, u.end, u.text) for u in segment_words(words, rules)] == [
        (0.0, 1.6, "so we cut."), (1.7, 2.9, "now the"), (4.0, 5.5, "clip goes in.")]
    # A pause does not cut a unit shorter than min_seconds: "now" (0.5 s) runs on into the next words.
    words = _words("so@0-0.5 we@0.5-1 cut.@1-1.6 now@1.7-2.2 clip@4-4.5 goes@4.5-5 in.@5-5.5")
    assert [u.text for u in segment_words(words, rules)] == ["so we cut.", "now clip goes in."]


def test_short_units_merge_and_long_ones_split():
    words = _words("okay.@0-0.4 then@0.5-1 we@1-1.5 go.@1.5-2")
    units = segment_words(words, SegmentRules(pause=1.0, min_seconds=1.0, max_seconds=15))
    assert [u.text for u in units] == ["okay. then we go."]  # "okay." alone is under a second
    long = _words(" ".join(f"w{i}@{i}-{i + 0.9}" for i in range(40)))
    units = segment_words(long, SegmentRules(pause=5.0, min_seconds=1.0, max_seconds=10))
    assert all(u.end - u.start <= 10 for u in units) and len(units) == 4
    assert " ".join(u.text for u in units) == " ".join(w.text for w in long)  # nothing lost or reordered


def _whisperx(path: Path, segments) -> Path:
    path.write_text(json.dumps({"segments": segments, "language": "en"}))
    return path


def test_segment_command_from_transcripts(tmp_path, corpus, capsys):
    videos = load_manifest(corpus)
    tdir = tmp_path / "transcripts"
    tdir.mkdir()
    _whisperx(tdir / f"{videos[0].video_id}.json", [
        {"start": 0.5, "end": 4.0, "text": " First we place it. Then we turn.",
         "words": [{"word": "First", "start": 0.5, "end": 0.8}, {"word": "we", "start": 0.8, "end": 1.0},
                   {"word": "place", "start": 1.0, "end": 1.3}, {"word": "it.", "start": 1.3, "end": 1.7},
                   {"word": "Then", "start": 2.0, "end": 2.4}, {"word": "12", "score": 0.1},  # no times (a number)
                   {"word": "we", "start": 2.6, "end": 2.9}, {"word": "turn.", "start": 2.9, "end": 4.0}]},
        {"start": 6.0, "end": 10.0, "text": "No word times here. Two sentences."},
    ])
    out = tmp_path / "narrated.jsonl"
    assert main(["curate", "segment", str(tdir), "--manifest", str(corpus), "--out", str(out)]) == 0
    got = {v.video_id: v for v in load_manifest(out)}
    n = got[videos[0].video_id].narration
    assert [(x.start, x.end, x.text) for x in n] == [
        (0.5, 1.7, "First we place it."), (2.0, 4.0, "Then 12 we turn."),
        (6.0, 8.303, "No word times here."), (8.303, 10.0, "Two sentences.")]  # 4 s shared 19:14 by characters
    # Records without a transcript keep their narration; paths still resolve from the new folder.
    assert got[videos[1].video_id].narration == videos[1].narration
    assert got[videos[1].video_id].resolved_path.resolve() == videos[1].resolved_path.resolve()
    # A malformed transcript names the file and key path.
    _whisperx(tdir / f"{videos[0].video_id}.json", [{"start": 3.0, "end": 1.0, "text": "x"}])
    assert main(["curate", "segment", str(tdir), "--manifest", str(corpus), "--out", str(out)]) == 2
    assert f"{videos[0].video_id}.json: segments[0].end: ends before it starts" in _err(capsys)


def test_segment_command_makes_records_from_videos(tmp_path, corpus):
    videos = load_manifest(corpus)
    tdir = tmp_path / "t"
    tdir.mkdir()
    _whisperx(tdir / f"{videos[2].video_id}.json", [{"start": 1.0, "end": 3.0, "text": "Hello there."}])
    _whisperx(tdir / "no-such-video.json", [{"start": 1.0, "end": 3.0, "text": "Nobody."}])
    out = tmp_path / "new.jsonl"
    assert main(["curate", "segment", str(tdir), "--videos", str(corpus.parent / "videos"), "--out", str(out)]) == 0
    (rec,) = load_manifest(out)
    assert rec.video_id == videos[2].video_id and rec.narration == [Narration(1.0, 3.0, "Hello there.")]
    assert rec.duration == pytest.approx(videos[2].duration, abs=0.2)


# --------------------------------------------------------------------------------------------------
# scenes


def test_scene_cuts_find_the_background_changes(corpus):
    """The synthetic videos change backdrop between phases: each change must be a cut, at its exact
    frame. Any other cut must sit exactly where the picture changes at once (a new object appears),
    never inside a pan or a motion."""
    rules = SceneRules(fps=4.0)
    for video in load_manifest(corpus):
        render = video.meta["render"]
        fps = render["fps"]
        truth = [b["start"] / fps for b in render["backgrounds"][1:]]
        appear = {s["start"] / fps for a, s in zip(render["sprites"], render["sprites"][1:])
                  if (a["shape"], a["color"]) != (s["shape"], s["color"]) or a["end"] != s["start"]}
        spans = detect_scenes(video.resolved_path, rules)
        assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(video.duration, abs=0.2)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # a partition of the video
        cuts = [s for s, _ in spans[1:]]
        for t in truth:
            assert min(abs(c - t) for c in cuts) < 1e-3
        for c in cuts:
            assert min(abs(c - t) for t in [*truth, *appear]) < 1e-3, (video.video_id, c)


def test_scenes_command_skips_a_corrupt_video(tmp_path, corpus, capsys):
    lines = corpus.read_text().splitlines()
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 4096)
    good, rec = json.loads(lines[0]), json.loads(lines[1])
    good["path"] = str(corpus.parent / good["path"])
    rec["path"] = str(bad)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([json.dumps(good), json.dumps(rec)]) + "\n")
    out = tmp_path / "scenes.jsonl"
    assert main(["curate", "scenes", "--manifest", str(manifest), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "1 undecodable video(s) kept unchanged" in printed and "broken.mp4" in printed
    video, broken = load_manifest(out)  # the broken one passes through as it was
    assert not list(broken.iter_segments("clip")) and broken.segments == load_manifest(corpus)[1].segments
    clips = list(video.iter_segments("clip"))
    assert len(clips) >= 2 and all(c.label == "scene" and c.caption is None for c in clips)
    assert list(video.iter_segments("task"))  # the curated levels are kept


# --------------------------------------------------------------------------------------------------
# filter rules


def _pairs(spec: list[tuple[str, str, float]]) -> list[ClipPair]:
    return [ClipPair(v, Path("x.mp4"), t, t + 1, f"c{i}", lv, f"s{i}") for i, (v, lv, t) in enumerate(spec)]


def test_filter_decisions_match_a_brute_force_reading():
    rng = np.random.default_rng(0)
    spec = [(f"v{rng.integers(3)}", ["step", "task"][rng.integers(2)], float(i)) for i in range(60)]
    pairs = _pairs(spec)
    scores = [None if i % 17 == 0 else float(rng.choice([0.1, 0.2, 0.3, 0.5])) for i in range(60)]  # many ties
    for rules in (flt.FilterRules(threshold=0.25), flt.FilterRules(top_fraction=0.5),
                  flt.FilterRules(threshold=0.15, top_fraction=0.7)):
        keep = flt.decide(pairs, scores, rules)
        for i, p in enumerate(pairs):
            # Unscored pairs (undecodable video) are kept: their record passes through unchanged.
            expect = scores[i] is None or rules.threshold is None or scores[i] >= rules.threshold
            if expect and scores[i] is not None and rules.top_fraction is not None:
                group = [j for j, q in enumerate(pairs) if (q.video_id, q.level) == (p.video_id, p.level)
                         and scores[j] is not None]
                n_keep = max(1, int(np.ceil(rules.top_fraction * len(group) - 1e-9)))
                better = [j for j in group if (scores[j], -pairs[j].start) > (scores[i], -p.start)]
                expect = len(better) < n_keep
            assert keep[i] == expect, (rules, i)


def test_pruning_keeps_labels_and_lifts_children():
    tree = [Segment("phase", 0, 10, caption="p", label="prep", segment_id="0", children=[
                Segment("step", 0, 5, caption="s0", segment_id="0.0", children=[
                    Segment("task", 0, 2, caption="t0", segment_id="0.0.0"),
                    Segment("task", 2, 5, caption="t1", segment_id="0.0.1")]),
                Segment("step", 5, 10, caption="s1", segment_id="0.1")])]
    out, removed, hollowed = prune_segments(tree, {"0", "0.0", "0.0.1", "0.1"})
    (phase,) = out
    assert phase.caption is None and phase.label == "prep" and hollowed == 1  # kept for its label
    assert [c.caption for c in phase.children] == ["t0"] and removed == 3  # s0 removed, its kept task lifted
    assert tree[0].caption == "p" and len(tree[0].children) == 2  # the input is not modified


# --------------------------------------------------------------------------------------------------
# realign on an oracle similarity


def test_realign_recovers_shifted_sentences_and_leaves_unrelated_ones():
    # mass 6/7: the six real sentences' share of the transcript must find windows.
    duration, rules = 40.0, RealignRules(window=2.0, stride=0.5, time_weight=0.05, mass=6 / 7)
    spans = windows(duration, rules)
    centres = np.array([(a + b) / 2 for a, b in spans])
    true = [3.0, 9.0, 15.0, 21.0, 27.0, 33.0]
    said = [5.5, 9.0, 12.0, 21.0, 30.5, 33.0]  # three sentences shifted by 2.5-3.5 s
    sentences = [Narration(t - 1, t + 1, f"s{i}") for i, t in enumerate(said)] + [Narration(18, 20, "off topic")]
    sim = torch.tensor(np.stack([np.exp(-((centres - t) ** 2) / 2) for t in true] + [np.zeros(len(spans)) - 0.2]))
    out = realign_video(sentences, sim.float(), spans, duration, rules)
    starts = [n.start + 1 for n in out.narration[:6]]
    assert np.abs(np.array(starts) - np.array(true)).max() <= rules.stride / 2 + 1e-6
    assert out.matched == [True] * 6 + [False] and out.narration[6] == sentences[6]  # unmatched keeps its time
    assert all(c == pytest.approx(1.0) for c in out.confidence[:6]) and out.confidence[6] < 0.5


def test_a_sentence_at_the_video_edge_stays_where_it_matches():
    """No window centre comes within window/2 of either end: a sentence said at 0 s that matches the first
    window must not be pulled inwards, and one said late that matches early moves by the distance between
    the two windows."""
    duration, rules = 12.0, RealignRules(window=4.0, stride=1.0, time_weight=0.0, mass=1.0)
    spans = windows(duration, rules)
    centres = np.array([(a + b) / 2 for a, b in spans])
    sentences = [Narration(0.0, 1.0, "first"), Narration(11.0, 12.0, "last"), Narration(9.0, 10.0, "early")]
    target = [centres[0], centres[-1], centres[2]]  # "early" really belongs to the window centred at 4 s
    sim = torch.tensor(np.stack([np.where(np.isclose(centres, t), 1.0, 0.0) for t in target]))
    out = realign_video(sentences, sim.float(), spans, duration, rules)
    assert [(n.start, n.end) for n in out.narration[:2]] == [(0.0, 1.0), (11.0, 12.0)]
    said = centres[np.abs(centres - 9.5).argmin()]  # the window "early" was said in
    assert out.narration[2].start == pytest.approx(9.0 + centres[2] - said)


class _FakeScorer:
    """Embeds a window by its centre time and a sentence by the time it belongs at (from its text), so
    the best window of each sentence is known."""

    def __init__(self, truth: dict[str, float]):
        self.truth = truth

    def clips(self, pairs, desc=""):
        from videolang.eval.features import ClipFeatures

        centres = torch.tensor([(p.start + p.end) / 2 for p in pairs])
        return ClipFeatures(self._embed(centres), list(range(len(pairs))), {})

    def texts(self, texts):
        return self._embed(torch.tensor([self.truth.get(t, -100.0) for t in texts]))

    @staticmethod
    def _embed(t):  # unit vectors whose cosine, cos(0.15 dt), falls with the time difference; 0 for unknown text
        e = torch.stack([torch.cos(0.15 * t), torch.sin(0.15 * t)], dim=1)
        e[t < -50] = 0.0
        return e


def test_realign_records_keep_per_sentence_meta_in_step(corpus):
    """Re-alignment reorders the track; the synthetic ground truth and realign's own lists must follow,
    also through a second re-alignment and a filter that drops sentences."""
    from videolang.curate.filter import apply
    from videolang.curate.realign import realign_records, start_errors

    video = load_manifest(corpus)[0]
    truth = {n.text: (t[0] + t[1]) / 2 for n, t in zip(video.narration, video.meta["narration_true"]) if t}
    rules = RealignRules(window=2.0, stride=0.5, time_weight=0.01, mass=0.99, min_confidence=0.0)
    out, stats = realign_records([video], _FakeScorer(truth), rules, progress=False)
    (new,) = out
    info = new.meta["realign"]
    assert len(info["original"]) == len(new.narration) == len(new.meta["narration_kind"]) == len(video.narration)
    assert [n.start for n in new.narration] == sorted(n.start for n in new.narration)
    for n, kind, i in zip(new.narration, new.meta["narration_kind"], info["source_index"]):
        assert video.narration[i].text == n.text and video.meta["narration_kind"][i] == kind
    before, after = start_errors(new, new.meta["narration_true"])
    assert np.mean(after) < np.mean(before) and max(after) <= 1.0  # the shifted sentences came back
    again, _ = realign_records([new], _FakeScorer(truth), rules, progress=False)
    assert [video.narration[i].text for i in again[0].meta["realign"]["source_index"]] == [
        n.text for n in again[0].narration]
    # A filter that drops the first two sentences keeps every list in step.
    from videolang.data.manifest import clip_pairs

    pairs = clip_pairs([again[0]], "narration")
    (kept,), _ = apply([again[0]], pairs, [i >= 2 for i in range(len(pairs))], set())
    assert kept.meta["narration_kind"] == again[0].meta["narration_kind"][2:]
    assert kept.meta["realign"]["source_index"] == again[0].meta["realign"]["source_index"][2:]


@pytest.mark.parametrize("solver", ["partial", "unbalanced"])
def test_transport_rows_never_exceed_a_sentence_mass(solver):
    import ot

    rng = np.random.default_rng(1)
    cost = rng.random((5, 12))
    plan = transport_plan(cost, RealignRules(solver=solver, mass=0.6))
    assert (plan >= -1e-12).all() and (plan.sum(1) <= 1 / 5 + 1e-9).all()
    if solver == "partial":  # the exact partial problem: POT's own objective at the same mass
        ref = ot.partial.partial_wasserstein(np.full(5, 0.2), np.full(12, 0.2), cost, m=0.6)
        assert plan.sum() == pytest.approx(0.6) and (plan * cost).sum() == pytest.approx((ref * cost).sum())


# --------------------------------------------------------------------------------------------------
# dedup and enrich


def test_dedup_by_text_and_by_embedding():
    assert normalise("  The Grasper, retracts!") == normalise("the grasper retracts")
    pairs = _pairs([("a", "task", 0), ("a", "task", 1), ("a", "task", 2), ("b", "task", 0), ("a", "step", 3)])
    for p, text in zip(pairs, ["Cut it.", "cut it", "Pull back", "cut it", "Cut it."]):
        object.__setattr__(p, "caption", text)
    assert duplicates(pairs) == [None, 0, None, None, None]  # other videos and levels never count
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0], [0.99, 0.1], [1, 0], [1, 0]]), dim=-1)
    assert duplicates(pairs, emb, threshold=0.95) == [None, 0, 0, None, None]
    assert duplicates(pairs, emb, threshold=0.999) == [None, 0, None, None, None]


def test_dedup_command_without_a_model(tmp_path, corpus):
    lines = [json.loads(x) for x in corpus.read_text().splitlines()]
    first = lines[0]["narration"][0]["text"]
    lines[0]["narration"].append({"start": 1.0, "end": 2.0, "text": first.upper() + "!"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "d.jsonl"
    assert main(["curate", "dedup", "--manifest", str(manifest), "--out", str(out), "--levels", "narration"]) == 0
    got = load_manifest(out)
    assert len(got[0].narration) == len(lines[0]["narration"]) - 1
    assert json.loads((tmp_path / "d.dedup" / "report.json").read_text())["duplicates"] == {"narration": 1}


def test_enrich_round_trip_and_refusals(tmp_path, corpus, capsys):
    export = tmp_path / "captions.jsonl"
    assert main(["curate", "enrich", "export", "--manifest", str(corpus), "--out", str(export),
                 "--levels", "phase,task"]) == 0
    rows = [json.loads(x) for x in export.read_text().splitlines()]
    videos = load_manifest(corpus)
    assert len(rows) == sum(1 for v in videos for s in v.iter_segments() if s.level in ("phase", "task"))
    task = next(r for r in rows if r["level"] == "task")
    assert task["context"]["parent"] and "narration" in task["context"]
    assert set(export_lines(videos[:1], ["phase"]).__next__()) >= {"id", "start", "end", "caption", "context"}
    rows[0]["caption"] = "A rewritten phase caption."
    rows[3]["caption"] = rows[3]["caption"] + " With more detail."
    original_2 = rows[2]["caption"]
    rows[2]["caption"] = None  # what an uncaptioned scene looks like when nobody wrote one: no change
    edits = tmp_path / "edited.jsonl"
    edits.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "merged.jsonl"
    assert main(["curate", "enrich", "merge", "--manifest", str(corpus), "--edits", str(edits), "--out", str(out)]) == 0
    assert "2 caption(s) changed" in capsys.readouterr().out
    merged = {(v.video_id, s.segment_id): s.caption for v in load_manifest(out) for s in v.iter_segments()}
    vid, sid = rows[0]["id"].split("#")
    assert merged[(vid, sid)] == "A rewritten phase caption."
    assert merged[tuple(rows[2]["id"].split("#"))] == original_2
    # Changed timings or ids are refused, naming the line.
    rows[4]["end"] += 0.5
    edits.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["curate", "enrich", "merge", "--manifest", str(corpus), "--edits", str(edits), "--out", str(out)]) == 2
    assert f"{edits}:5: end: is" in _err(capsys)
    rows[4]["end"] -= 0.5
    rows[1]["id"] = "nope#0"
    edits.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["curate", "enrich", "merge", "--manifest", str(corpus), "--edits", str(edits), "--out", str(out)]) == 2
    assert f"{edits}:2: id: 'nope#0' names no segment" in _err(capsys)


def test_bad_options_fail_in_one_line(tmp_path, corpus, capsys):
    assert main(["curate", "filter", "--manifest", str(corpus), "--model", str(tmp_path), "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    assert "give a threshold, a top fraction, or both" in _err(capsys)
    assert main(["curate", "realign", "--manifest", str(corpus), "--model", str(tmp_path), "--mass", "0",
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "mass must be in (0, 1]" in _err(capsys)
    assert main(["curate", "segment", str(tmp_path), "--manifest", str(corpus), "--out", str(tmp_path / "x.jsonl"),
                 "--min-seconds", "20"]) == 2
    assert "must be below max_seconds" in _err(capsys)

"""`videolang curate segment|scenes|filter|realign|dedup|enrich`: turn raw transcripts and noisy captions
into training pairs (the SurgLaVi / Norton preparation steps that need no hosted LLM)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videolang.commands import command_parser
from videolang.data.manifest import LEVELS, load_manifests

ALL_LEVELS = (*LEVELS, "narration")


def _levels(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in ALL_LEVELS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(ALL_LEVELS)}; got {value!r}")
    return names


_levels.__name__ = "levels"


def _inputs(p: argparse.ArgumentParser, out_help: str = "manifest to write") -> None:
    p.add_argument("--manifest", nargs="+", required=True, metavar="M",
                   help="input manifest(s): files or globs such as 'shards/*.jsonl'")
    p.add_argument("--out", required=True, metavar="OUT.jsonl", help=out_help)
    p.add_argument("--video-root", help="base folder for relative video paths (default: each manifest's folder)")


def _model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, metavar="DIR",
                   help="trained model: a run folder, checkpoint or saved VideoTextModel")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-frames", type=int, default=8, help="frames per clip (default: 8)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default: 2)")
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "curate", help="prepare training pairs: segment transcripts, cut scenes, filter, re-align, dedup, enrich",
        description="Curation steps, each reading manifests and writing a new, validated manifest.",
        epilog="example:\n  videolang curate filter --manifest data.jsonl --model runs/demo --top-fraction 0.8 "
               "--out filtered.jsonl", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    p = command_parser(steps, "segment", "time-stamped transcripts (WhisperX JSON) -> narration units",
                       "videolang curate segment transcripts/ --manifest data.jsonl --out narrated.jsonl")
    p.add_argument("transcripts", metavar="TRANSCRIPTS", help="a <video_id>.json file or a folder of them")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", nargs="+", metavar="M", help="records whose narration is replaced")
    src.add_argument("--videos", metavar="DIR", help="make one record per transcript, its video found under DIR")
    p.add_argument("--out", required=True, metavar="OUT.jsonl")
    p.add_argument("--video-root", help="base folder for relative video paths")
    p.add_argument("--pause", type=float, default=1.0, help="a silence this long (s) ends a unit (default: 1)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest unit (default: 1)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="longest unit (default: 15)")
    p.set_defaults(func=run_segment)

    p = command_parser(steps, "scenes", "scene cuts -> clip segments (replacing existing clips)",
                       "videolang curate scenes --manifest long.jsonl --out scenes.jsonl --threshold 27")
    _inputs(p)
    p.add_argument("--fps", type=float, default=4.0, help="frames compared per second (default: 4)")
    p.add_argument("--threshold", type=float, default=27.0, help="HSV difference (0-255) of a cut (default: 27)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest scene (default: 1)")
    p.add_argument("--detector", default="builtin", choices=["builtin", "pyscenedetect"])
    p.add_argument("--workers", type=int, default=2, help="videos scanned in parallel (default: 2)")
    p.set_defaults(func=run_scenes)

    p = command_parser(steps, "filter", "drop clip-caption pairs a trained model scores low",
                       "videolang curate filter --manifest data.jsonl --model runs/demo --threshold 0.2 --out f.jsonl")
    _inputs(p)
    _model_args(p)
    p.add_argument("--levels", type=_levels, default=ALL_LEVELS[:-1], help="levels to filter (default: all curated "
                   "levels; add 'narration' to filter the transcript too)")
    p.add_argument("--threshold", type=float, help="drop pairs whose cosine is below this")
    p.add_argument("--top-fraction", type=float, help="keep this best share of each video's pairs per level")
    p.set_defaults(func=run_filter)

    p = command_parser(steps, "realign", "re-time narration by optimal transport to the video (POT)",
                       "videolang curate realign --manifest htm.jsonl --model runs/pretrain --out realigned.jsonl")
    _inputs(p)
    _model_args(p)
    p.add_argument("--window", type=float, default=4.0, help="seconds per video window (default: 4)")
    p.add_argument("--stride", type=float, default=1.0, help="seconds between windows (default: 1)")
    p.add_argument("--solver", default="partial", choices=["partial", "unbalanced"])
    p.add_argument("--mass", type=float, default=0.7, help="partial: share of sentence mass transported (default: 0.7)")
    p.add_argument("--reg", type=float, default=0.05, help="unbalanced: entropic regularisation")
    p.add_argument("--reg-m", type=float, default=0.5, help="unbalanced: marginal relaxation")
    p.add_argument("--time-weight", type=float, default=0.2, help="cost per --time-scale seconds moved (default: 0.2)")
    p.add_argument("--time-scale", type=float, default=10.0)
    p.add_argument("--min-confidence", type=float, default=0.5,
                   help="sentences with less of their mass matched are flagged unmatched (default: 0.5)")
    p.add_argument("--drop-unmatched", action="store_true", help="remove unmatched sentences instead of flagging")
    p.set_defaults(func=run_realign)

    p = command_parser(steps, "dedup", "drop near-duplicate captions within a video",
                       "videolang curate dedup --manifest data.jsonl --model runs/demo --out dedup.jsonl")
    _inputs(p)
    _model_args(p, required=False)
    p.add_argument("--levels", type=_levels, default=ALL_LEVELS, help="levels to deduplicate (default: all)")
    p.add_argument("--threshold", type=float, default=0.95,
                   help="with --model: text-embedding cosine at which two captions are duplicates (default: 0.95)")
    p.set_defaults(func=run_dedup)

    p = command_parser(steps, "enrich", "hand captions to an external LLM (export) and take them back (merge)",
                       "videolang curate enrich export --manifest data.jsonl --out captions.jsonl")
    p.add_argument("action", choices=["export", "merge"])
    p.add_argument("--manifest", nargs="+", required=True, metavar="M")
    p.add_argument("--out", required=True, help="export: the JSONL for the LLM; merge: the manifest to write")
    p.add_argument("--edits", metavar="FILE", help="merge: the edited export")
    p.add_argument("--levels", type=_levels, default=LEVELS, help="export: levels to export (default: all)")
    p.add_argument("--video-root", help="base folder for relative video paths")
    p.set_defaults(func=run_enrich)


# --------------------------------------------------------------------------------------------------


def _need(ok: bool, message: str) -> None:
    from videolang.errors import VideolangError

    if not ok:
        raise VideolangError(message)


def _scorer(args: argparse.Namespace):
    from videolang.curate.scoring import Scorer

    _need(args.num_frames >= 1, f"--num-frames must be at least 1, got {args.num_frames}")
    _need(args.batch_size >= 1, f"--batch-size must be at least 1, got {args.batch_size}")
    _need(args.workers >= 0, f"--workers must be 0 or more, got {args.workers}")
    return Scorer.load(args.model, args.device, num_frames=args.num_frames, batch_size=args.batch_size,
                       num_workers=args.workers, backend=args.backend)


def _report(out: str, step: str, report: dict) -> Path:
    from videolang.curate.io import report_dir
    from videolang.utils.io import atomic_write_json

    folder = report_dir(out, step)
    atomic_write_json(folder / "report.json", report)
    return folder


def _rules(cls, **kw):
    from videolang.errors import VideolangError

    rules = cls(**kw)
    try:
        rules.check()
    except ValueError as e:
        raise VideolangError(str(e)) from None
    return rules


def run_segment(args: argparse.Namespace) -> int:
    import copy

    from tqdm import tqdm

    from videolang.curate.io import follow_narration, write_records
    from videolang.curate.segment import SegmentRules, segment_transcript, transcript_files

    rules = _rules(SegmentRules, pause=args.pause, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    files = transcript_files(Path(args.transcripts))
    if args.manifest:
        records = load_manifests(args.manifest, video_root=args.video_root)
    else:
        records = _records_for_transcripts(files, Path(args.videos))
    out, units, without = [], 0, 0
    for rec in tqdm(records, desc="segment", unit="video", disable=None):
        file = files.get(rec.video_id)
        if file is None:
            without += 1
            out.append(rec)
            continue
        rec = copy.copy(rec)
        rec.meta = follow_narration(rec.meta, None, len(rec.narration))  # a new track: old per-sentence data goes
        rec.narration = segment_transcript(file, rules, rec.duration)
        units += len(rec.narration)
        out.append(rec)
    unused = sorted(set(files) - {r.video_id for r in records})
    _need(without < len(records), f"no transcript in {args.transcripts} is named after a video id of the manifest "
          f"(e.g. {next(iter(files))}.json for video '{records[0].video_id}'); transcripts are <video_id>.json")
    if unused:
        print(f"{len(unused)} transcript(s) name no video of the manifest: {', '.join(unused[:5])}")
    write_records(out, args.out)
    print(f"wrote {len(out)} record(s) to {args.out}: {units} narration unit(s) from {len(files)} transcript(s)"
          + (f"; {without} record(s) had no transcript and keep their narration" if without else ""))
    return 0


def _records_for_transcripts(files: dict[str, Path], videos: Path):
    from videolang.data.builders.common import VideoIndex, new_record
    from videolang.data.video import VideoDecodeError, probe_video

    index = VideoIndex.scan(videos)
    records, missing = [], []
    for video_id in files:
        found = index.find(video_id)
        if found is None:
            missing.append(video_id)
            continue
        rec = new_record(video_id)
        rec.resolved_path = found.absolute()
        try:
            rec.duration = round(probe_video(found).duration, 3)
        except VideoDecodeError:
            pass
        records.append(rec)
    if missing:
        print(f"skipped {len(missing)} transcript(s) with no video under {videos}: {', '.join(missing[:5])}")
    _need(bool(records), f"no transcript has a video under {videos}")
    return records


def run_scenes(args: argparse.Namespace) -> int:
    import copy

    from torch.utils.data import DataLoader, Dataset
    from tqdm import tqdm

    from videolang.curate.io import write_records
    from videolang.curate.scenes import SceneRules, detect_scenes
    from videolang.data.manifest import Segment
    from videolang.data.video import VideoDecodeError

    _need(args.fps > 0 and args.min_seconds >= 0 and args.threshold > 0,
          "--fps and --threshold must be positive, --min-seconds non-negative")
    rules = SceneRules(fps=args.fps, threshold=args.threshold, min_seconds=args.min_seconds, detector=args.detector)
    records = load_manifests(args.manifest, video_root=args.video_root)

    class Scan(Dataset):  # one video per item, so worker processes decode videos in parallel
        def __len__(self) -> int:
            return len(records)

        def __getitem__(self, i: int):
            try:
                return i, detect_scenes(records[i].resolved_path, rules), None
            except VideoDecodeError as e:
                return i, None, str(e)

    out, scenes, replaced, failed = [], 0, 0, []
    loader = DataLoader(Scan(), batch_size=None, num_workers=max(0, args.workers), collate_fn=lambda x: x)
    for i, spans, error in tqdm(loader, total=len(records), desc="scenes", unit="video", disable=None):
        rec = records[i]
        if error is not None:
            failed.append(rec.video_id)
            print(f"undecodable video, kept unchanged: {error}")
            out.append(rec)
            continue
        if rec.duration is not None:  # the manifest's duration bounds its segments, even if the file runs on
            spans = [(a, min(b, rec.duration)) for a, b in spans if a < rec.duration]
        rec = copy.copy(rec)
        kept = [s for s in rec.segments if s.level != "clip"]
        replaced += len(rec.segments) - len(kept)
        # Uncaptioned until an LLM (or a person) writes one: `enrich export` hands them over.
        clips = [Segment("clip", a, b, label="scene") for a, b in spans]
        rec.segments = sorted(kept + clips, key=lambda s: (s.start, s.end))
        scenes += len(clips)
        out.append(rec)
    _need(len(failed) < len(out), "no video could be decoded; nothing written")
    write_records(out, args.out)
    print(f"wrote {len(out)} record(s) to {args.out}: {scenes} scene clip(s)"
          + (f", replacing {replaced} clip segment(s)" if replaced else "")
          + (f"; {len(failed)} undecodable video(s) kept unchanged" if failed else ""))
    return 0


def run_filter(args: argparse.Namespace) -> int:
    from videolang.curate import filter as flt
    from videolang.curate.io import write_records
    from videolang.utils.io import atomic_write_text

    rules = _rules(flt.FilterRules, levels=args.levels, threshold=args.threshold, top_fraction=args.top_fraction)
    records = load_manifests(args.manifest, video_root=args.video_root)
    pairs = flt.all_pairs(records, rules.levels)
    _need(bool(pairs), f"no captioned pairs at levels {', '.join(rules.levels)}")
    scores, failed = _scorer(args).pair_scores(pairs)
    keep = flt.decide(pairs, scores, rules)
    kept_records, counts = flt.apply(records, pairs, keep, set(failed))
    _need(len(counts["undecodable_videos_kept_unchanged"]) < len(records), "no video could be decoded; nothing written")
    write_records(kept_records, args.out)
    report = {"rules": {"levels": list(rules.levels), "threshold": rules.threshold, "top_fraction": rules.top_fraction},
              "levels": flt.summary(pairs, scores, keep), **counts}
    folder = _report(args.out, "filter", report)
    atomic_write_text(folder / "scores.jsonl", "".join(
        json.dumps({"video_id": p.video_id, "level": p.level, "segment_id": p.segment_id, "start": p.start,
                    "end": p.end, "caption": p.caption, "score": s, "kept": k}, ensure_ascii=False) + "\n"
        for p, s, k in zip(pairs, scores, keep)))
    flt.histogram(pairs, scores, keep, folder / "scores.png", rules.threshold)
    for level, row in report["levels"].items():
        print(f"{level}: kept {row['kept']} of {row['scored']} (mean score kept {row['mean_score_kept']}, "
              f"dropped {row['mean_score_dropped']})")
    if counts["undecodable_videos_kept_unchanged"]:
        print(f"{len(counts['undecodable_videos_kept_unchanged'])} undecodable video(s) could not be scored and are "
              "kept unchanged: " + ", ".join(counts["undecodable_videos_kept_unchanged"][:5]))
    print(f"wrote {len(kept_records)} record(s) to {args.out}; report in {folder}")
    return 0


def run_realign(args: argparse.Namespace) -> int:
    import dataclasses

    from videolang.curate.io import write_records
    from videolang.curate.realign import RealignRules, realign_records

    rules = _rules(RealignRules, window=args.window, stride=args.stride, solver=args.solver, mass=args.mass,
                   reg=args.reg, reg_m=args.reg_m, time_weight=args.time_weight, time_scale=args.time_scale,
                   min_confidence=args.min_confidence)
    records = load_manifests(args.manifest, video_root=args.video_root)
    _need(any(r.narration for r in records), "no record has narration to re-align")
    out, stats = realign_records(records, _scorer(args), rules, drop_unmatched=args.drop_unmatched)
    _need(bool(out), "every video failed to decode; nothing written")
    write_records(out, args.out)
    folder = _report(args.out, "realign", {"rules": dataclasses.asdict(rules), **stats})
    print(f"re-aligned {stats['sentences']} sentence(s) in {stats['videos']} video(s): {stats['matched']} matched "
          f"(mean move {stats['mean_abs_shift_s']} s), {stats['unmatched']} unmatched"
          + (" and dropped" if args.drop_unmatched else " (flagged in meta.realign)")
          + (f"; {len(stats['undecodable_videos'])} undecodable video(s) kept unchanged" if stats["undecodable_videos"]
             else ""))
    print(f"wrote {len(out)} record(s) to {args.out}; report in {folder}")
    return 0


def run_dedup(args: argparse.Namespace) -> int:
    from videolang.curate.dedup import duplicates
    from videolang.curate.filter import all_pairs, apply
    from videolang.curate.io import write_records

    _need(-1 <= args.threshold <= 1, f"--threshold is a cosine in [-1, 1], got {args.threshold}")
    records = load_manifests(args.manifest, video_root=args.video_root)
    pairs = all_pairs(records, args.levels)
    embeddings = None
    if args.model:
        scorer = _scorer(args)
        embeddings = scorer.caption_embeddings([p.caption for p in pairs]) if pairs else None
    dup = duplicates(pairs, embeddings, args.threshold)
    out, counts = apply(records, pairs, [d is None for d in dup], set())
    write_records(out, args.out)
    by_level: dict[str, int] = {}
    for p, d in zip(pairs, dup):
        if d is not None:
            by_level[p.level] = by_level.get(p.level, 0) + 1
    folder = _report(args.out, "dedup", {"duplicates": by_level, "threshold": args.threshold if args.model else None,
                                          "examples": [{"kept": pairs[d].caption, "dropped": p.caption}
                                                       for p, d in zip(pairs, dup) if d is not None][:50]})
    print(f"dropped {sum(by_level.values())} duplicate caption(s)"
          + (": " + ", ".join(f"{k}={v}" for k, v in by_level.items()) if by_level else "")
          + f"; wrote {len(out)} record(s) to {args.out}; report in {folder}")
    return 0


def run_enrich(args: argparse.Namespace) -> int:
    from videolang.curate import enrich
    from videolang.curate.io import write_records

    records = load_manifests(args.manifest, video_root=args.video_root)
    if args.action == "export":
        _need(args.edits is None, "--edits is for 'enrich merge'")
        n = enrich.write_export(records, args.levels, Path(args.out))
        print(f"wrote {n} caption(s) with context to {args.out}; edit 'caption' only, then run "
              f"'videolang curate enrich merge --manifest ... --edits {args.out} --out NEW.jsonl'")
        return 0
    _need(args.edits is not None, "enrich merge needs --edits FILE (the edited export)")
    edits = enrich.read_edits(Path(args.edits), records)
    merged, changed = enrich.merge(records, edits)
    write_records(merged, args.out)
    print(f"merged {len(edits)} line(s), {changed} caption(s) changed; wrote {len(merged)} record(s) to {args.out}")
    return 0

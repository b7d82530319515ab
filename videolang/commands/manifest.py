"""`videolang manifest validate|stats|build`: check manifests before anything trains on them, and build
them from public corpora's annotation files."""

from __future__ import annotations

import argparse
import json
import sys

from videolang.commands import command_parser


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "manifest",
        help="validate, summarise or build hierarchical JSONL manifests",
        description="Validate, summarise or build videolang.manifest/1 JSONL files.",
        epilog="examples:\n  videolang manifest validate data/synth/manifest.jsonl --check-files\n"
        "  videolang manifest stats data/synth/manifest.jsonl\n"
        "  videolang manifest build coin COIN.json --videos coin/videos --out coin.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = command_parser(
        actions,
        "validate",
        "report every problem as FILE:LINE: FIELD: message; exit 1 if there is any",
        "videolang manifest validate train.jsonl val.jsonl --check-files",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--check-files", action="store_true", help="a missing video file is a problem, not a warning")
    p.add_argument("--video-root", help="base folder for relative video paths (default: the manifest's folder)")
    p.add_argument("--quiet", action="store_true", help="do not print warnings")
    p.set_defaults(func=run_validate)

    p = command_parser(
        actions,
        "stats",
        "print counts and durations per split, corpus and level",
        "videolang manifest stats data/synth/manifest.jsonl --json",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--video-root", help="base folder for relative video paths")
    p.set_defaults(func=run_stats)

    add_build_parser(actions)

    p = command_parser(
        actions,
        "shard",
        "split manifests into N parts of about equal total duration",
        "videolang manifest shard corpus.jsonl --shards 64 --out-dir shards/   # then --manifest 'shards/*.jsonl'",
    )
    p.add_argument("files", nargs="+", metavar="M", help="manifest files or globs")
    p.add_argument("--shards", type=_positive_int, required=True, metavar="N")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes DIR/shard-00000-of-000NN.jsonl ...")
    p.add_argument("--video-root", help="base folder for relative video paths (default: the manifest's folder)")
    p.set_defaults(func=run_shard)


BUILD_FORMATS = ("howto100m", "coin", "youcook2", "vript", "surglavi", "cholec80", "autolaparo", "m2cai16",
                 "peskavlp", "msrvtt", "mstcn")


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _name(value: str) -> str:
    """A non-blank value: a blank split or corpus would only fail validation after the whole build."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"must not be blank, got {value!r}")
    return value


# argparse names the type in its message ("invalid positive integer value: 'x'").
_positive_int.__name__ = "positive integer"
_name.__name__ = "name"


def add_build_parser(actions) -> None:
    p = command_parser(
        actions,
        "build",
        "convert a public corpus's annotation files into a manifest",
        "videolang manifest build surglavi surglavi.db --videos surglavi/videos --out surglavi.jsonl --narration",
        description=(
            "Convert a corpus's annotations into a videolang.manifest/1 file. SOURCE per FORMAT:\n"
            "  howto100m  sentencified ASR JSON {video_id: {start, end, text}} -> narration\n"
            "  coin       COIN.json ('database' object) -> labelled steps\n"
            "  youcook2   youcookii_annotations JSON ('database' object) -> captioned steps\n"
            "  vript      folder of <vid>_caption.json files -> one record per scene clip\n"
            "  surglavi   SQLite database -> phase > step > task tree (inferred by time)\n"
            "  cholec80   folder of per-video 'Frame<TAB>Phase' files (25 fps) -> labelled phases\n"
            "  autolaparo folder of per-video phase label files (numeric phases) -> labelled phases\n"
            "  m2cai16    folder of per-video workflow phase files (25 fps) -> labelled phases\n"
            "  peskavlp   folder of per-video narration (start,end,text) and keystep (start,end,step,text)\n"
            "             CSVs -> narration + steps\n"
            "  msrvtt     MSR-VTT annotation JSON (or the 1k-A test CSV) -> one clip per video, all captions\n"
            "  mstcn      action-segmentation folder (groundTruth/, mapping.txt, splits/) -> labelled steps\n"
            "Videos are found under --videos by file stem = video id (the clip id for vript). The result\n"
            "is validated before it replaces --out, which may not be SOURCE. Rules: data_manifests/README.md."
        ),
    )
    p.add_argument("format", choices=BUILD_FORMATS, metavar="FORMAT", help=" | ".join(BUILD_FORMATS))
    p.add_argument("source", metavar="SOURCE", help="annotation file, folder (vript) or database (surglavi)")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="manifest to write")
    p.add_argument("--videos", required=True, metavar="DIR",
                   help="folder searched recursively for <id>.mp4|mkv|webm|avi|mov")
    p.add_argument("--split", type=_name, help="split of every record (default: the source's, else train)")
    p.add_argument("--corpus", type=_name, help="corpus name of every record (default: the format name)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N source videos")
    p.add_argument("--keep-missing", action="store_true",
                   help="keep videos with no file, guessing DIR/<id>.mp4 (default: skip and count them)")
    p.add_argument("--no-filter", action="store_true",
                   help="surglavi: keep captions that are not both surgical and descriptive")
    p.add_argument("--narration", action="store_true", help="surglavi: raw_narration becomes the narration track")
    p.add_argument("--fps", type=float, metavar="FPS",
                   help="cholec80/autolaparo/m2cai16/mstcn: frames per second of the annotation rows "
                   "(default: the dataset's documented rate)")
    p.add_argument("--fold", type=_positive_int, default=1, metavar="N",
                   help="mstcn: the splits/*.splitN.bundle files that give train/test (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_build)


def run_validate(args: argparse.Namespace) -> int:
    from videolang.data.manifest import check_manifest
    from videolang.errors import ManifestError

    n_problems = 0
    for file in args.files:
        try:
            records, problems, warnings = check_manifest(
                file, video_root=args.video_root, check_files=args.check_files
            )
        except ManifestError as e:
            records, problems, warnings = [], e.problems, []
        for line in problems:
            print(line, file=sys.stderr)
        if not args.quiet:
            for line in warnings:
                print(f"{line} (warning)", file=sys.stderr)
        n_problems += len(problems)
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        print(f"{file}: {len(records)} valid video(s), {status}, {len(warnings)} warning(s)")
    return 1 if n_problems else 0


def run_shard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from videolang.curate.io import write_records
    from videolang.data.manifest import load_manifests
    from videolang.data.shard import balance, video_weight
    from videolang.errors import VideolangError

    records = load_manifests(args.files, video_root=args.video_root)
    if args.shards > len(records):
        raise VideolangError(f"--shards {args.shards} is more than the {len(records)} videos; every shard needs one")
    out_dir = Path(args.out_dir)
    stale = sorted(out_dir.glob("shard-*-of-*.jsonl"))
    if stale:
        raise VideolangError(f"{out_dir} already holds shards ({stale[0].name}, ...); use an empty folder")
    weights = [video_weight(r) for r in records]
    for k, group in enumerate(balance(weights, args.shards)):
        path = out_dir / f"shard-{k:05d}-of-{args.shards:05d}.jsonl"
        write_records([records[i] for i in group], path)
        print(f"{path}: {len(group)} video(s), {sum(weights[i] for i in group) / 3600:.2f} h")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from videolang.data.manifest import LEVELS, load_manifest, manifest_stats

    stats = manifest_stats(load_manifest(args.file, video_root=args.video_root))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{args.file}: {stats['videos']} videos, {stats['hours']} hours")
    print("splits:  " + ", ".join(f"{k}={v}" for k, v in sorted(stats["splits"].items())))
    if stats["corpora"]:
        print("corpora: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["corpora"].items())))
    print(f"{'level':<8}{'segments':>10}{'mean s':>10}{'words':>8}{'labels':>8}")
    for name, lv in sorted(stats["levels"].items(), key=lambda kv: LEVELS.index(kv[0])):
        print(f"{name:<8}{lv['segments']:>10}{lv['mean_seconds']:>10}{lv['mean_caption_words']:>8}{lv['labels']:>8}")
    n = stats["narration"]
    if n["sentences"]:
        print(f"narration: {n['sentences']} sentences in {n['videos_with_narration']} videos, "
              f"{n['mean_words']} words each on average")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from videolang.data.builders import BuildOptions, build_manifest
    from videolang.errors import VideolangError

    if args.format != "surglavi" and (args.no_filter or args.narration):
        raise VideolangError("--no-filter and --narration only apply to the surglavi format")
    options = BuildOptions(
        videos=Path(args.videos), split=args.split, corpus=args.corpus, limit=args.limit,
        keep_missing=args.keep_missing, filter=not args.no_filter, narration=args.narration,
        progress=not args.no_progress, fps=args.fps, fold=args.fold,
    )
    report = build_manifest(args.format, args.source, args.out, options)
    for line in report.lines():
        print(line)
    return 0

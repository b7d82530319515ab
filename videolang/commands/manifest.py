"""`videolang manifest validate|stats`: check manifests before anything trains on them."""

from __future__ import annotations

import argparse
import json
import sys

from videolang.commands import command_parser


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "manifest",
        help="validate or summarise hierarchical JSONL manifests",
        description="Validate or summarise videolang.manifest/1 JSONL files.",
        epilog="examples:\n  videolang manifest validate data/synth/manifest.jsonl --check-files\n"
        "  videolang manifest stats data/synth/manifest.jsonl",
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


def run_stats(args: argparse.Namespace) -> int:
    from videolang.data.manifest import load_manifest, manifest_stats

    stats = manifest_stats(load_manifest(args.file, video_root=args.video_root))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{args.file}: {stats['videos']} videos, {stats['hours']} hours")
    print("splits:  " + ", ".join(f"{k}={v}" for k, v in sorted(stats["splits"].items())))
    if stats["corpora"]:
        print("corpora: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["corpora"].items())))
    print(f"{'level':<8}{'segments':>10}{'mean s':>10}{'words':>8}{'labels':>8}")
    for name, lv in sorted(stats["levels"].items(), key=lambda kv: "phase step task clip".split().index(kv[0])):
        print(f"{name:<8}{lv['segments']:>10}{lv['mean_seconds']:>10}{lv['mean_caption_words']:>8}{lv['labels']:>8}")
    n = stats["narration"]
    if n["sentences"]:
        print(f"narration: {n['sentences']} sentences in {n['videos_with_narration']} videos, "
              f"{n['mean_words']} words each on average")
    return 0

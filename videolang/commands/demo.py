"""`videolang demo`: the end-to-end run on an embedded default corpus, nothing downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolang.commands import command_parser


def add_parser(sub) -> None:
    p = command_parser(
        sub,
        "demo",
        "end-to-end run on a synthetic procedural corpus (no downloads)",
        "videolang demo --out runs/demo --videos 24",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--videos", type=int, default=24, help="synthetic videos to render (default: 24)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from videolang.data.manifest import load_manifest, manifest_stats
    from videolang.data.synth import synthesize_corpus
    from videolang.errors import VideolangError

    if args.videos < 2:
        raise VideolangError(f"--videos must be at least 2, got {args.videos}")
    out = Path(args.out)
    data_dir = out / "data"
    print(f"[1/2] rendering {args.videos} synthetic videos into {data_dir}")
    manifest = synthesize_corpus(data_dir, args.videos, seed=args.seed, overwrite=True)
    print(f"[2/2] validating {manifest}")
    videos = load_manifest(manifest, check_files=True)
    stats = manifest_stats(videos)
    levels = ", ".join(f"{k}: {v['segments']}" for k, v in stats["levels"].items())
    print(f"  {stats['videos']} videos, {stats['hours'] * 60:.1f} min, segments per level: {levels}")
    print(f"demo outputs: {out.resolve()}")
    return 0

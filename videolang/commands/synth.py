"""`videolang synth`: render the synthetic procedural corpus (mp4s + hierarchical manifest)."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from videolang.commands import command_parser

NOISE_CHOICES = ("none", "low", "default", "high")


def add_parser(sub) -> None:
    p = command_parser(
        sub,
        "synth",
        "render a synthetic procedural corpus with a noisy narration track",
        "videolang synth --out data/synth --videos 100 --seed 0 --noise high --shift 0.4",
        description=(
            "Render short mp4s whose phase > step > task structure is known exactly (scenes > objects > "
            "motions) and write DIR/manifest.jsonl with captions at every level, Vript-style scripts and "
            "a Norton-style noisy narration track. Noise starts from the --noise preset; --shift, "
            "--irrelevant and --unmatched override single fractions of it."
        ),
    )
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--videos", type=int, default=100, help="number of videos (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    p.add_argument(
        "--noise", default="default", help=f"noise preset: {' | '.join(NOISE_CHOICES)} (default: default)"
    )
    p.add_argument("--shift", type=float, help="fraction of narration sentences shifted in time")
    p.add_argument("--irrelevant", type=float, help="fraction of narration sentences replaced by off-topic talk")
    p.add_argument("--unmatched", type=float, help="idle clips with no narration, per task clip")
    p.add_argument("--size", default="128x96", help="frame size WxH, even numbers (default: 128x96)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second (default: 8)")
    p.add_argument("--overwrite", action="store_true", help="replace the corpus in a non-empty --out folder")
    p.set_defaults(func=run)


def parse_size(value: str) -> tuple[int, int]:
    """'WxH' -> (height, width)."""
    from videolang.data.synth import SynthError

    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match:
        raise SynthError(f"--size must look like WIDTHxHEIGHT (e.g. 128x96), got '{value}'")
    return int(match.group(2)), int(match.group(1))


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from videolang.data.synth import NarrationNoise, synthesize_corpus

    size = parse_size(args.size)
    noise = NarrationNoise.preset(args.noise)
    overrides = {"shift": args.shift, "irrelevant": args.irrelevant, "unmatched_clips": args.unmatched}
    noise = replace(noise, **{k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()
    manifest = synthesize_corpus(
        args.out, args.videos, seed=args.seed, noise=noise, size=size, fps=args.fps,
        overwrite=args.overwrite, progress=True,
    )
    seconds = time.perf_counter() - started
    print(f"rendered {args.videos} videos in {seconds:.1f} s: {Path(args.out).resolve() / 'videos'}")
    print(f"manifest: {manifest.resolve()}")
    return 0

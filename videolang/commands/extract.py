"""`videolang extract`: clip or per-frame video features for a manifest, resumable, one file per video."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolang.commands import command_parser
from videolang.data.manifest import LEVELS

LAYOUT = """output layout:
  FEATS/<video_id>.safetensors  per video: "features" float32 [N, D] (L2-normalised), and
                                "start"/"end" float64 [N] seconds + metadata segment_ids (--level), or
                                "times" float64 [N] seconds (--fps); metadata: model, settings
  FEATS/index.json              model, settings, dim, and per video: ok (file, count) | failed (reason)
                                | pending
A rerun with the same model and settings skips videos whose file exists and encodes the rest;
undecodable videos are skipped, listed, and retried on the next run.
"""


def add_parser(sub) -> None:
    p = command_parser(
        sub,
        "extract",
        "write clip or per-frame video features for a manifest (resumable)",
        "videolang extract --model runs/demo/model --manifest data/synth/manifest.jsonl --out feats/step --level step",
        description=(
            "Encode every segment at --level (one feature per clip of --num-frames frames, default 8), or\n"
            "frames sampled at --fps (one feature per 1/fps interval, from the --num-frames samples centred\n"
            "on it, default 1), with the video encoder of --model (a saved VideoTextModel folder or an\n"
            "exported encoder folder).\n\n" + LAYOUT
        ),
    )
    p.add_argument("--model", required=True, metavar="DIR", help="saved VideoTextModel or exported encoder folder")
    p.add_argument("--manifest", required=True, metavar="M", help="videolang.manifest/1 JSONL file")
    p.add_argument("--out", required=True, metavar="FEATS", help="output folder (reused to resume)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--level", choices=(*LEVELS, "narration"),
                      help="clip features, one per segment at this level (or narration sentence)")
    mode.add_argument("--fps", type=float, help="frame features at this many per second")
    p.add_argument(
        "--num-frames", type=int, metavar="T", help="frames per clip (default: 8 with --level, 1 with --fps)"
    )
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="clips per encoder call (default: 16)")
    p.add_argument("--split", help="only videos of this split (default: all)")
    p.add_argument("--video-root", help="base folder for relative video paths (default: the manifest's folder)")
    p.add_argument(
        "--backend", default="auto", choices=("auto", "decord", "pyav"), help="video decoder (default: auto)"
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from videolang.data.manifest import load_manifest
    from videolang.eval.extract import ExtractError, ExtractSettings, extract_features
    from videolang.export import load_video_encoder

    num_frames = args.num_frames if args.num_frames is not None else (8 if args.level else 1)
    settings = ExtractSettings(level=args.level, fps=args.fps, num_frames=num_frames)
    videos = load_manifest(args.manifest, video_root=args.video_root)
    if args.split is not None:
        videos = [v for v in videos if v.split == args.split]
    if not videos:
        raise ExtractError(f"{args.manifest}: no videos" + (f" in split {args.split!r}" if args.split else ""))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ExtractError(f"--device: {e}") from None
    model = Path(args.model).resolve()
    encoder = load_video_encoder(model).to(device)
    result = extract_features(
        encoder, videos, args.out, settings, model=str(model), batch_size=args.batch_size, backend=args.backend
    )
    out = Path(args.out).resolve()
    done = len(result.extracted) + len(result.resumed)
    print(
        f"features: {out} ({done} of {len(videos)} videos: {len(result.extracted)} extracted, "
        f"{len(result.resumed)} resumed, {len(result.failed)} failed)"
    )
    print(f"index: {result.index.resolve()}")
    if result.failed:
        print(f"skipped {len(result.failed)} undecodable video(s):")
        for video_id, reason in result.failed.items():
            print(f"  {video_id}: {reason}")
    if done == 0:
        raise ExtractError(f"no video could be extracted (see {result.index})")
    return 0

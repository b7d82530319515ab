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
            "exported encoder folder).\n\n"
            "Under torchrun (torchrun --nproc_per_node N -m videolang extract ...) each process takes a share\n"
            "of the videos of about equal total duration, on its own GPU if there are any; rank 0 writes\n"
            "one index.json. A rerun, with any number of processes, resumes.\n\n" + LAYOUT
        ),
    )
    p.add_argument("--model", required=True, metavar="DIR", help="saved VideoTextModel or exported encoder folder")
    p.add_argument("--manifest", required=True, nargs="+", metavar="M",
                   help="videolang.manifest/1 JSONL file(s) or globs such as 'shards/*.jsonl'")
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


def _distributed(device_arg: str | None):
    """(rank, world, device) for this process: a world of one, or a torchrun rank joined to its group."""
    import os

    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    choice = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    if world > 1 and choice == "cuda":
        choice = f"cuda:{local}"
    try:
        device = torch.device(choice)
    except RuntimeError as e:
        from videolang.eval.extract import ExtractError

        raise ExtractError(f"--device: {e}") from None
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    from videolang.train.distributed import _share_cores

    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        _share_cores()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def run(args: argparse.Namespace) -> int:
    from videolang.data.manifest import load_manifests
    from videolang.data.shard import balance, video_weight
    from videolang.eval.extract import (
        ExtractError,
        ExtractSettings,
        extract_features,
        has_segments,
        write_index_file,
    )
    from videolang.export import load_video_encoder

    num_frames = args.num_frames if args.num_frames is not None else (8 if args.level else 1)
    settings = ExtractSettings(level=args.level, fps=args.fps, num_frames=num_frames)
    videos = load_manifests(args.manifest, video_root=args.video_root)
    if args.split is not None:
        videos = [v for v in videos if v.split == args.split]
    if not videos:
        where = f" in split {args.split!r}" if args.split else ""
        raise ExtractError(f"{', '.join(args.manifest)}: no videos{where}")
    rank, world, device = _distributed(args.device)
    model = Path(args.model).resolve()
    encoder = load_video_encoder(model).to(device)
    if settings.level is not None and not has_segments(videos, settings.level):
        raise ExtractError(f"--level: no video in the manifest has {settings.level!r} segments")
    # Under torchrun each rank takes a disjoint share of about equal total duration; rank 0 writes the index.
    mine = [videos[i] for i in balance([video_weight(v) for v in videos], world)[rank]]
    if world == 1:
        result = extract_features(encoder, mine, args.out, settings, model=str(model), batch_size=args.batch_size,
                                  backend=args.backend)
        status = result.status
    else:
        import torch.distributed as dist

        error, result = None, None
        try:
            result = extract_features(encoder, mine, args.out, settings, model=str(model),
                                      batch_size=args.batch_size, backend=args.backend, progress=rank == 0,
                                      write_index=False)
        except Exception as e:  # every rank must reach the gather, or the others wait forever
            error = f"rank {rank}: {e}"
        shares: list = [None] * world
        dist.all_gather_object(shares, (error, None if result is None else result.status))
        errors = [e for e, _ in shares if e is not None]
        if errors:
            dist.destroy_process_group()
            raise ExtractError(errors[0] if error is None else error)
        assert result is not None
        merged = {k: v for _, share in shares for k, v in share.items()}
        status = {v.video_id: merged[v.video_id] for v in videos}
        if rank == 0:
            write_index_file(result.index, result.header, status)
        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    failed = {k: v["reason"] for k, v in status.items() if v["status"] == "failed"}
    resumed = sum(1 for v in status.values() if v.get("resumed"))
    done = sum(1 for v in status.values() if v["status"] == "ok")
    out = Path(args.out).resolve()
    print(
        f"features: {out} ({done} of {len(videos)} videos: {done - resumed} extracted, "
        f"{resumed} resumed, {len(failed)} failed" + (f"; {world} processes" if world > 1 else "") + ")"
    )
    print(f"index: {result.index.resolve()}")
    if failed:
        print(f"skipped {len(failed)} undecodable video(s):")
        for video_id, reason in failed.items():
            print(f"  {video_id}: {reason}")
    if done == 0:
        raise ExtractError(f"no video could be extracted (see {result.index})")
    return 0

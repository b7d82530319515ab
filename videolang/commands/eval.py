"""`videolang eval retrieval|recognition|segmentation|captioning|qa`: results.json, a table, plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolang.commands import command_parser

TASKS = {
    "retrieval": ("text->video and video->text retrieval over the clip-caption pairs of a level",
                  "videolang eval retrieval --model runs/demo/model --manifest data/manifest.jsonl --level task"),
    "recognition": ("zero-shot (or --probe) per-frame recognition: accuracy and macro-F1 per video, averaged",
                    "videolang eval recognition --model runs/demo/model --manifest data/manifest.jsonl --level phase"),
    "segmentation": ("action segmentation (MS-TCN protocol): frame accuracy, edit, F1@{10,25,50}",
                     "videolang eval segmentation --model runs/demo/model --manifest data/manifest.jsonl --level step --smooth 5"),
    "captioning": ("generated scripts vs references: BLEU-4, CIDEr-D, shot/camera field accuracy",
                   "videolang eval captioning --model runs/demo/model --manifest data/manifest.jsonl --level task"),
    "qa": ("multiple-choice QA by retrieval: the choice most similar to the clip wins",
           "videolang eval qa --model runs/demo/model --manifest data/manifest.jsonl --level task --choices 5"),
}


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "eval", help="evaluate a saved model on a manifest",
        description="Evaluate a saved VideoTextModel (or an exported encoder, with --probe) on a manifest.",
        epilog="example:\n  " + TASKS["retrieval"][1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, (help_text, example) in TASKS.items():
        p = command_parser(tasks, name, help_text, example)
        p.add_argument("--model", required=True, help="saved VideoTextModel folder or exported encoder folder")
        p.add_argument("--manifest", required=True, nargs="+", metavar="M",
                       help="videolang.manifest/1 JSONL file(s) or globs such as 'shards/*.jsonl'")
        p.add_argument("--level", default="step", help="phase | step | task | clip (| narration for retrieval)")
        p.add_argument("--split", default=None, help="evaluate only videos of this split (default: all; "
                       "'val' when --probe)")
        p.add_argument("--out", default=None, help="output folder (default: MODEL/eval/TASK-LEVEL)")
        p.add_argument("--video-root", default=None, help="base folder for relative video paths")
        p.add_argument("--num-frames", type=int, default=8, help="frames per clip (default: 8)")
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
        p.add_argument("--device", default="cpu")
        p.add_argument("--workers", type=int, default=2,
                       help="decoding processes feeding the model (0: decode in this process; default: 2)")
        p.add_argument("--no-progress", action="store_true")
        if name in ("recognition", "segmentation"):
            p.add_argument("--fps", type=float, default=1.0, help="frames per second to label (default: 1)")
            p.add_argument("--window", type=int, default=1, help="frames per per-frame clip, centred (default: 1)")
            p.add_argument("--prompt", default="{}", help="prompt template for labels, e.g. 'a video of {}.'")
            p.add_argument("--smooth", type=int, default=1, help="odd moving-average window over frames")
            p.add_argument("--switch-penalty", type=float, default=0.0,
                           help="Viterbi decoding with this cost per label change (0: frame-wise argmax)")
            p.add_argument("--probe", action="store_true",
                           help="train a linear probe on frozen features of the 'train' split instead of prompts")
        if name == "segmentation":
            p.add_argument("--no-background", dest="reject_background", action="store_false",
                           help="zero-shot: always predict a label (for corpora whose every frame has one); by "
                           "default a frame is background unless its best label beats the largest label-label "
                           "similarity (Norton's rule)")
        if name == "retrieval":
            p.add_argument("--dual-softmax", action="store_true",
                           help="also report dual-softmax re-scored numbers (labelled as such)")
        if name == "qa":
            p.add_argument("--choices", type=int, default=5)
            p.add_argument("--seed", type=int, default=0)
        if name == "captioning":
            p.add_argument("--beam", type=int, default=1)
        p.set_defaults(func=run)


def _table(results: dict) -> str:
    rows = []
    w = max(len(k) for k in results) + 2
    for key, value in results.items():
        if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            rows.append(f"{key:<{w}}" + "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in value.items()))
        elif isinstance(value, float):
            rows.append(f"{key:<{w}}{value:.2f}")
        elif isinstance(value, (int, str)) and key not in ("task",):
            rows.append(f"{key:<{w}}{value}")
    return "\n".join(rows)


def _check_args(args: argparse.Namespace) -> None:
    """Reject bad values before any model is loaded or video decoded."""
    import math

    from videolang.errors import VideolangError

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise VideolangError(message)

    from videolang.data.manifest import LEVELS

    need(args.level in (*LEVELS, "narration"),
         f"--level: unknown level '{args.level}' (valid: {', '.join(LEVELS)}, narration)")
    need(args.workers >= 0, f"--workers must be 0 or more, got {args.workers}")
    need(args.num_frames >= 1, f"--num-frames must be at least 1, got {args.num_frames}")
    need(args.batch_size >= 1, f"--batch-size must be at least 1, got {args.batch_size}")
    if hasattr(args, "fps"):
        need(math.isfinite(args.fps) and args.fps > 0, f"--fps must be a positive number, got {args.fps}")
        need(args.window >= 1, f"--window must be at least 1, got {args.window}")
        need(args.smooth >= 1 and args.smooth % 2 == 1, f"--smooth must be an odd number >= 1, got {args.smooth}")
        need(args.switch_penalty >= 0, f"--switch-penalty must be >= 0, got {args.switch_penalty}")
        try:
            args.prompt.format("x")
        except (KeyError, IndexError, ValueError) as e:
            raise VideolangError(f"--prompt must contain one '{{}}' for the label, got {args.prompt!r} ({e!r})") from None
    if hasattr(args, "choices"):
        need(args.choices >= 2, f"--choices must be at least 2, got {args.choices}")
    if hasattr(args, "beam"):
        need(args.beam >= 1, f"--beam must be at least 1, got {args.beam}")


def run(args: argparse.Namespace) -> int:
    from videolang.data.manifest import load_manifests
    from videolang.errors import VideolangError
    from videolang.eval import tasks
    from videolang.eval.loading import load_eval_model
    from videolang.utils.io import atomic_write_json, atomic_write_text

    _check_args(args)
    all_videos = load_manifests(args.manifest, video_root=args.video_root)
    split = args.split or ("val" if getattr(args, "probe", False) else None)
    videos = [v for v in all_videos if split is None or v.split == split]
    if not videos:
        raise VideolangError(f"{', '.join(args.manifest)}: no videos in split '{split}'")
    model = load_eval_model(args.model, args.device)
    out = Path(args.out or Path(args.model) / "eval" / f"{args.task}-{args.level}")
    out.mkdir(parents=True, exist_ok=True)
    opts = tasks.EvalOptions(
        level=args.level, split=split, num_frames=args.num_frames, batch_size=args.batch_size,
        backend=args.backend, progress=not args.no_progress, num_workers=args.workers,
        **{k: getattr(args, k) for k in ("fps", "window", "prompt", "smooth", "switch_penalty", "probe",
                                          "dual_softmax", "choices", "seed", "beam", "reject_background") if hasattr(args, k)},
    )
    if args.task == "retrieval":
        results = tasks.run_retrieval(model, videos, opts, out)
    elif args.task == "recognition":
        results = tasks.run_recognition(model, videos, opts, out, all_videos)
    elif args.task == "segmentation":
        results = tasks.run_segmentation(model, videos, opts, out, all_videos)
    elif args.task == "captioning":
        results = tasks.run_captioning(model, videos, opts, out)
    else:
        results = tasks.run_qa(model, videos, opts, out)
    results.update({"model": str(args.model), "manifest": ", ".join(args.manifest), "split": split})
    atomic_write_json(out / "results.json", results)
    table = _table(results)
    atomic_write_text(out / "results.txt", table + "\n")
    print(table)
    if results.get("undecodable_videos"):
        print(f"skipped {results['undecodable_videos']} undecodable video(s): " + ", ".join(results["undecodable"]))
    print(f"results: {out / 'results.json'}")
    return 0

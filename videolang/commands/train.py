"""`videolang train CONFIG`: pretraining on DeepSpeed, as one process, under torchrun or the deepspeed launcher."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolang.commands import command_parser

DESCRIPTION = """Train a dual video-text encoder on DeepSpeed (ZeRO 0-3, fp32/bf16) from manifests.

Runs as one plain process, under `torchrun --nproc_per_node N -m videolang train ...` (one or many
nodes) or under the `deepspeed` launcher; on CPU it uses gloo and compiles nothing. Outputs in
run.output_dir: config.yaml, metrics.jsonl, tensorboard/, checkpoints/step-N/, final/, run.json.
A killed run continues bit for bit with --resume auto (the default)."""


def add_parser(sub) -> None:
    p = command_parser(
        sub, "train", "train a model (DeepSpeed; one process, torchrun or deepspeed launcher)",
        "videolang train configs/smoke.yaml --set data.manifest=data/synth/manifest.jsonl --set train.max_steps=20",
        description=DESCRIPTION,
    )
    p.add_argument("config", metavar="CONFIG", help="YAML config (configs/*.yaml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=100 (repeatable)",
    )
    p.add_argument(
        "--resume", default="auto", metavar="auto|never|PATH",
        help="auto: continue from the newest complete checkpoint in run.output_dir, if any (default); "
        "never: start fresh; PATH: a checkpoint folder",
    )
    p.set_defaults(func=run)


def validator(cfg):
    """Retrieval on data.val_manifest at data.val_level (rank 0, in the training process)."""
    if cfg.data.val_manifest is None:
        return None
    from videolang.data.datasets import _records
    from videolang.eval import tasks
    from videolang.eval.loading import EvalModel

    videos = _records(cfg.data.val_manifest, cfg.data.video_root)
    out = Path(cfg.run.output_dir) / "val"

    def validate(model, step: int) -> dict:
        device = next(model.parameters()).device
        em = EvalModel(out, model.video_encoder, model, device)
        opts = tasks.EvalOptions(level=cfg.data.val_level, num_frames=cfg.data.num_frames, progress=False,
                                 backend=cfg.data.backend, num_workers=cfg.data.num_workers)
        out.mkdir(parents=True, exist_ok=True)
        res = tasks.run_retrieval(em, videos, opts, out)
        return {"t2v": res["t2v"], "v2t": res["v2t"], "clips": res["clips"]}

    return validate


def run(args: argparse.Namespace) -> int:
    import logging

    from videolang.config import load_config
    from videolang.train.trainer import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = load_config(args.config, args.overrides)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the training bar
    result = train(cfg, resume=args.resume, validate=validator(cfg))
    if result.get("final"):
        out = Path(cfg.run.output_dir)
        m = result["metrics"]
        print(f"trained {result['steps']} steps in {result['seconds']} s; loss {m.get('loss', float('nan')):.4f}; "
              f"model in {result['final']}; log {out / 'metrics.jsonl'}; summary {out / 'run.json'}")
        if result["broken_videos"]:
            print(f"skipped {len(result['broken_videos'])} undecodable video(s): {', '.join(result['broken_videos'])}")
    return 0

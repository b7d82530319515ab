"""`videolang demo`: render a corpus, pretrain on it, evaluate before and after, export, report.

Everything runs locally in one CPU process, nothing is downloaded: the synthetic procedural corpus
(scenes = phases, objects = steps, motions = tasks, noisy narration) is rendered with PyAV, a small dual
encoder with a caption head trains on it through the training stage (the same code as `videolang
train`: DeepSpeed engine, checkpoints, metrics.jsonl), and the trained model is evaluated on held-out
videos next to the same model before training and next to chance. `runs/demo/report.md` has the numbers
and the figures.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from videolang.commands import command_parser

STEPS = 6


def add_parser(sub) -> None:
    p = command_parser(
        sub,
        "demo",
        "end-to-end run: synthetic corpus -> training -> evaluation -> export -> report (no downloads)",
        "videolang demo --out runs/demo --videos 24 --steps 200",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--videos", type=int, default=24, help="synthetic videos to render (default: 24)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo config's, 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-encoder", default=None, help="minilm (pretrained, default) or tiny (random, faster)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a key of the demo's training config (videolang/resources/demo.yaml), repeatable",
    )
    p.set_defaults(func=run)


def demo_config(args: argparse.Namespace, out: Path):
    from importlib.resources import files

    from videolang.config import load_config

    sets = [f"run.output_dir={out}", f"run.seed={args.seed}", f"data.manifest={out / 'data' / 'manifest.jsonl'}"]
    if args.steps is not None:
        sets.append(f"train.max_steps={args.steps}")
    if args.text_encoder is not None:
        sets.append(f"model.text_encoder={args.text_encoder}")
    return load_config(files("videolang") / "resources" / "demo.yaml", sets + list(args.overrides))


def _clean_run(out: Path) -> None:
    """The demo owns its folder: the previous demo's run outputs go, so its checkpoints cannot be resumed."""
    for name in ("checkpoints", "final", "untrained", "tensorboard", "eval", "export", "figures"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "run.json", "report.md"):
        (out / name).unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from videolang.data.manifest import load_manifest, manifest_stats
    from videolang.data.synth import synthesize_corpus
    from videolang.errors import VideolangError
    from videolang.eval.suite import evaluate_model, retrieval_figure
    from videolang.eval.loading import load_eval_model
    from videolang.eval.report import chance_levels, write_report
    from videolang.models import VideoEncoder, build_model
    from videolang.train.trainer import Trainer, _seed_all
    from videolang.utils.io import atomic_write_json

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the training bar
    if args.videos < 5:
        raise VideolangError(f"--videos must be at least 5 (one validation video per five), got {args.videos}")
    out = Path(args.out)
    cfg = demo_config(args, out)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _clean_run(out)
    summary: dict = {"config": str(out / "config.yaml")}

    print(f"[1/{STEPS}] rendering {args.videos} synthetic videos into {out / 'data'}")
    manifest = synthesize_corpus(out / "data", args.videos, seed=args.seed, overwrite=True, progress=True)

    print(f"[2/{STEPS}] validating {manifest}")
    videos = load_manifest(manifest, check_files=True)
    stats = manifest_stats(videos)
    levels = ", ".join(f"{k}: {v['segments']}" for k, v in stats["levels"].items())
    print(f"      {stats['videos']} videos, {stats['hours'] * 60:.1f} min, segments per level: {levels}, "
          f"{stats['narration']['sentences']} narration sentences")
    summary["corpus"] = stats

    m = cfg.model
    print(f"[3/{STEPS}] training {cfg.train.max_steps} steps (video: {m.video_encoder}, text: {m.text_encoder}, "
          f"caption head; streams {cfg.data.streams}) -> {out}")
    _seed_all(cfg.run.seed)  # the trainer seeds the same way, so this is its initial model exactly
    untrained_dir = build_model(cfg.model).save_pretrained(out / "untrained")
    trained = Trainer(cfg, resume="never").run()
    print(f"      loss {trained['metrics'].get('loss', float('nan')):.3f} after {trained['steps']} steps in "
          f"{trained['seconds']} s; model in {trained['final']}")
    summary["train"] = {k: trained[k] for k in ("steps", "seconds", "metrics", "nonfinite_dropped", "broken_videos")}

    print(f"[4/{STEPS}] evaluating on the held-out videos, before and after training")
    val = [v for v in videos if v.split == "val"]
    summary["val_videos"] = len(val)
    results = {}
    for name, folder in (("untrained", untrained_dir), ("trained", Path(trained["final"]))):
        results[name] = evaluate_model(load_eval_model(folder), val, videos, out / "eval" / name, cfg.data.num_frames)
    r, u = results["trained"], results["untrained"]
    chance = chance_levels(val, videos)
    print(f"      retrieval t2v R@1 {r['retrieval']['t2v']['R@1']:.1f} (untrained {u['retrieval']['t2v']['R@1']:.1f}, "
          f"chance {chance['t2v_R@1']:.1f}) over {r['retrieval']['clips']} clips")
    print(f"      zero-shot phase recognition acc {r['recognition']['accuracy']:.1f} (untrained "
          f"{u['recognition']['accuracy']:.1f}, chance {chance['recognition_acc']:.1f})")
    print(f"      phase segmentation acc zero-shot {r['segmentation']['acc']:.1f}, linear probe "
          f"{r['segmentation_probe']['acc']:.1f} (all-background {chance['segmentation_all_background_acc']:.1f})")
    print(f"      captioning CIDEr-D {r['captioning']['CIDEr-D']:.3f} (untrained {u['captioning']['CIDEr-D']:.3f})")
    summary["eval"] = r
    summary["untrained"] = u
    summary["chance"] = chance

    print(f"[5/{STEPS}] exporting the video encoder")
    from videolang.export import export_video_encoder

    em = load_eval_model(trained["final"])
    export_dir = out / "export"
    export_video_encoder(em.video, export_dir, num_frames=cfg.data.num_frames, source=str(trained["final"]))
    reloaded = VideoEncoder.from_pretrained(export_dir)
    size = em.video.config.image_size
    clip = torch.randint(0, 256, (2, cfg.data.num_frames, size, size, 3), dtype=torch.uint8)
    same = torch.equal(reloaded.encode(clip), em.video.encode(clip))
    print(f"      {export_dir}: reloaded encoder reproduces embeddings: {same}")
    if not same:
        raise VideolangError("exported encoder does not reproduce the source embeddings")
    summary["export"] = str(export_dir)

    print(f"[6/{STEPS}] writing the report")
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    examples = retrieval_figure(em, val, figures / "retrieval_examples.png", cfg.data.num_frames)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    report = write_report(out, summary, figures, examples)
    atomic_write_json(out / "run.json", {**_load_json(out / "run.json"), **summary})
    print(f"demo finished in {summary['seconds']} s; report {report}; outputs in {out.resolve()}")
    return 0


def _load_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}

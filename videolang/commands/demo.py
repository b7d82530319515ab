"""`videolang demo`: the end-to-end run on an embedded default corpus, nothing downloaded.

Renders a small synthetic procedural corpus, validates it, builds the demo model (tiny video tower +
the pretrained MiniLM text tower shipped as a pip package), evaluates retrieval and zero-shot
segmentation, and exports the video encoder. Training joins this pipeline with the training stage.
"""

from __future__ import annotations

import argparse
import time
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
    p.add_argument("--text-encoder", default="minilm", help="minilm (pretrained, default) or tiny (random)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from videolang.config import load_config, save_config
    from videolang.data.manifest import load_manifest, manifest_stats
    from videolang.data.synth import synthesize_corpus
    from videolang.errors import VideolangError
    from videolang.eval import tasks
    from videolang.eval.loading import load_eval_model
    from videolang.models import build_model
    from videolang.utils.io import atomic_write_json

    if args.videos < 5:
        raise VideolangError(f"--videos must be at least 5 (one validation video per five), got {args.videos}")
    out = Path(args.out)
    cfg = load_config(None, [f"run.output_dir={out}", f"run.seed={args.seed}", f"data.manifest={out / 'data' / 'manifest.jsonl'}",
                             "model.video_encoder=tiny", f"model.text_encoder={args.text_encoder}", "model.embed_dim=64",
                             "model.caption_head=true"])
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    summary: dict = {"config": str(out / "config.yaml")}

    print(f"[1/5] rendering {args.videos} synthetic videos into {out / 'data'}")
    manifest = synthesize_corpus(out / "data", args.videos, seed=args.seed, overwrite=True, progress=True)

    print(f"[2/5] validating {manifest}")
    videos = load_manifest(manifest, check_files=True)
    stats = manifest_stats(videos)
    levels = ", ".join(f"{k}: {v['segments']}" for k, v in stats["levels"].items())
    print(f"      {stats['videos']} videos, {stats['hours'] * 60:.1f} min, segments per level: {levels}, "
          f"{stats['narration']['sentences']} narration sentences")
    summary["corpus"] = stats

    print(f"[3/5] building the model (video: {cfg.model.video_encoder}, text: {cfg.model.text_encoder})")
    model = build_model(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    model_dir = model.save_pretrained(out / "model")
    print(f"      {n_params / 1e6:.1f} M parameters, saved to {model_dir}")

    print("[4/5] evaluating: text-video retrieval (task level), zero-shot phase segmentation")
    em = load_eval_model(model_dir)
    val = [v for v in videos if v.split == "val"]
    opts = tasks.EvalOptions(level="task", num_frames=4, progress=False)
    ret = tasks.run_retrieval(em, val, opts, out)
    seg_dir = out / "eval"
    seg_dir.mkdir(exist_ok=True)
    seg = tasks.run_segmentation(em, val, tasks.EvalOptions(level="phase", fps=1.0, smooth=3, progress=False,
                                                            prompt="a {} scene"), seg_dir, videos)
    print(f"      retrieval t2v R@1 {ret['t2v']['R@1']:.1f}  R@5 {ret['t2v']['R@5']:.1f}  over {ret['clips']} "
          f"clips (untrained model: chance level)")
    print(f"      segmentation acc {seg['acc']:.1f}  edit {seg['edit']:.1f}  F1@50 {seg['F1@50']:.1f}; "
          f"timelines in {seg_dir}")
    summary["eval"] = {"retrieval": ret, "segmentation": {k: seg[k] for k in ("acc", "edit", "F1@10", "F1@25", "F1@50")}}

    print("[5/5] exporting the video encoder")
    from videolang.export import export_video_encoder
    from videolang.models import VideoEncoder

    export_dir = out / "export"
    export_video_encoder(em.video, export_dir, num_frames=4, source=str(model_dir))

    reloaded = VideoEncoder.from_pretrained(export_dir)
    clip = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    same = torch.equal(reloaded.encode(clip), em.video.encode(clip))
    print(f"      {export_dir}: reloaded encoder reproduces embeddings: {same}")
    if not same:
        raise VideolangError("exported encoder does not reproduce the source embeddings")
    summary["export"] = str(export_dir)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "run.json", summary)
    print(f"demo finished in {summary['seconds']} s; outputs in {out.resolve()} (summary: {out / 'run.json'})")
    return 0

"""Training benchmark: the framework's overhead, throughput per config and process count, Sinkhorn's share.

    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_train.py            # everything (CPU: ~5 min)
    DS_ACCELERATOR=cpu .venv/bin/python tools/bench_train.py --quick    # plumbing check (~1 min)
    .venv/bin/python tools/bench_train.py --only overhead --device cuda --model vit-b16 --precision bf16

Sections:
- overhead: the real `Trainer` loop (DeepSpeed engine, non-finite check, temperature clamp, term
  bookkeeping, logging) against a minimal hand-written PyTorch loop (AdamW, clip, LambdaLR) on the same
  model, loss and cached batch, in one process, in alternating blocks; median step time ratio (target
  <= 1.10). On a GPU also samples/s and MFU (2 FLOPs per multiply-add, dense bf16 peak).
- throughput: `videolang train` as 1 and 2 processes (torchrun) with real decoding, per model size:
  clips/s (all ranks), data-wait share, peak RSS of rank 0.
- sinkhorn: the share of a training step spent in Sinkhorn with the paragraph objective (and rectified
  InfoNCE) on, measured by timing every solver call inside the real loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
MODELS = {  # name -> config overrides
    "tiny": ["model.video_encoder=tiny", "model.text_encoder=tiny", "model.embed_dim=32", "data.image_size=32"],
    "small": ["model.video_encoder=small", "model.text_encoder=minilm", "model.embed_dim=128", "data.image_size=64"],
    "vit-b16": ["model.video_encoder=vit-b16", "model.text_encoder=minilm", "model.embed_dim=256", "data.image_size=224",
                "model.max_frames=8", "data.num_frames=8"],
}


def corpus(folder: Path, videos: int) -> Path:
    from videolang.data.synth import synthesize_corpus

    return synthesize_corpus(folder, videos, seed=0)


def config(manifest: Path, out: Path, model: str, extra: list[str]):
    from videolang.config import load_config

    return load_config(SMOKE, [f"data.manifest={manifest}", f"run.output_dir={out}", "train.progress=false",
                               "train.save_every=100000", "train.log_every=100000", "train.warmup_steps=0",
                               *MODELS[model], *extra])


class CachedStream:
    """One real collated batch, served forever: the loop is measured without decoding."""

    def __init__(self, batch):
        from videolang.train.streams import StreamPosition

        self.batch, self.position = batch, StreamPosition()

    def next(self):
        return dict(self.batch)

    def close(self):
        pass


def cached_streams(trainer_module, batch_by_stream):
    from videolang.train.streams import StreamSet, stream_schedule

    def build(cfg, *args, **kwargs):
        return StreamSet({k: CachedStream(v) for k, v in batch_by_stream.items()}, stream_schedule(cfg.data.streams, 0))

    trainer_module.build_streams = build


def real_batches(cfg) -> dict:
    """One collated batch per configured stream, from the real data pipeline."""
    from videolang.models import build_model
    from videolang.models.caption_head import format_script
    from videolang.train.streams import build_streams

    model = build_model(cfg.model)
    streams = build_streams(cfg, model.tokenizer, model.text_encoder.max_length, rank=0, world_size=1,
                            caption_max_len=cfg.model.caption_max_len, format_script=format_script)
    out = {}
    for name, stream in streams.streams.items():
        batch = stream.next()
        batch.pop("failures", None)
        out[name] = batch
    return out


def hand_loop(cfg, batch, steps: int, device) -> list[float]:
    """Minimal PyTorch: forward, loss, backward, clip, AdamW, LambdaLR. Returns per-step seconds."""
    from videolang.losses import build_loss
    from videolang.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    loss_fn = build_loss(cfg.loss).to(device)
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    frames, ids, mask = (batch[k].to(device) for k in ("frames", "input_ids", "attention_mask"))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
            out = model(frames, ids, mask)
        out = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
        loss = loss_fn(out["video"], out["text"], out["logit_scale"], video_frames=out["video_frames"],
                       text_words=out["text_words"], word_mask=out["word_mask"], skip_missing=True)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def framework_loop(cfg, batches, steps: int) -> list[float]:
    from videolang.train import trainer as trainer_module

    cached_streams(trainer_module, batches)
    cfg.train.max_steps = steps
    t = trainer_module.Trainer(cfg, resume="never")
    t._setup()
    start = time.perf_counter()
    t._loop()
    ends = [start] + t.step_ends
    return [b - a for a, b in zip(ends, ends[1:])]


def bench_overhead(args, manifest: Path, tmp: Path) -> list[dict]:
    rows = []
    for model in args.models:
        cfg = config(manifest, tmp / f"over-{model}", model, [f"train.batch_size={args.batch}", f"train.device={args.device}",
                                                              f"train.precision={args.precision}"])
        batch = real_batches(cfg)["pairs"]
        device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        hand, fw = [], []
        hand_loop(cfg, batch, 3, device)  # warm-up: first calls of a process pay for lazy kernel set-up
        for r in range(args.repeats):
            hand += hand_loop(cfg, batch, args.steps, device)[2:]  # the first steps warm caches and allocators
            cfg_r = config(manifest, tmp / f"over-{model}-{r}", model, [f"train.batch_size={args.batch}",
                                                                        f"train.device={args.device}", f"train.precision={args.precision}"])
            fw += framework_loop(cfg_r, {"pairs": batch}, args.steps)[2:]
        h, f = statistics.median(hand), statistics.median(fw)
        row = {"model": model, "batch": args.batch, "hand_ms": round(1000 * h, 1), "framework_ms": round(1000 * f, 1),
               "ratio": round(f / h, 3), "clips_per_s": round(args.batch / f, 1)}
        if device.type == "cuda":
            from videolang.models import build_model, estimate_flops

            flops = estimate_flops(build_model(cfg.model), cfg.data.num_frames, args.batch)
            peak = {"H100": 989e12, "A100": 312e12, "H200": 989e12}
            name = torch.cuda.get_device_name(device)
            peak_flops = next((v for k, v in peak.items() if k in name), None)
            train_flops = 3 * flops  # forward + backward (2x forward)
            row["mfu"] = round(train_flops / f / peak_flops, 3) if peak_flops else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_throughput(args, manifest: Path, tmp: Path) -> list[dict]:
    rows = []
    for model in args.models:
        for procs in (1, 2):
            out = tmp / f"tp-{model}-{procs}"
            sets = [f"data.manifest={manifest}", f"run.output_dir={out}", "train.progress=false",
                    f"train.max_steps={args.steps}", "train.log_every=1", "train.save_every=100000",
                    f"train.batch_size={args.batch // procs}", "data.num_workers=1", *MODELS[model]]
            cmd = ["-m", "videolang", "train", str(SMOKE)] + [a for s in sets for a in ("--set", s)]
            if procs == 1:
                cmd = [sys.executable, *cmd]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *cmd]
            # This process may already be rank 0 of a world of one (the other sections): the child starts clean.
            drop = ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
            env = {k: v for k, v in os.environ.items() if k not in drop}
            env["DS_ACCELERATOR"] = "cpu"
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
            records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][2:]
            run = json.loads((out / "run.json").read_text())
            row = {"model": model, "processes": procs, "batch_total": args.batch,
                   "clips_per_s": round(statistics.median(r["clips_per_s"] for r in records), 1),
                   "data_wait": round(statistics.median(r["data_wait"] for r in records), 3),
                   "peak_rss_mb_rank0": run["peak_memory_mb"]["host_rss"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_sinkhorn(args, manifest: Path, tmp: Path) -> list[dict]:
    import videolang.losses.contrastive as contrastive
    import videolang.losses.paragraph as paragraph

    spent = [0.0]

    def timed(fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            spent[0] += time.perf_counter() - t0
            return out

        return wrapper

    rows = []
    for model in args.models:
        cfg = config(manifest, tmp / f"sk-{model}", model, [
            "data.streams={paragraphs: 1.0}", "loss.paragraph_weight=0.1", "loss.rectify_beta=0.3",
            f"train.batch_size={max(1, args.batch // 8)}", "data.clips_per_video=8", f"train.device={args.device}"])
        batches = real_batches(cfg)
        originals = (paragraph.sinkhorn, contrastive.sinkhorn if hasattr(contrastive, "sinkhorn") else None)
        paragraph.sinkhorn = timed(originals[0])
        if originals[1] is not None:
            contrastive.sinkhorn = timed(originals[1])
        try:
            framework_loop(cfg, batches, 2)  # warm-up
            spent[0] = 0.0
            steps = framework_loop(config(manifest, tmp / f"sk2-{model}", model, [
                "data.streams={paragraphs: 1.0}", "loss.paragraph_weight=0.1", "loss.rectify_beta=0.3",
                f"train.batch_size={max(1, args.batch // 8)}", "data.clips_per_video=8", f"train.device={args.device}"]),
                batches, args.steps)
        finally:
            paragraph.sinkhorn = originals[0]
            if originals[1] is not None:
                contrastive.sinkhorn = originals[1]
        row = {"model": model, "videos_x_clips": f"{max(1, args.batch // 8)}x8", "step_ms": round(1000 * statistics.mean(steps), 1),
               "sinkhorn_ms_per_step": round(1000 * spent[0] / len(steps), 2),
               "sinkhorn_share": round(spent[0] / sum(steps), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["overhead", "throughput", "sinkhorn"], action="append")
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=16, help="clips per step (all processes together)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--quick", action="store_true", help="tiny model, few steps: checks the plumbing")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    args.models = args.models or (["tiny"] if args.quick else ["tiny", "small"])
    args.steps = args.steps or (4 if args.quick else 20)
    if args.quick:
        args.repeats = 1
    sections = args.only or ["overhead", "throughput", "sinkhorn"]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = corpus(tmp / "corpus", 8)
        for name in sections:
            results[name] = {"overhead": bench_overhead, "throughput": bench_throughput,
                             "sinkhorn": bench_sinkhorn}[name](args, manifest, tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

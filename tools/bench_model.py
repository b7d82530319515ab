"""Benchmark a training step (forward + backward) of the dual encoder: samples/s and peak memory.

Runs each (model size, variant) in a fresh subprocess, so one run's memory never counts against the
next, and prints one markdown table; speed ratios compare each variant with the baseline of the same
size from the same run (the machine is shared and noisy). FLOPs come from `estimate_flops`; with
`--peak-tflops` the table also gives MFU.

Sizes: `tiny` (tiny ViT + tiny BERT) and `vit-b16` (ViT-B/16 at 224 px + pretrained MiniLM), 8 frames,
32 text tokens. Variants: `baseline`, `drop-random` / `drop-attention` (half the patch tokens dropped),
`checkpointing` (activation recomputation in both towers), `caption` (with the caption head).
Peak memory: what torch's allocator holds at the worst moment of a step (parameters, gradients,
activations): on CPU from the profiler's memory timeline of one extra step, on CUDA `max_memory_allocated`.

    python tools/bench_model.py                       # CPU, all variants
    python tools/bench_model.py --quick               # 1 timed step, fewer variants
    python tools/bench_model.py --device cuda --peak-tflops 989 --precision bf16
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_common import cpu_name

VARIANTS = {
    "baseline": {},
    "drop-random": {"frame_token_drop": 0.5, "token_drop_mode": "random"},
    "drop-attention": {"frame_token_drop": 0.5, "token_drop_mode": "attention"},
    "checkpointing": {"grad_checkpointing": True},
    "caption": {"caption_head": True},
}
SIZES = {
    "tiny": {"video_encoder": "tiny", "text_encoder": "tiny"},
    "vit-b16": {"video_encoder": "vit-b16", "text_encoder": "minilm"},
}
DEFAULT_BATCH = {"cpu": {"tiny": 8, "vit-b16": 2}, "cuda": {"tiny": 64, "vit-b16": 32}}
TEXT_LEN = 32


def cpu_peak_bytes(step) -> int:
    """Peak bytes held by torch's CPU allocator during one `step()`, from the profiler's memory timeline.

    Unlike the process's RSS, this ignores what the C allocator keeps cached and what other libraries hold,
    so it compares variants like `torch.cuda.max_memory_allocated` does on a GPU.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "memory.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)  # per timestamp: bytes in each category (parameters, gradients, ...)
    return max(sum(categories) for categories in sizes)


def run_job(job: dict) -> dict:
    """One size + variant: build, warm up, time `steps` training steps. Runs in its own process."""
    import torch

    from videolang.config import LossConfig, ModelConfig
    from videolang.losses import build_loss
    from videolang.models import build_model, estimate_flops

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = torch.device(job["device"])
    cfg = ModelConfig(**SIZES[job["size"]], **VARIANTS[job["variant"]])
    model = build_model(cfg).to(device).train()
    batch, frames = job["batch"], job["frames"]
    size = model.video_encoder.config.image_size
    clips = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, device=device)
    ids = torch.randint(1000, 2000, (batch, TEXT_LEN), device=device)
    mask = torch.ones_like(ids)
    caption = ids if cfg.caption_head else None
    # The training objective itself: symmetric InfoNCE, plus the caption LM loss with the caption head.
    loss_fn = build_loss(LossConfig(caption_weight=1.0 if cfg.caption_head else 0.0)).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job["precision"] == "bf16")

    def step() -> None:
        with autocast:
            out = model(clips, ids, mask, caption_ids=caption)
            loss = loss_fn(**out)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(job["warmup"]):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(job["steps"]):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else cpu_peak_bytes(step)
    seconds = statistics.median(times)
    return {
        **job,
        "samples_per_s": batch / seconds,
        "step_s": seconds,
        "peak_mb": peak / 2**20,
        "flops_per_sample": estimate_flops(model, frames, TEXT_LEN),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="default: per size and device")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=None, help="run every job this many times, keep the fastest")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100 bf16 dense: 989)")
    parser.add_argument("--quick", action="store_true", help="1 timed step; baseline and drop-attention only")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run_job(json.loads(args.job))))
        return

    variants = args.variants or (["baseline", "drop-attention"] if args.quick else list(VARIANTS))
    steps = args.steps or (1 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    best: dict[tuple[str, str], dict] = {}
    # Rounds go over every job in turn, so a burst of load elsewhere cannot hit one variant only.
    for _, size, variant in itertools.product(range(rounds), args.sizes, variants):
        job = dict(
            size=size,
            variant=variant,
            frames=args.frames,
            batch=args.batch_size or DEFAULT_BATCH[args.device][size],
            steps=steps,
            warmup=args.warmup,
            device=args.device,
            precision=args.precision,
            threads=args.threads,
        )
        done = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            print(f"{size}/{variant} failed: {tail[0]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{size}/{variant}: {result['samples_per_s']:.2f} samples/s", file=sys.stderr)
        key = (size, variant)
        if key not in best or result["samples_per_s"] > best[key]["samples_per_s"]:
            best[key] = result
    rows = [best[(size, variant)] for size in args.sizes for variant in variants if (size, variant) in best]

    import torch

    device = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    threads = args.threads or torch.get_num_threads()
    print(
        f"\nforward+backward, {args.frames} frames, {TEXT_LEN} text tokens, {args.precision}, {device}, "
        f"torch {torch.__version__}, {threads} threads, median of {steps} steps, best of {rounds} rounds\n"
    )
    head = "| size | variant | params (M) | batch | samples/s | vs baseline | peak alloc (MB) | GFLOP/sample | TFLOP/s |"
    if args.peak_tflops:
        head += " MFU |"
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    base = {r["size"]: r["samples_per_s"] for r in rows if r["variant"] == "baseline"}
    for r in rows:
        achieved = r["samples_per_s"] * r["flops_per_sample"] / 1e12
        ratio = f"{r['samples_per_s'] / base[r['size']]:.2f}x" if r["size"] in base else "-"
        line = (
            f"| {r['size']} | {r['variant']} | {r['params_m']:.2f} | {r['batch']} | {r['samples_per_s']:.3g} | {ratio} "
            f"| {r['peak_mb']:.0f} | {r['flops_per_sample'] / 1e9:.3g} | {achieved:.3g} |"
        )
        if args.peak_tflops:
            line += f" {100 * achieved / args.peak_tflops:.1f}% |"
        print(line)


if __name__ == "__main__":
    main()

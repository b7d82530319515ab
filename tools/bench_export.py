"""Benchmark the exported video-encoder graphs against eager PyTorch, in one run.

For each encoder size and batch size, times `VideoEncoder.encode` (eager), the TorchScript file and the
ONNX file under onnxruntime (CPU provider) on the same uint8 clips, interleaved round by round so machine
noise hits every runner alike, and reports best-of-N milliseconds per clip plus ratios to eager. Also
reports how long `export_video_encoder` took per format. Encoders are randomly initialised: only
speed is measured here (the export itself checks outputs against PyTorch).

    python tools/bench_export.py            # tiny and small encoders, batch 1 and 8, 8 frames
    python tools/bench_export.py --quick    # tiny encoder only, fewer repeats
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import onnxruntime
import torch
from transformers import CLIPVisionConfig

from videolang.export import export_video_encoder
from videolang.models import VideoEncoder, VideoEncoderConfig

SIZES = {
    # The test preset: 32 px frames, 2 ViT layers of width 64.
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 image_size=32, patch_size=8),
    # A small ViT on 112 px frames (49 patches), about 1/10 of ViT-B/16's cost per frame.
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                  image_size=112, patch_size=16),
}


def build(size: str) -> VideoEncoder:
    torch.manual_seed(0)
    vision = CLIPVisionConfig(**SIZES[size]).to_dict()
    return VideoEncoder(VideoEncoderConfig(vision=vision, embed_dim=256)).eval()


def runners(encoder: VideoEncoder, folder: Path, threads: int) -> dict[str, Callable[[torch.Tensor], object]]:
    """Eager, TorchScript and ONNX Runtime runners; `folder` holds one export per format in subfolders."""
    scripted = torch.jit.load(str(folder / "torchscript" / "video_encoder.torchscript.pt"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    onnx_file = str(folder / "onnx" / "video_encoder.onnx")
    session = onnxruntime.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
    return {
        "eager": encoder.encode,
        "torchscript": scripted,
        "onnxruntime": lambda x: session.run(None, {"frames": x.numpy()}),
    }


@torch.no_grad()
def time_interleaved(
    fns: dict[str, Callable[[torch.Tensor], object]], x: torch.Tensor, repeats: int
) -> dict[str, float]:
    """Best-of-`repeats` seconds per runner, running the runners in turn each round (after one warm-up)."""
    best = {name: float("inf") for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            elapsed = time.perf_counter() - start
            if round_:
                best[name] = min(best[name], elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder only, fewer repeats")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default: 8)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per setting (default: 10)")
    # One thread by default: on a shared 2-core machine, two intra-op threads make eager PyTorch 10x slower
    # whenever another process runs (its many small ops each wait on a thread barrier).
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, torch and onnxruntime (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = ["tiny"] if args.quick else list(SIZES)
    repeats = 3 if args.quick else args.repeats
    batches = [int(b) for b in args.batches.split(",")]

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, "
          f"{args.frames} frames per clip, best of {repeats}\n")
    print("| encoder | batch | eager ms/clip | TorchScript ms/clip | ONNX Runtime ms/clip | TS / eager "
          "| ORT / eager |")
    print("|---|---|---|---|---|---|---|")
    export_rows = []
    for size in sizes:
        encoder = build(size)
        with tempfile.TemporaryDirectory() as tmp:
            seconds = {}
            for fmt in ("safetensors", "torchscript", "onnx"):
                start = time.perf_counter()
                export_video_encoder(encoder, Path(tmp) / fmt, [fmt], num_frames=args.frames)
                seconds[fmt] = time.perf_counter() - start
            export_rows.append((size, seconds))
            fns = runners(encoder, Path(tmp), args.threads)
            image = encoder.config.image_size
            for batch in batches:
                gen = torch.Generator().manual_seed(batch)
                x = torch.randint(0, 256, (batch, args.frames, image, image, 3), dtype=torch.uint8, generator=gen)
                best = time_interleaved(fns, x, repeats)
                ms = {name: 1000 * t / batch for name, t in best.items()}
                print(f"| {size} | {batch} | {ms['eager']:.2f} | {ms['torchscript']:.2f} | {ms['onnxruntime']:.2f} "
                      f"| {ms['torchscript'] / ms['eager']:.2f} | {ms['onnxruntime'] / ms['eager']:.2f} |")
    print("\n| encoder | export safetensors s | export + check TorchScript s | export + check ONNX s |")
    print("|---|---|---|---|")
    for size, seconds in export_rows:
        print(f"| {size} | {seconds['safetensors']:.2f} | {seconds['torchscript']:.2f} | {seconds['onnx']:.2f} |")


if __name__ == "__main__":
    main()

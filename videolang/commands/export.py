"""`videolang export`: write a model's video encoder as a safetensors folder (+ TorchScript / ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolang.commands import command_parser

def add_parser(sub) -> None:
    p = command_parser(
        sub,
        "export",
        "export the video encoder of a model folder (safetensors, TorchScript, ONNX)",
        "videolang export runs/demo/model --out exports/video --format safetensors,torchscript,onnx --num-frames 8",
        description=(
            "Write the video encoder only: DIR/config.json + DIR/model.safetensors (preprocessing included;\n"
            "load with videolang.models.VideoEncoder.from_pretrained(DIR)), and optionally\n"
            "DIR/video_encoder.torchscript.pt and DIR/video_encoder.onnx. The graphs take uint8 RGB frames\n"
            "[B, T, S, S, 3] (S = the encoder's image size, T = --num-frames, B dynamic) and return\n"
            "L2-normalised embeddings [B, D]; DIR/export.json records the shapes and each graph's largest\n"
            "difference from PyTorch. MODEL_DIR is a saved VideoTextModel folder or an exported encoder folder."
        ),
    )
    p.add_argument("model", metavar="MODEL_DIR", help="saved VideoTextModel folder or exported video encoder folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--format", default="safetensors", metavar="LIST",
        help="comma-separated, from safetensors,torchscript,onnx; the safetensors folder is always written "
        "(default: safetensors)",
    )
    p.add_argument(
        "--num-frames", type=int, default=8, metavar="T", help="frames per clip the graphs take (default: 8)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from videolang.export import export_video_encoder, load_video_encoder, parse_formats

    formats = parse_formats(args.format)
    encoder = load_video_encoder(args.model)
    written = export_video_encoder(
        encoder, args.out, formats, num_frames=args.num_frames, source=str(Path(args.model).resolve())
    )
    out = Path(args.out).resolve()
    print(f"video encoder: {out / written['config'].name} + {written['safetensors'].name}")
    for name in ("torchscript", "onnx"):
        if name in written:
            print(f"{name}: {out / written[name].name}")
    print(f"export info: {out / written['info'].name}")
    return 0

"""Export a video encoder for inference outside training: a safetensors folder, TorchScript, ONNX.

The folder (`config.json` + `model.safetensors`) is the canonical export: `VideoEncoder.from_pretrained`
rebuilds the encoder exactly, preprocessing parameters included. TorchScript and ONNX files are graphs
of `VideoEncoder.encode` for serving stacks without videolang: they take uint8 RGB frames already
resized to the encoder's square input, `[B, T, S, S, 3]` with T fixed at export and B dynamic, and
return L2-normalised embeddings `[B, D]`. `export.json` records those shapes, and how far each graph's
outputs were from PyTorch's when it was written (an export that disagrees by more than 1e-4 fails).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from videolang.errors import VideolangError
from videolang.models.serialization import CONFIG_NAME, WEIGHTS_NAME, read_config
from videolang.models.video_encoder import VIDEO_ENCODER_FORMAT, VideoEncoder
from videolang.models.video_text import VIDEO_TEXT_FORMAT, VideoTextModel
from videolang.utils.io import atomic_write_json

EXPORT_FORMATS = ("safetensors", "torchscript", "onnx")
EXPORT_INFO_NAME = "export.json"
EXPORT_INFO_FORMAT = "videolang.export/1"
TORCHSCRIPT_NAME = "video_encoder.torchscript.pt"
ONNX_NAME = "video_encoder.onnx"
ONNX_DATA_NAME = ONNX_NAME + ".data"
INPUT_NAME = "frames"
OUTPUT_NAME = "video_embedding"  # "embedding" collides with a node name inside the exported ONNX graph
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)
# Protobuf caps one ONNX file at 2 GB; larger encoders keep their weights in `video_encoder.onnx.data`.
ONNX_INLINE_LIMIT = 1 << 30

Runner = Callable[[Tensor], Tensor]  # uint8 [B, T, S, S, 3] -> [B, D], both on the CPU


class ExportError(VideolangError):
    """A model folder cannot be exported, or an exported graph disagrees with PyTorch."""


def parse_formats(text: str) -> tuple[str, ...]:
    """'torchscript,onnx' -> the formats to write, in `EXPORT_FORMATS` order, safetensors always included."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in EXPORT_FORMATS:
            raise ExportError(f"--format: unknown format {name!r} (choose from {', '.join(EXPORT_FORMATS)})")
    return tuple(name for name in EXPORT_FORMATS if name in names or name == "safetensors")


def load_video_encoder(path: str | Path) -> VideoEncoder:
    """The video encoder (eval mode, CPU) of a saved `VideoTextModel` folder, an exported encoder folder,
    a training run folder (its final model) or a checkpoint folder (its model)."""
    from videolang.train.layout import resolve_model_folder

    path = resolve_model_folder(path)
    if not path.is_dir():
        raise ExportError(f"{path}: model folder not found")
    if not (path / CONFIG_NAME).is_file():
        raise ExportError(
            f"{path}: neither a model folder, a training run nor a complete checkpoint (no {CONFIG_NAME})"
        )
    found = read_config(path).get("format")
    if found == VIDEO_TEXT_FORMAT:
        return VideoTextModel.from_pretrained(path).video_encoder
    if found == VIDEO_ENCODER_FORMAT:
        return VideoEncoder.from_pretrained(path)
    raise ExportError(
        f"{path / CONFIG_NAME}: format {found!r} is neither {VIDEO_TEXT_FORMAT} nor {VIDEO_ENCODER_FORMAT}"
    )


class _EncodeGraph(nn.Module):
    """`VideoEncoder.encode` as a module's `forward`, the form tracers and exporters take."""

    def __init__(self, encoder: VideoEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: Tensor) -> Tensor:
        return self.encoder.encode(frames)


def export_video_encoder(
    encoder: VideoEncoder,
    out_dir: str | Path,
    formats: Sequence[str] = ("safetensors",),
    num_frames: int = 8,
    source: str | None = None,
) -> dict[str, Path]:
    """Write `encoder` (switched to eval mode) into `out_dir`; returns the written files by name.

    The safetensors folder is always written. Graph files of formats not asked for this time are
    removed, so the folder never holds a graph of an older encoder.
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ExportError(f"format: unknown export format {unknown[0]!r} (choose from {', '.join(EXPORT_FORMATS)})")
    if not 1 <= num_frames <= encoder.config.max_frames:
        raise ExportError(
            f"num_frames: must be in [1, {encoder.config.max_frames}] (the encoder's max_frames), got {num_frames}"
        )
    out_dir = Path(out_dir)
    _check_target(out_dir)
    encoder.eval()
    # Remove every graph and export.json of an earlier export first: if this export fails half-way the
    # folder holds this encoder's weights alone, never next to another encoder's graphs.
    for file in (TORCHSCRIPT_NAME, ONNX_NAME, ONNX_DATA_NAME, EXPORT_INFO_NAME):
        (out_dir / file).unlink(missing_ok=True)
    written = {"config": out_dir / CONFIG_NAME, "safetensors": encoder.save_pretrained(out_dir) / WEIGHTS_NAME}
    graphs, errors = _write_graphs(encoder, out_dir, formats, num_frames)
    written.update(graphs)
    info = _export_info(encoder, num_frames, source, {name: path.name for name, path in written.items()}, errors)
    atomic_write_json(out_dir / EXPORT_INFO_NAME, info)
    written["info"] = out_dir / EXPORT_INFO_NAME
    return written


def _write_graphs(
    encoder: VideoEncoder, out_dir: Path, formats: Sequence[str], num_frames: int
) -> tuple[dict[str, Path], dict[str, float]]:
    """Trace/export the requested graphs in a scratch folder, check them, then move them into `out_dir`.

    Returns the graph files and each one's largest difference from PyTorch; a graph that fails its
    check never reaches `out_dir`.
    """
    graphs: dict[str, Path] = {}
    errors: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        staged: dict[str, list[Path]] = {}
        example = _random_frames(2, num_frames, encoder.config.image_size, seed=0)
        try:
            if "torchscript" in formats:
                staged["torchscript"] = [_trace(encoder, example, Path(tmp) / TORCHSCRIPT_NAME)]
                errors["torchscript"] = _max_error(_torchscript_runner(staged["torchscript"][0]), encoder, num_frames)
            if "onnx" in formats:
                staged["onnx"] = _to_onnx(encoder, example, Path(tmp) / ONNX_NAME)
                errors["onnx"] = _max_error(_onnx_runner(staged["onnx"][0]), encoder, num_frames)
        except ExportError:
            raise
        except Exception as e:  # exporter internals: report one line, not a deep traceback
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{out_dir}: graph export failed ({type(e).__name__}: {first})") from e
        for name, files in staged.items():
            for file in files:
                os.replace(file, out_dir / file.name)
            graphs[name] = out_dir / files[0].name
    return graphs, errors


def _export_info(
    encoder: VideoEncoder, num_frames: int, source: str | None, files: dict[str, str], errors: dict[str, float]
) -> dict[str, Any]:
    """`export.json`: what the graphs take and return, where the encoder came from, how exact they are."""
    size, dim = encoder.config.image_size, encoder.config.embed_dim
    return {
        "format": EXPORT_INFO_FORMAT,
        "source": source,
        "torch": torch.__version__,
        "num_frames": num_frames,
        "image_size": size,
        "embed_dim": dim,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": ["batch", num_frames, size, size, 3],
            "layout": "RGB; resize the shortest side to image_size and centre-crop before feeding the graphs",
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", dim], "l2_normalised": True},
        "files": files,
        "max_abs_error_vs_pytorch": errors,
    }


def _check_target(out_dir: Path) -> None:
    """Never overwrite a folder holding something other than a video encoder (e.g. the source model)."""
    if (out_dir / CONFIG_NAME).is_file():
        found = read_config(out_dir).get("format")
        if found != VIDEO_ENCODER_FORMAT:
            raise ExportError(f"{out_dir}: holds a {found or 'non-videolang'} model; refusing to overwrite it")


def _random_frames(batch: int, num_frames: int, size: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, num_frames, size, size, 3), dtype=torch.uint8, generator=gen)


@torch.no_grad()
def _max_error(run: Runner, encoder: VideoEncoder, num_frames: int) -> float:
    """Largest |graph - PyTorch| over random clips at several batch sizes; fails above `TOLERANCE`."""
    device = next(encoder.parameters()).device
    worst = 0.0
    for batch in CHECK_BATCHES:
        frames = _random_frames(batch, num_frames, encoder.config.image_size, seed=batch)
        expected = encoder.encode(frames.to(device)).float().cpu()
        got = run(frames)
        if got.shape != expected.shape:
            raise ExportError(
                f"exported graph: output shape {list(got.shape)} at batch {batch}, expected {list(expected.shape)}"
            )
        worst = max(worst, (got - expected).abs().max().item())
    if worst > TOLERANCE:
        raise ExportError(f"exported graph: outputs differ from PyTorch by {worst:.2e} (> {TOLERANCE:g})")
    return worst


# ----------------------------------------------------------------------------------------------
# TorchScript


@torch.no_grad()
def _trace(encoder: VideoEncoder, example: Tensor, path: Path) -> Path:
    device = next(encoder.parameters()).device
    with warnings.catch_warnings():
        # Shape checks in preprocessing become constants: fine, the input shape is fixed but for B.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The built-in trace check flags nn.MultiheadAttention's shape arithmetic as a constant that
        # changes between runs (a false alarm); `_max_error` checks the outputs at several batch sizes.
        traced = torch.jit.trace(_EncodeGraph(encoder).eval(), (example.to(device),), check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def _torchscript_runner(path: Path) -> Runner:
    module = torch.jit.load(str(path), map_location="cpu")
    return lambda frames: module(frames).float()


# ----------------------------------------------------------------------------------------------
# ONNX


def _import_onnx_stack() -> None:
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise ExportError(f"format onnx: needs the '{name}' package (pip install 'videolang[export]')") from None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notes about optional torchvision ops and its internal deprecation warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


@torch.no_grad()
def _to_onnx(encoder: VideoEncoder, example: Tensor, path: Path) -> list[Path]:
    """Export with torch's default exporter (torch.export-based, `dynamo=True`), which handles this
    model in torch 2.13; the legacy TorchScript-based exporter is deprecated and not needed."""
    _import_onnx_stack()
    device = next(encoder.parameters()).device
    weight_bytes = sum(p.numel() * p.element_size() for p in encoder.parameters())
    with _quiet_exporter():
        torch.onnx.export(
            _EncodeGraph(encoder).eval(),
            (example.to(device),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"frames": {0: torch.export.Dim("batch")}},
            external_data=weight_bytes > ONNX_INLINE_LIMIT,
            verbose=False,
        )
    data = path.with_name(ONNX_DATA_NAME)
    return [path, data] if data.is_file() else [path]


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda frames: torch.from_numpy(session.run(None, {INPUT_NAME: frames.numpy()})[0]).float()

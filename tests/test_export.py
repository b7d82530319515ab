"""`videolang export`: the safetensors folder reproduces the source model in a fresh process; TorchScript
and ONNX graphs match PyTorch at several batch sizes; bad input fails with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from videolang.cli import main
from videolang.export import ExportError, export_video_encoder, load_video_encoder, parse_formats
from videolang.models import VideoEncoder, VideoTextModel

NUM_FRAMES = 4
SIZE = 32  # the tiny preset's image size


def clips(batch: int, seed: int, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, num_frames, SIZE, SIZE, 3), dtype=torch.uint8, generator=gen)


@pytest.fixture(scope="module")
def source(model_dir) -> VideoTextModel:
    return VideoTextModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "video"
    code = main(["export", str(model_dir), "--out", str(out), "--format", "safetensors,torchscript,onnx",
                 "--num-frames", str(NUM_FRAMES)])
    assert code == 0
    return out


def reference(source: VideoTextModel, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return source.encode_video(frames)


def test_folder_holds_the_video_encoder_only(exported, source):
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == "videolang.video_encoder/1"
    pre = config["preprocess"]
    assert pre["image_size"] == SIZE
    assert pre["image_mean"] == list(source.video_encoder.config.image_mean)
    assert pre["image_std"] == list(source.video_encoder.config.image_std)
    with safe_open(str(exported / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert names == set(source.video_encoder.state_dict())


def test_safetensors_round_trip_in_a_fresh_process(exported, source, tmp_path):
    frames = clips(3, seed=11)
    save_file({"frames": frames}, tmp_path / "in.safetensors")
    script = textwrap.dedent(
        f"""
        import torch
        from safetensors.torch import load_file, save_file
        from videolang.models import VideoEncoder
        torch.set_num_threads(1)
        encoder = VideoEncoder.from_pretrained({str(exported)!r})
        frames = load_file({str(tmp_path / "in.safetensors")!r})["frames"]
        with torch.no_grad():
            save_file({{"out": encoder.encode(frames)}}, {str(tmp_path / "out.safetensors")!r})
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = load_file(tmp_path / "out.safetensors")["out"]
    expected = reference(source, frames)
    assert got.dtype == expected.dtype and got.device == expected.device
    assert torch.equal(got, expected)


@pytest.mark.parametrize("batch", [1, 3])
def test_torchscript_matches_pytorch(exported, source, batch):
    module = torch.jit.load(str(exported / "video_encoder.torchscript.pt"))
    frames = clips(batch, seed=20 + batch)
    with torch.no_grad():
        got = module(frames)
    assert got.shape == (batch, 16)
    torch.testing.assert_close(got, reference(source, frames), atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch_with_a_dynamic_batch(exported, source, batch):
    session = onnxruntime.InferenceSession(str(exported / "video_encoder.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(uint8)" and not isinstance(inp.shape[0], int)
    assert inp.shape[1:] == [NUM_FRAMES, SIZE, SIZE, 3]
    frames = clips(batch, seed=30 + batch)
    (got,) = session.run([out.name], {inp.name: frames.numpy()})
    assert got.shape == (batch, 16)
    np.testing.assert_allclose(got, reference(source, frames).numpy(), atol=1e-4, rtol=0)


def test_export_json_records_the_graph_contract(exported):
    info = json.loads((exported / "export.json").read_text())
    assert info["num_frames"] == NUM_FRAMES and info["image_size"] == SIZE and info["embed_dim"] == 16
    assert info["input"]["shape"] == ["batch", NUM_FRAMES, SIZE, SIZE, 3]
    assert set(info["files"]) == {"config", "safetensors", "torchscript", "onnx"}
    for name in info["files"].values():
        assert (exported / name).is_file()
    assert set(info["max_abs_error_vs_pytorch"]) == {"torchscript", "onnx"}


def test_reexport_from_an_exported_folder_drops_stale_graphs(exported, source, tmp_path, capsys):
    folder = tmp_path / "video"
    shutil.copytree(exported, folder)
    assert main(["export", str(folder), "--out", str(folder)]) == 0
    assert str(folder / "config.json") in capsys.readouterr().out
    assert not (folder / "video_encoder.onnx").exists() and not (folder / "video_encoder.torchscript.pt").exists()
    assert set(json.loads((folder / "export.json").read_text())["files"]) == {"config", "safetensors"}
    frames = clips(2, seed=40)
    with torch.no_grad():
        assert torch.equal(VideoEncoder.from_pretrained(folder).encode(frames), reference(source, frames))


def test_a_bad_graph_is_caught_before_it_is_written(source, tmp_path, monkeypatch):
    """The check after tracing compares against the live encoder, so a graph that drifts fails the export."""
    import videolang.export as export

    monkeypatch.setattr(export, "_torchscript_runner", lambda path: lambda frames: torch.zeros(frames.shape[0], 16))
    with pytest.raises(ExportError, match="differ from PyTorch"):
        export_video_encoder(source.video_encoder, tmp_path / "out", ["torchscript"], num_frames=2)
    assert not (tmp_path / "out" / "video_encoder.torchscript.pt").exists()


def test_a_failed_reexport_leaves_no_graph_of_the_old_encoder(exported, source, tmp_path, monkeypatch):
    import videolang.export as export

    folder = tmp_path / "video"
    shutil.copytree(exported, folder)
    assert (folder / "video_encoder.torchscript.pt").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("tracer exploded\nwith a long internal message")

    monkeypatch.setattr(export, "_trace", broken)
    other = VideoEncoder.tiny(embed_dim=16)
    with pytest.raises(ExportError, match="graph export failed \\(RuntimeError: tracer exploded\\)"):
        export_video_encoder(other, folder, ["torchscript"], num_frames=2)
    left = {p.name for p in folder.iterdir()}
    assert "video_encoder.torchscript.pt" not in left and "video_encoder.onnx" not in left and "export.json" not in left


def test_formats_parse_in_a_fixed_order_with_safetensors_always():
    assert parse_formats("onnx, TorchScript") == ("safetensors", "torchscript", "onnx")
    assert parse_formats("safetensors") == ("safetensors",)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("videolang export: error: ")
    return err[0]


def test_cli_errors_are_one_line(model_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "model folder not found" in one_line_error(capsys, ["export", str(tmp_path / "nope"), "--out", out])
    line = one_line_error(capsys, ["export", str(model_dir), "--out", out, "--format", "safetensors,tflite"])
    assert "unknown format 'tflite'" in line
    checkpoint = tmp_path / "checkpoint"
    (checkpoint / "global_step10").mkdir(parents=True)
    (checkpoint / "latest").write_text("global_step10")
    line = one_line_error(capsys, ["export", str(checkpoint), "--out", out])
    assert "neither a model folder, a training run nor a complete checkpoint" in line
    line = one_line_error(capsys, ["export", str(model_dir), "--out", out, "--num-frames", "9"])
    assert "num_frames" in line and "max_frames" in line
    line = one_line_error(capsys, ["export", str(model_dir), "--out", str(model_dir)])
    assert "refusing to overwrite" in line
    assert VideoTextModel.from_pretrained(model_dir) is not None  # the source folder is untouched


def test_other_model_formats_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ExportError, match="format None is neither"):
        load_video_encoder(tmp_path)

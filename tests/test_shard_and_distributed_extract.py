"""Beyond one machine: `manifest shard` balances total duration; `extract` under a 2-process torchrun
writes the same features and index as one process, and resumes."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videolang.cli import main
from videolang.data.manifest import load_manifest
from videolang.data.shard import balance
from videolang.data.synth import synthesize_corpus
from videolang.eval.extract import read_features
from videolang.models import VideoEncoder, VideoEncoderConfig


def test_balance_is_near_optimal_against_brute_force():
    rng = torch.Generator().manual_seed(0)
    for trial in range(30):
        n, parts = 3 + trial % 6, 2 + trial % 3
        weights = (torch.rand(n, generator=rng) * 100).round().tolist()
        groups = balance(weights, parts)
        assert sorted(i for g in groups for i in g) == list(range(n))  # a partition
        assert all(g == sorted(g) for g in groups)  # input order kept
        best = min(max(sum(w for w, p in zip(weights, assign) if p == k) for k in range(parts))
                   for assign in itertools.product(range(parts), repeat=n))
        assert max(sum(weights[i] for i in g) for g in groups) <= 4 / 3 * best + 1e-9  # LPT's bound


def test_shard_command(tmp_path, capsys):
    manifest = synthesize_corpus(tmp_path / "data", 7, seed=4)
    out = tmp_path / "shards"
    assert main(["manifest", "shard", str(manifest), "--shards", "3", "--out-dir", str(out)]) == 0
    files = sorted(out.glob("*.jsonl"))
    assert [f.name for f in files] == [f"shard-{k:05d}-of-00003.jsonl" for k in range(3)]
    parts = [load_manifest(f) for f in files]
    originals = load_manifest(manifest)
    assert sorted(v.video_id for p in parts for v in p) == sorted(v.video_id for v in originals)
    assert all(v.resolved_path.is_file() for p in parts for v in p)  # paths re-based on the shard folder
    loads = [sum(v.duration for v in p) for p in parts]
    assert max(loads) - min(loads) <= max(v.duration for v in originals)
    # The shards are one corpus again through a glob.
    from videolang.data.manifest import load_manifests

    assert len(load_manifests([str(out / "*.jsonl")])) == len(originals)
    assert main(["manifest", "shard", str(manifest), "--shards", "3", "--out-dir", str(out)]) == 2
    assert "already holds shards" in capsys.readouterr().err
    # A video in two manifests is one error naming both places.
    from videolang.data.manifest import load_manifests
    from videolang.errors import ManifestError

    with pytest.raises(ManifestError) as e:
        load_manifests([manifest, str(out / "*.jsonl")])
    assert len(e.value.problems) == 7 and f"{manifest}:1" in " ".join(e.value.problems)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("mode", [["--level", "task"], ["--fps", "1"]])
def test_extract_under_torchrun_matches_one_process(tmp_path, mode):
    manifest = synthesize_corpus(tmp_path / "data", 5, seed=1, size=(48, 64), fps=4.0)
    torch.manual_seed(1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=48, patch_size=16)
    model = VideoEncoder(VideoEncoderConfig(vision=vision, embed_dim=8, temporal_layers=1, max_frames=8))
    model_dir = model.save_pretrained(tmp_path / "encoder")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    args = ["-m", "videolang", "extract", "--model", str(model_dir), "--manifest", str(manifest), *mode,
            "--device", "cpu"]

    def run(out: Path, procs: int, *extra: str) -> str:
        launch = [] if procs == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                                        "--master_port", str(_free_port())]
        proc = subprocess.run([sys.executable, *launch, *args, "--out", str(out), *extra], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    run(tmp_path / "one", 1)
    printed = run(tmp_path / "two", 2)
    assert "5 of 5 videos: 5 extracted, 0 resumed, 0 failed; 2 processes" in printed
    one = json.loads((tmp_path / "one" / "index.json").read_text())
    two = json.loads((tmp_path / "two" / "index.json").read_text())
    assert list(two["videos"]) == list(one["videos"])  # manifest order, one index
    assert two["videos"] == one["videos"] and two["settings"] == one["settings"]
    for entry in one["videos"].values():
        a, meta_a = read_features(tmp_path / "one" / entry["file"])
        b, meta_b = read_features(tmp_path / "two" / entry["file"])
        assert meta_a == meta_b and a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # Resume: remove two files, rerun with 2 processes; only those are extracted again.
    victims = list(two["videos"].values())[1:3]
    for entry in victims:
        (tmp_path / "two" / entry["file"]).unlink()
    assert "2 extracted, 3 resumed" in run(tmp_path / "two", 2)
    if mode[0] == "--level":  # more processes than videos: a rank with nothing to do must not stall the rest
        assert "1 of 1 videos: 1 extracted" in run(tmp_path / "val", 2, "--split", "val")

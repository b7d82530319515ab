"""`videolang demo` end to end on the smallest corpus it accepts: the README's main command must run."""

from __future__ import annotations

import json

import torch

from videolang.cli import main
from videolang.data.manifest import clip_pairs, load_manifest
from videolang.models import VideoEncoder


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--videos", "5", "--text-encoder", "tiny"]) == 0
    summary = json.loads((out / "run.json").read_text())
    videos = load_manifest(out / "data" / "manifest.jsonl")
    val_task_clips = clip_pairs([v for v in videos if v.split == "val"], "task")
    retrieval = summary["eval"]["retrieval"]
    assert retrieval["clips"] == len(val_task_clips) > 0
    assert 0 <= retrieval["t2v"]["R@1"] <= retrieval["t2v"]["R@5"] <= 100
    assert summary["corpus"]["videos"] == 5
    encoder = VideoEncoder.from_pretrained(summary["export"])
    clip = torch.randint(0, 256, (1, 4, 32, 32, 3), dtype=torch.uint8)
    assert encoder.encode(clip).shape[-1] == 64
    printed = capsys.readouterr().out
    assert f"over {len(val_task_clips)} clips" in printed
    assert "reloaded encoder reproduces embeddings: True" in printed

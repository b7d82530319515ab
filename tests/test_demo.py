"""`videolang demo` end to end at a reduced size: the README's main command renders, trains, evaluates,
exports and reports, and the trained model beats chance and its untrained self."""

from __future__ import annotations

import json

import pytest
import torch

from videolang.cli import main
from videolang.data.manifest import clip_pairs, load_manifest
from videolang.models import VideoEncoder

pytestmark = pytest.mark.slow


def test_demo_trains_and_beats_chance(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--videos", "20", "--steps", "100", "--set", "train.save_every=50",
            "--set", "data.num_workers=1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "run.json").read_text())

    # The run folder of the training stage, under the demo's folder.
    for name in ("metrics.jsonl", "config.yaml", "final/model.safetensors", "report.md",
                 "figures/loss_curves.png", "figures/retrieval_examples.png"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints" / "step-100" / "COMPLETE").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 100 and {"paragraph", "caption", "level/task"} <= {k for r in records for k in r}

    # Today's keys stay; every number has its untrained counterpart and chance level.
    videos = load_manifest(out / "data" / "manifest.jsonl")
    val_task_clips = clip_pairs([v for v in videos if v.split == "val"], "task")
    ev, before, chance = summary["eval"], summary["untrained"], summary["chance"]
    assert ev["retrieval"]["clips"] == len(val_task_clips) > 0
    assert f"over {len(val_task_clips)} clips" in printed
    assert ev["retrieval"]["t2v"]["R@1"] >= 2 * chance["t2v_R@1"]
    assert ev["recognition"]["accuracy"] >= 1.5 * chance["recognition_acc"]
    assert ev["segmentation_probe"]["acc"] > chance["segmentation_majority_acc"]
    assert ev["segmentation"]["acc"] > chance["segmentation_all_background_acc"]
    assert ev["captioning"]["CIDEr-D"] > before["captioning"]["CIDEr-D"]
    assert ev["retrieval"]["t2v"]["R@1"] > before["retrieval"]["t2v"]["R@1"]

    report = (out / "report.md").read_text()
    assert "| metric | untrained | trained | chance |" in report and "](figures/loss_curves.png)" in report
    for link in [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (out / link).is_file(), link

    encoder = VideoEncoder.from_pretrained(summary["export"])
    size = encoder.config.image_size
    assert encoder.encode(torch.randint(0, 256, (1, 4, size, size, 3), dtype=torch.uint8)).shape[-1] == 64
    assert "reloaded encoder reproduces embeddings: True" in printed


def test_demo_refuses_too_few_videos(capsys):
    assert main(["demo", "--videos", "3"]) == 2
    assert "--videos must be at least 5" in capsys.readouterr().err

"""The training stage's pieces, in one process: stream order, schedules, checkpoint bookkeeping, configs."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from videolang.config import load_config
from videolang.errors import ConfigError
from videolang.train import checkpoint as ckpt
from videolang.train.checks import check_train_config
from videolang.train.engine import deepspeed_config
from videolang.train.layout import resolve_model_folder
from videolang.train.logging import truncate_metrics
from videolang.train.optim import lr_factor, param_groups
from videolang.train.streams import Stream, StreamPosition, parents_in_batch, stream_schedule

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def smoke(*sets: str):
    return load_config(SMOKE, ["data.manifest=m.jsonl", *sets])


def test_stream_schedule_is_a_function_of_seed_and_step():
    pick = stream_schedule({"pairs": 3.0, "paragraphs": 1.0, "captions": 0.0}, seed=5)
    again = stream_schedule({"pairs": 3.0, "paragraphs": 1.0, "captions": 0.0}, seed=5)
    seq = [pick(i) for i in range(4000)]
    assert seq == [again(i) for i in range(4000)]  # another rank, or a resumed run, draws the same
    counts = Counter(seq)
    assert set(counts) == {"pairs", "paragraphs"}
    assert counts["pairs"] / len(seq) == pytest.approx(0.75, abs=0.03)
    assert [pick(i) for i in range(3000, 3010)] == seq[3000:3010]  # no hidden state: any step, any order
    assert stream_schedule({"pairs": 1.0}, 0)(123) == "pairs"
    with pytest.raises(ConfigError):
        stream_schedule({"pairs": 0.0}, 0)


class _Numbers(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _stream(rank=0, world=1, position=None, n=23, batch=3):
    return Stream("pairs", _Numbers(n), lambda items: list(items), batch_size=batch, seed=7, rank=rank,
                  world_size=world, num_workers=0, position=position)


def test_stream_resumes_at_its_position_across_epochs():
    full = _stream()
    seq = [full.next() for _ in range(20)]  # 7 batches per epoch: crosses two epoch boundaries
    per_epoch = 23 // 3
    assert full.batches_per_epoch == per_epoch
    for epoch in range(2):  # each epoch is a permutation without repeats, the partial batch dropped
        flat = [i for b in seq[epoch * per_epoch:(epoch + 1) * per_epoch] for i in b]
        assert len(set(flat)) == len(flat) == per_epoch * 3
    assert seq[:per_epoch] != seq[per_epoch:2 * per_epoch]  # reshuffled
    for k in (0, 5, 7, 13):
        s = _stream()
        for _ in range(k):
            s.next()
        resumed = _stream(position=StreamPosition(**s.position.to_dict()))
        assert [resumed.next() for _ in range(20 - k)] == seq[k:]


def test_stream_shards_are_disjoint_and_cover_the_batch():
    ranks = [_stream(rank=r, world=2, n=24, batch=3) for r in range(2)]
    for _ in range(4):
        a, b = (s.next() for s in ranks)
        assert not set(a) & set(b)
    with pytest.raises(Exception, match="cannot fill one batch"):
        _stream(n=5, batch=3, world=2)


def test_parents_found_within_the_batch():
    items = [
        {"video_id": "a", "segment_id": "0"},
        {"video_id": "a", "segment_id": "0.1"},
        {"video_id": "b", "segment_id": "0.1"},  # its parent b/0 is not in the batch
        {"video_id": "a", "segment_id": "0.1.2"},
        {"video_id": "a", "segment_id": "n3"},  # narration: no parent
    ]
    assert parents_in_batch(items).tolist() == [-1, 0, -1, 1, -1]


def test_lr_warmup_then_cosine():
    values = [lr_factor(s, warmup=4, total=20, min_ratio=0.1) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert values[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert values[20] == pytest.approx(0.1)
    assert lr_factor(0, 0, 10, 0.0) == pytest.approx(1.0)


def test_no_decay_for_biases_norms_scales_and_positions():
    from videolang.config import ModelConfig
    from videolang.models import build_model

    model = build_model(ModelConfig(video_encoder="tiny", text_encoder="tiny", embed_dim=16, max_frames=8))
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    names = {id(p): n for n, p in model.named_parameters()}
    keep = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    assert "logit_scale" in keep and "video_encoder.temporal_pos" in keep
    assert any("position_embedding" in n for n in keep) and any(n.endswith(".bias") for n in keep)
    assert any("layer_norm" in n or "LayerNorm" in n for n in keep)
    assert all(model.get_parameter(n).ndim >= 2 for n in decay) and "text_proj.weight" in decay
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.05
    assert len(keep) + len(decay) == sum(1 for _ in model.parameters())


def test_metrics_are_cut_back_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    assert truncate_metrics(path, 4) == 4
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_checkpoint_bookkeeping(tmp_path):
    for step, complete in ((2, True), (4, True), (6, True), (7, False), (3, False)):
        folder = ckpt.step_dir(tmp_path, step)
        folder.mkdir(parents=True)
        if complete:
            (folder / ckpt.MARKER).write_text("{}")
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 6]
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_dir(tmp_path, 6)  # step-7 is incomplete
    assert ckpt.resolve_resume("auto", tmp_path) == ckpt.step_dir(tmp_path, 6)
    assert ckpt.resolve_resume("never", tmp_path) is None
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.resolve_resume(str(ckpt.step_dir(tmp_path, 7)), tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "nope"), tmp_path)
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-4", "step-6", "step-7"]  # an incomplete save newer than the newest complete stays


def test_shape_change_is_refused_with_the_field():
    state = ckpt.TrainState(shape={"world_size": 2, "micro_batch": 4, "grad_accum": 1, "zero_stage": 2})
    ckpt.check_shape(state, dict(state.shape), Path("c"))
    with pytest.raises(ckpt.CheckpointError, match="world_size was 2, now 4"):
        ckpt.check_shape(state, {**state.shape, "world_size": 4}, Path("c"))


def test_rng_state_round_trips_through_json():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = json.loads(json.dumps(ckpt.rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_deepspeed_config_from_ours_and_a_user_file(tmp_path):
    cfg = smoke("train.zero_stage=2", "train.grad_accum=3", "train.precision=bf16")
    ds = deepspeed_config(cfg.train, torch.device("cpu"))
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_accumulation_steps"] == 3
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"] and ds["train_micro_batch_size_per_gpu"] == 4
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 3, "overlap_comm": True}, "gradient_clipping": 0.5}))
    cfg.train.deepspeed_config = str(user)
    ds = deepspeed_config(cfg.train, torch.device("cpu"))
    assert ds["zero_optimization"] == {"stage": 3, "overlap_comm": True} and ds["gradient_clipping"] == 0.5
    user.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    with pytest.raises(ConfigError, match="'optimizer' is set by videolang"):
        deepspeed_config(cfg.train, torch.device("cpu"))
    user.write_text("{bad")
    with pytest.raises(ConfigError, match=r"ds.json:1: invalid JSON"):
        deepspeed_config(cfg.train, torch.device("cpu"))
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        deepspeed_config(smoke("train.precision=fp16").train, torch.device("cpu"))


@pytest.mark.parametrize("sets, message", [
    (["loss.caption_weight=1.0"], "loss.caption_weight > 0 needs model.caption_head"),
    (["loss.caption_weight=1.0", "model.caption_head=true"], "needs the captions stream"),
    (["loss.paragraph_weight=0.1"], "needs the paragraphs stream"),
    (["loss.level_weights={phase: 1.0}"], "loss.level_weights.phase: level is not in data.levels"),
    (["loss.cross_level_weight=0.5"], "at least two levels"),
    (["data.streams={pairs: 1, videos: 1}"], "data.streams.videos: unknown stream"),
    (["train.keep_last=1"], "train.keep_last: must be >= 2"),
    (["data.num_frames=9"], "exceeds model.max_frames=8"),
    (["data.manifest=null"], "data.manifest: no training manifest"),
])
def test_cross_section_checks(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_train_config(smoke(*sets))


def test_enumerations_are_checked_on_load():
    with pytest.raises(ConfigError, match=r"train.precision: expected one of \['fp32', 'bf16', 'fp16'\]"):
        smoke("train.precision=fp8")
    with pytest.raises(ConfigError, match="data.levels"):
        smoke("data.levels=[scene]")


def test_model_folder_resolution(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert resolve_model_folder(model) == model
    run = tmp_path / "run"
    for step in (2, 4):
        (run / "checkpoints" / f"step-{step}" / "model").mkdir(parents=True)
        (run / "checkpoints" / f"step-{step}" / "model" / "config.json").write_text("{}")
    (run / "checkpoints" / "step-2" / "COMPLETE").write_text("{}")
    assert resolve_model_folder(run) == run / "checkpoints" / "step-2" / "model"  # step-4 is incomplete
    assert resolve_model_folder(run / "checkpoints" / "step-2") == run / "checkpoints" / "step-2" / "model"
    (run / "final").mkdir()
    (run / "final" / "config.json").write_text("{}")
    assert resolve_model_folder(run) == run / "final"


def test_text_length_has_one_owner(tmp_path):
    from videolang.data.synth import synthesize_corpus
    from videolang.models import build_model
    from videolang.train.streams import build_streams

    manifest = synthesize_corpus(tmp_path / "c", 5, seed=0)
    cfg = load_config(SMOKE, [f"data.manifest={manifest}", "model.long_text=chunk", "model.text_max_positions=300"])
    model = build_model(cfg.model)
    streams = build_streams(cfg, model.tokenizer, model.text_encoder.max_length, rank=0, world_size=1)
    assert streams.streams["pairs"].collate.text.max_len == 300
    cfg = load_config(SMOKE, [f"data.manifest={manifest}", "model.long_text=none", "data.max_text_len=1000"])
    model = build_model(cfg.model)
    with pytest.raises(ConfigError, match="data.max_text_len: 1000 tokens exceed"):
        build_streams(cfg, model.tokenizer, model.text_encoder.max_length, rank=0, world_size=1)


@pytest.mark.parametrize("stage, precision", [(0, "fp32"), (0, "bf16"), (2, "fp32"), (3, "fp32")])
def test_temperatures_are_clamped_in_the_optimizers_weights(stage, precision):
    """Under ZeRO and bf16 the optimizer steps fp32 master copies: the clamp must reach those."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    worker = Path(__file__).with_name("_clamp_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(stage), precision, str(SMOKE)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = json.loads(proc.stdout.strip().splitlines()[-1])
    assert values["model"] == pytest.approx(math.log(100.0), abs=1e-2)  # logit_scale_max
    assert values["paragraph"] == pytest.approx(0.0, abs=1e-2)  # temperature <= 1: log scale >= 0
    assert values["dtype"] == "torch.float32"  # the master copy, not a bf16 module copy


def test_self_similarity_matches_a_pairwise_loop_and_skips_padding():
    from videolang.train.module import self_similarity

    g = torch.Generator().manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    mask = torch.tensor([True, True, False, True, True, False])

    def loop(x):
        pairs = [float(x[i] @ x[j]) for i in range(len(x)) for j in range(len(x)) if i != j]
        return sum(pairs) / len(pairs)

    got = self_similarity(video, text, mask)
    assert got["self_sim/video"].item() == pytest.approx(loop(video[mask]), abs=1e-6)
    assert got["self_sim/text"].item() == pytest.approx(loop(text[mask]), abs=1e-6)
    collapsed = torch.nn.functional.normalize(torch.ones(4, 5), dim=-1)
    assert self_similarity(collapsed, collapsed)["self_sim/video"].item() == pytest.approx(1.0, abs=1e-6)
    assert self_similarity(video[:1], text[:1]) == {}  # one sample: no pair

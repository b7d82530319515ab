"""`VideoTextLoss` / `build_loss`: terms switched on by `LossConfig`, weighted sum, input errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from videolang.config import LossConfig
from videolang.losses import (
    LossError,
    build_loss,
    caption_loss,
    cross_level_info_nce,
    info_nce,
    level_info_nce,
    paragraph_loss,
    rectified_info_nce,
)

V, K, T, L, D, VOCAB = 3, 4, 3, 5, 8, 11


def model_outputs(seed=0):
    """What a `VideoTextModel` forward returns for a paragraph batch of V videos x K clips."""
    gen = torch.Generator().manual_seed(seed)
    b = V * K
    video = F.normalize(torch.randn(b, D, generator=gen), dim=-1).requires_grad_()
    text = F.normalize(video.detach() + 0.5 * torch.randn(b, D, generator=gen), dim=-1).requires_grad_()
    return dict(
        video=video,
        text=text,
        logit_scale=torch.tensor(12.0, requires_grad=True),
        video_frames=torch.randn(b, T, D, generator=gen),
        text_words=torch.randn(b, L, D, generator=gen),
        word_mask=torch.arange(L).expand(b, L) < torch.randint(1, L + 1, (b, 1), generator=gen),
        levels=torch.randint(0, 3, (b,), generator=gen),
        parent=torch.tensor([-1, 0, 0, -1, 3, 3, -1, 6, -1, -1, 9, 9]),
        paragraph_mask=torch.tensor([[True] * 4, [True, True, True, False], [True] * 4]),
        caption_logits=torch.randn(b, 6, VOCAB, generator=gen, requires_grad=True),
        caption_labels=torch.randint(0, VOCAB, (b, 6), generator=gen),
    )


def test_baseline_config_is_plain_info_nce():
    out = model_outputs()
    loss = build_loss(LossConfig())
    result = loss(out["video"], out["text"], out["logit_scale"])
    assert set(result) == {"loss", "clip"}
    torch.testing.assert_close(result["loss"], info_nce(out["video"], out["text"], out["logit_scale"]))
    assert list(loss.parameters()) == []


def test_every_term_is_weighted_into_the_total():
    cfg = LossConfig(
        clip_weight=0.5, level_weights={"phase": 1.0, "step": 0.25}, cross_level_weight=0.3,
        rectify_beta=0.3, paragraph_weight=0.1, caption_weight=2.0,
    )
    out = model_outputs(1)
    module = build_loss(cfg)
    result = module(**out)
    assert set(result) == {"loss", "clip", "level/phase", "level/step", "cross_level", "paragraph", "caption"}
    mask = out["paragraph_mask"].flatten()
    scale = out["logit_scale"]
    torch.testing.assert_close(
        result["clip"], rectified_info_nce(out["video"], out["text"], scale, beta=0.3, mask=mask)
    )
    levels = level_info_nce(out["video"], out["text"], scale, out["levels"], cfg.level_weights, mask=mask)
    torch.testing.assert_close(result["level/step"], levels["level/step"])
    torch.testing.assert_close(
        result["cross_level"],
        cross_level_info_nce(out["video"], out["text"], scale, out["parent"], mask=mask),
    )
    torch.testing.assert_close(result["caption"], caption_loss(out["caption_logits"], out["caption_labels"]))
    pm = out["paragraph_mask"]
    torch.testing.assert_close(
        result["paragraph"],
        paragraph_loss(
            out["video"].view(V, K, D), out["text"].view(V, K, D), module.paragraph.logit_scale(),
            video_mask=pm, text_mask=pm, frames=out["video_frames"].view(V, K, T, D),
            words=out["text_words"].view(V, K, L, D), word_mask=out["word_mask"].view(V, K, L),
        ),
    )
    total = (
        0.5 * result["clip"] + result["level/phase"] + 0.25 * result["level/step"]
        + 0.3 * result["cross_level"] + 0.1 * result["paragraph"] + 2.0 * result["caption"]
    )
    torch.testing.assert_close(result["loss"], total)
    result["loss"].backward()
    assert module.paragraph.log_scale.grad is not None
    assert out["logit_scale"].grad is not None and out["video"].grad is not None


def test_paragraph_temperature_frozen_or_learned_from_the_config_and_clamped_on_request():
    learned = build_loss(LossConfig(paragraph_weight=0.1))
    assert [name for name, _ in learned.named_parameters()] == ["paragraph.log_scale"]
    with torch.no_grad():
        learned.paragraph.log_scale.fill_(9.0)
    learned.clamp_parameters_()
    assert learned.paragraph.logit_scale().item() == pytest.approx(100.0)
    # The config field may not exist yet (older LossConfig): learned is the default.
    frozen_cfg = LossConfig(paragraph_weight=0.1)
    object.__setattr__(frozen_cfg, "paragraph_learn_temperature", False)
    frozen = build_loss(frozen_cfg)
    assert list(frozen.parameters()) == []
    torch.testing.assert_close(frozen.paragraph.logit_scale().item(), 1 / 0.07)
    frozen.clamp_parameters_()
    build_loss(LossConfig()).clamp_parameters_()  # no paragraph term: nothing to clamp


def test_padded_clips_leave_the_clip_term():
    out = model_outputs(2)
    result = build_loss(LossConfig())(out["video"], out["text"], 12.0, paragraph_mask=out["paragraph_mask"])
    keep = out["paragraph_mask"].flatten()
    torch.testing.assert_close(result["clip"], info_nce(out["video"][keep], out["text"][keep], 12.0))


@pytest.mark.parametrize(
    "changes, drop, message",
    [
        (dict(level_weights={"step": 1.0}), "levels", "loss.level_weights > 0 needs the `levels` input"),
        (dict(cross_level_weight=1.0), "parent", "needs the `parent` input"),
        (dict(paragraph_weight=1.0), "paragraph_mask", "needs the `paragraph_mask` input"),
        (dict(paragraph_weight=1.0), "text_words", "needs video_frames and text_words"),
        (dict(caption_weight=1.0), "caption_labels", "needs the `caption_labels` input"),
    ],
)
def test_missing_inputs_name_the_config_field(changes, drop, message):
    out = model_outputs()
    out.pop(drop)
    with pytest.raises(LossError, match=message):
        build_loss(dataclasses.replace(LossConfig(), **changes))(**out)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(clip_weight=-1.0), "loss.clip_weight: must be >= 0"),
        (dict(level_weights={"scene": 1.0}), "loss.level_weights.scene: unknown level"),
        (dict(rectify_beta=2.0), "loss.rectify_beta"),
        (dict(paragraph_eps=0.0), "loss.paragraph_eps"),
        (dict(bucket_ratio=0.0), "loss.bucket_ratio"),
        (dict(label_smoothing=1.0), "loss.label_smoothing"),
        (dict(clip_weight=0.0), "every weight is 0"),
    ],
)
def test_bad_config_raises_one_line_error(changes, message):
    with pytest.raises(LossError, match=message):
        build_loss(dataclasses.replace(LossConfig(), **changes))


def test_bad_paragraph_mask_shape():
    out = model_outputs()
    with pytest.raises(LossError, match=r"paragraph_mask must be \[V, K\] with V \* K = 12"):
        bad_mask = torch.ones(5, 2, dtype=torch.bool)
        build_loss(LossConfig())(out["video"], out["text"], 1.0, paragraph_mask=bad_mask)


def test_model_outputs_feed_the_loss_directly():
    """The model's output names are the loss's keyword names: `loss(**model(...))` composes."""
    from videolang.config import ModelConfig
    from videolang.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(video_encoder="tiny", text_encoder="tiny", embed_dim=16, caption_head=True))
    ids, mask = model.text_encoder.tokenize(["a red square moves left", "a blue circle grows"])
    frames = torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8)
    out = model(frames, ids, mask, caption_ids=ids, caption_mask=mask)
    loss = build_loss(LossConfig(caption_weight=1.0, fine_weight=0.0))(**out)
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"]) and set(loss) >= {"clip", "caption"}
    assert model.logit_scale.grad is not None

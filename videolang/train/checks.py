"""Cross-section config checks: combinations that each section accepts alone but a run cannot use.

They run before any process group, model or data is touched, so a bad config fails in one line.
"""

from __future__ import annotations

from videolang.config import Config
from videolang.errors import ConfigError
from videolang.losses import check_loss_config
from videolang.losses.errors import LossError
from videolang.models.build import check_model_config
from videolang.train.streams import STREAMS


def check_train_config(cfg: Config) -> None:
    d, t, loss, m = cfg.data, cfg.train, cfg.loss, cfg.model
    check_model_config(m)
    try:
        check_loss_config(loss)
    except LossError as e:
        raise ConfigError(str(e)) from None

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    for name, weight in d.streams.items():
        need(name in STREAMS, f"data.streams.{name}: unknown stream (valid: {', '.join(STREAMS)})")
        need(weight >= 0, f"data.streams.{name}: weight must be >= 0, got {weight}")
    active = {name for name, w in d.streams.items() if w > 0}
    need(bool(active), "data.streams: every stream has weight 0; give pairs, paragraphs or captions a weight")
    need(d.manifest is not None, "data.manifest: no training manifest given (a JSONL file, a list or a glob)")
    for key in ("num_frames", "image_size", "clips_per_video"):
        need(getattr(d, key) >= 1, f"data.{key}: must be >= 1, got {getattr(d, key)}")
    need(d.num_frames <= m.max_frames, f"data.num_frames: {d.num_frames} exceeds model.max_frames={m.max_frames}")
    need(d.videos_per_batch is None or d.videos_per_batch >= 1,
         f"data.videos_per_batch: must be >= 1 or null, got {d.videos_per_batch}")
    need(d.num_workers >= 0, f"data.num_workers: must be >= 0, got {d.num_workers}")
    need(d.max_text_len is None or d.max_text_len >= 2, f"data.max_text_len: must be >= 2 or null, got {d.max_text_len}")
    need(bool(d.levels), "data.levels: give at least one level for the pairs stream")
    for key in ("max_steps", "batch_size", "grad_accum", "save_every", "log_every"):
        need(getattr(t, key) >= 1, f"train.{key}: must be >= 1, got {getattr(t, key)}")
    need(t.lr > 0, f"train.lr: must be > 0, got {t.lr}")
    need(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio: must be in [0, 1], got {t.min_lr_ratio}")
    need(t.warmup_steps >= 0 and t.val_every >= 0 and t.max_nonfinite >= 0 and t.grad_clip >= 0,
         "train.warmup_steps, train.val_every, train.max_nonfinite and train.grad_clip must be >= 0")
    need(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), f"train.betas: two numbers in [0, 1), got {t.betas}")
    need(t.keep_last >= 2, f"train.keep_last: must be >= 2 (a kill during a save must leave one loadable), got {t.keep_last}")

    # What each loss term needs from the model and the streams.
    need(loss.caption_weight == 0 or m.caption_head,
         "loss.caption_weight > 0 needs model.caption_head: true")
    need(loss.caption_weight == 0 or "captions" in active,
         "loss.caption_weight > 0 needs the captions stream (data.streams.captions > 0)")
    need("captions" not in active or loss.caption_weight > 0,
         "data.streams.captions > 0 needs loss.caption_weight > 0 (its batches would train nothing else of the head)")
    need(loss.paragraph_weight == 0 or "paragraphs" in active,
         "loss.paragraph_weight > 0 needs the paragraphs stream (data.streams.paragraphs > 0)")
    levelled = {name for name, w in loss.level_weights.items() if w > 0}
    need(not levelled or "pairs" in active, "loss.level_weights need the pairs stream (data.streams.pairs > 0)")
    missing = sorted(levelled - set(d.levels))
    need(not missing, f"loss.level_weights.{missing[0] if missing else ''}: level is not in data.levels {list(d.levels)}")
    need(loss.cross_level_weight == 0 or len(set(d.levels)) >= 2,
         "loss.cross_level_weight > 0 needs at least two levels in data.levels (parents and children)")
    useful = loss.clip_weight > 0 or bool(levelled) or loss.cross_level_weight > 0
    need("pairs" not in active or useful, "data.streams.pairs > 0 but no term uses pairs (loss.clip_weight or loss.level_weights)")
    need("paragraphs" not in active or loss.paragraph_weight > 0 or loss.clip_weight > 0,
         "data.streams.paragraphs > 0 but neither loss.paragraph_weight nor loss.clip_weight is > 0")

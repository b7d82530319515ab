"""The DeepSpeed engine: its JSON config derived from `train.*`, optionally overridden by a user file.

Our config sets ZeRO stage, precision, micro-batch, accumulation and clipping; `train.deepspeed_config`
(see configs/deepspeed/) may override any of those keys or add others (bucket sizes, offload, ...). The
optimizer and the LR schedule are always ours (torch AdamW, warmup + cosine), handed to
`deepspeed.initialize` so that DeepSpeed checkpoints their state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from videolang.config import TrainConfig
from videolang.errors import ConfigError

# Keys a user DeepSpeed file may not set: they would bypass our optimizer and schedule.
_OWNED_KEYS = ("optimizer", "scheduler")


def _deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def read_user_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"train.deepspeed_config: {p}: file not found")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"train.deepspeed_config: {p}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"train.deepspeed_config: {p}: expected a JSON object")
    for key in _OWNED_KEYS:
        if key in data:
            raise ConfigError(f"train.deepspeed_config: {p}: '{key}' is set by videolang (train.lr, train.warmup_steps, ...); remove it")
    return data


def deepspeed_config(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The engine's config: ours, then the user's file on top; fp16 is refused on CPU."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "steps_per_print": 2**62,  # our logger reports; DeepSpeed's own step prints stay quiet
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,  # torch AdamW as the client optimizer
    }
    if cfg.deepspeed_config:
        _deep_update(ds, read_user_config(cfg.deepspeed_config))
        ds.pop("train_batch_size", None)  # derived by DeepSpeed from micro-batch x accumulation x world
    if device.type == "cpu" and ds.get("fp16", {}).get("enabled"):
        raise ConfigError("train.precision: fp16 needs a GPU (loss scaling on CPU is unsupported); use bf16 or fp32")
    return ds


def build_engine(module: torch.nn.Module, optimizer, scheduler, ds_config: dict[str, Any]):
    """`deepspeed.initialize` on the train module; returns the engine."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    return engine

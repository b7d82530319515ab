"""Dataclass configs loaded from YAML with `--set section.key=value` overrides.

Every section is a plain dataclass; the tree is type-checked on load so that a typo or a wrong type
fails before any work starts, with the nearest valid key suggested. The resolved config is written next
to every run's outputs (`save_config`) so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from videolang.errors import ConfigError

from videolang.data.manifest import LEVELS  # noqa: E402,F401  (one definition: the manifest schema's)


@dataclass
class RunConfig:
    """Where outputs go and how the run is seeded."""

    output_dir: str = "runs/default"
    seed: int = 0
    name: str = "videolang"


Level = Literal["phase", "step", "task", "clip"]
Stream = Literal["pairs", "paragraphs", "captions"]


@dataclass
class DataConfig:
    """Manifests, the training streams and clip sampling.

    Training draws micro-batches from up to three streams, chosen per micro-step by `streams` (weights):
    `pairs` (clip-caption pairs at `levels`, the hierarchical objective), `paragraphs` (`clips_per_video`
    consecutive clips of one video with their captions or narration, Norton's video-paragraph objective)
    and `captions` (clips with caption/script targets at `caption_level`, the caption head's objective).
    """

    manifest: Union[str, list[str], None] = None  # a JSONL file, a list of files, or a glob (sharded corpora)
    val_manifest: Union[str, list[str], None] = None
    video_root: Optional[str] = None
    split: Optional[str] = "train"  # manifest split used for training (null: every video)
    streams: dict[str, float] = field(default_factory=lambda: {"pairs": 1.0})
    levels: list[Level] = field(default_factory=lambda: ["clip"])  # levels of the pairs stream
    # pairs stream: fill micro-batches with whole videos (their phases, steps and tasks together), so each
    # level's negatives come from the same video and a child's parent shares its batch
    group_by_video: bool = False
    paragraph_source: Literal["narration", "phase", "step", "task", "clip"] = "narration"
    clips_per_video: int = 8  # K of the paragraphs stream
    videos_per_batch: Optional[int] = None  # paragraphs per micro-batch (null: train.batch_size // clips_per_video)
    caption_level: Level = "clip"
    val_level: Literal["phase", "step", "task", "clip", "narration"] = "clip"
    num_frames: int = 8
    image_size: int = 224
    backend: Literal["auto", "decord", "pyav"] = "auto"
    sampling: Literal["uniform", "random"] = "random"  # frame sampling within a training clip
    augment: bool = True  # random resized crop (same box for every frame of a clip)
    max_text_len: Optional[int] = None  # tokens per caption; null: the text tower's own limit
    num_workers: int = 2


@dataclass
class ModelConfig:
    """Dual encoder. `video_encoder`/`text_encoder` are a preset name or a local pretrained folder."""

    video_encoder: str = "tiny"  # tiny | vit-b16 | path to a CLIPVisionModel or VideoEncoder folder
    text_encoder: str = "minilm"  # minilm | tiny | path to a Hugging Face AutoModel folder
    embed_dim: int = 256
    temporal_layers: int = 2
    max_frames: int = 32
    text_pooling: Literal["cls", "mean"] = "mean"
    long_text: Literal["auto", "stretch", "chunk", "none"] = "auto"
    text_max_positions: int = 248
    text_dropout: Optional[float] = None  # override the text tower's dropout rates (null: keep the tower's)
    frame_token_drop: float = 0.0
    token_drop_mode: Literal["random", "attention"] = "random"
    grad_checkpointing: bool = False
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    caption_head: bool = False
    caption_layers: int = 2
    caption_max_len: int = 64


@dataclass
class LossConfig:
    """Loss weights; plain symmetric InfoNCE is the baseline (all other weights 0)."""

    clip_weight: float = 1.0
    level_weights: dict[str, float] = field(default_factory=dict)  # e.g. {phase: 0.5, step: 1.0}
    cross_level_weight: float = 0.0
    rectify_beta: float = 0.0  # Norton faulty-negative rectification (0.3 in Norton)
    rectify_eps: float = 1.0
    paragraph_weight: float = 0.0  # Norton video-paragraph OT loss (0.1 in Norton)
    paragraph_eps: float = 0.1
    paragraph_iters: int = 50
    paragraph_learn_temperature: bool = True  # false: fixed at 0.07, as in Norton's released code
    # Norton: min-max over the batch. From scratch with few videos per batch that lets the towers collapse;
    # "fixed" ((x + 1) / 2) does not (docs/benchmarks.md, noise benchmark).
    paragraph_norm: Literal["batch_minmax", "fixed"] = "batch_minmax"
    bucket_ratio: float = 0.3
    use_bucket: bool = True
    softmax_alpha: float = 1.0
    fine_weight: float = 1.0  # weight of the soft-max (frame-word) term in the fused similarity
    caption_weight: float = 0.0
    label_smoothing: float = 0.1


@dataclass
class TrainConfig:
    """Optimisation, DeepSpeed, checkpoints and logging.

    In-batch negatives of the contrastive terms = world size x `batch_size`; gradient accumulation adds
    samples per optimizer step but not negatives.
    """

    max_steps: int = 1000  # optimizer steps
    # start from these weights (a run, checkpoint or model folder of the same architecture): fine-tuning.
    # Only the weights are taken, not the optimizer, schedule or data position; a resumed run ignores it.
    init_from: Optional[str] = None
    batch_size: int = 32  # micro-batch per process (paragraphs stream: videos per process)
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-6
    warmup_steps: int = 100
    grad_clip: float = 1.0  # 0 disables clipping
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero_stage: Literal[0, 1, 2, 3] = 0
    deepspeed_config: Optional[str] = None  # a DeepSpeed JSON whose keys override the ones derived here
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_last: int = 2  # complete checkpoints kept (>= 2)
    log_every: int = 10
    val_every: int = 0  # steps between validations on data.val_manifest (0: only at the end)
    max_nonfinite: int = 5  # non-finite micro-batches dropped before the run stops
    inject_nonfinite: list[int] = field(default_factory=list)  # fault injection: micro-steps whose loss is NaN
    progress: bool = True  # progress bar on rank 0


@dataclass
class EvalConfig:
    """Evaluation defaults."""

    batch_size: int = 32
    fps: float = 1.0
    prompt: str = "a video of {}."


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------------
# Type checking and coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, converting only where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_t = args[0] if args else Any
        items = [_coerce(v, item_t, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, f"{where}.key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `--set run.name=2024` stays a name
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(choices))})"


def _merge(obj: Any, values: dict, where: str) -> None:
    """Apply a nested mapping onto a dataclass instance in place, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'{_suggest(str(key), names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, {} if value is None else value, path)  # a section with every key commented out
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def _field_type(key: str) -> Any:
    """The annotation of a dotted config key, or None if the key does not exist."""
    cls: Any = Config
    tp: Any = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        tp = hints[part]
        cls = tp
    return tp


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", c) with c parsed as YAML (so 3 is an int, true a bool, [1,2] a list).

    For string fields the text is kept as written (`run.name=1.10` stays "1.10", not 1.1), except that
    `null`/`~` still mean None for optional fields.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    tp = _field_type(key)
    stringish = tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp))
    text = raw.strip()
    if stringish and text not in ("null", "~", "None") and not text.startswith("["):
        return key, text
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key=value` overrides, each layer type-checked."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
        try:
            _merge(cfg, data, "")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for text in overrides or []:
        key, value = parse_override(text)
        try:
            _merge(cfg, _nest(key, value), "")
        except ConfigError as e:
            raise ConfigError(f"--set {text}: {e}") from None
    return cfg


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    from videolang.utils.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path

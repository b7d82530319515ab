"""Config loading: YAML layering, typed `--set` overrides, unknown keys rejected with a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from videolang.config import Config, load_config, save_config
from videolang.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_public_keys():
    cfg = load_config()
    assert isinstance(cfg, Config)
    for key in ("data.manifest", "data.val_manifest", "run.output_dir", "run.seed", "train.max_steps", "train.batch_size"):
        section, name = key.split(".")
        assert hasattr(getattr(cfg, section), name), key


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 50\n  lr: 1\nrun:\n  seed: 3\n")
    cfg = load_config(path, ["train.max_steps=7", "data.manifest=a/b.jsonl", "loss.level_weights={phase: 0.5}"])
    assert cfg.train.max_steps == 7  # override beats file
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int widened to float
    assert cfg.run.seed == 3
    assert cfg.data.manifest == "a/b.jsonl"
    assert cfg.loss.level_weights == {"phase": 0.5}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_step=5", "unknown config key 'train.max_step' (did you mean 'max_steps'?)"),
        ("trian.max_steps=5", "unknown config key 'trian' (did you mean 'train'?)"),
        ("train.max_steps=five", "train.max_steps: expected an integer, got 'five'"),
        ("train.max_steps=2.5", "train.max_steps: expected an integer, got 2.5"),
        ("model.grad_checkpointing=3", "model.grad_checkpointing: expected true/false, got 3"),
        ("train=5", "train: expected a mapping"),
        ("loss.level_weights={phase: high}", "loss.level_weights.phase: expected a number"),
        ("novalue", "--set expects key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(path)
    path.write_text("train:\n  batch: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.batch' \(did you mean 'batch_size'\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_optional_accepts_null():
    cfg = load_config(None, ["data.manifest=x.jsonl", "data.manifest=null"])
    assert cfg.data.manifest is None


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.max_steps=11", "run.name=2024", "loss.level_weights={step: 2}"])
    assert cfg.run.name == "2024"
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["train"]["max_steps"] == 11


def test_shipped_configs_load():
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_scientific_notation_and_raw_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\neval:\n  # batch_size: 8\n")  # YAML 1.1 reads 3e-4 as a string
    cfg = load_config(path, ["train.weight_decay=1e-2", "run.name=1.10", "run.name=0123", "data.manifest=on"])
    assert cfg.train.lr == 3e-4 and cfg.train.weight_decay == 1e-2
    assert cfg.run.name == "0123" and cfg.data.manifest == "on"
    assert load_config(None, ["run.name=1.10"]).run.name == "1.10"
    with pytest.raises(ConfigError, match="train.lr: expected a number, got 'fast'"):
        load_config(None, ["train.lr=fast"])

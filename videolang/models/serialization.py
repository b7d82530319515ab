"""Model folders: `config.json` (everything needed to rebuild the module) + `model.safetensors`.

Weights go through the safetensors library only (no pickle), so loading a folder from elsewhere cannot
run code. Weights are written before the config, each atomically: a folder with a `config.json` is
complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_file
from torch import Tensor, nn

from videolang.models.errors import ModelError
from videolang.utils.io import FILE_MODE, atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_folder(module: nn.Module, config: dict[str, Any], directory: str | Path) -> Path:
    """Write `module`'s weights and `config` into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS_NAME}.tmp"
    save_file(_own_storage(module.state_dict()), str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, directory / WEIGHTS_NAME)
    atomic_write_json(directory / CONFIG_NAME, config)
    return directory


def _own_storage(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each tensor once (tied weights share one entry; loading restores the tie) and in a storage of its
    own: DeepSpeed's ZeRO stages turn parameters into views of one flat buffer, which safetensors refuses."""
    out: dict[str, Tensor] = {}
    seen: set[tuple] = set()
    for name, tensor in state.items():
        t = tensor.detach()
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in seen:
            continue  # an alias of a tensor already kept (a tied weight)
        seen.add(key)
        whole = t.is_contiguous() and t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        out[name] = (t if whole else t.contiguous().clone()).cpu()
    return out


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of a model folder, or a `ModelError` naming the file."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"{path}: not found (expected a model folder with config.json)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return config


def load_weights(module: nn.Module, directory: str | Path) -> None:
    """Load `model.safetensors` into `module`, requiring every tensor to match by name and shape."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ModelError(f"{path}: not found")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, RuntimeError, OSError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        # torch's message is a header line ("Error(s) in loading ...:") followed by the first real cause
        first = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else type(e).__name__)
        raise ModelError(f"{path}: cannot load weights: {first}") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {sorted(missing)[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[0]})")
        raise ModelError(f"{path}: weights do not match {CONFIG_NAME}: {', '.join(parts)}")


def check_format(config: dict[str, Any], expected: str, directory: str | Path) -> None:
    found = config.get("format")
    if found != expected:
        raise ModelError(f"{Path(directory) / CONFIG_NAME}: format is {found!r}, expected {expected!r}")

"""Checkpoints that survive a kill at any moment, and exact resume.

`<output_dir>/checkpoints/step-<N>/` holds
- `engine/`: DeepSpeed's own files (module, optimizer, LR schedule; one optimizer shard per rank);
- `rng/rank-<r>.json`: every random generator of rank r (Python, NumPy, torch CPU and accelerator);
- `state.json`: the step, the micro-step, every data stream's position and the run's shape;
- `model/`: the `VideoTextModel` folder (config + safetensors; gathered first under ZeRO-3);
- `COMPLETE`, written last by rank 0 once every rank has written and fsynced its files.

A folder without `COMPLETE` does not count: a kill during a save leaves the previous checkpoint the
newest loadable one. DeepSpeed's engine files are pickles (its loader passes `weights_only=False`), so
they are read only to resume a run from its own output folder; everything meant for other uses
(evaluation, export, fine-tuning) comes from the safetensors `model/` folder, never unpickled.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from videolang.errors import VideolangError
from videolang.utils.io import atomic_write_json, fsync_dir, fsync_tree

MARKER = "COMPLETE"
ENGINE_TAG = "engine"
STATE_NAME = "state.json"
MODEL_DIR = "model"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(VideolangError):
    """A checkpoint cannot be resumed from (missing, incomplete, or from a run of another shape)."""


@dataclass
class TrainState:
    """Everything besides the engine that a resumed run needs to continue bit for bit."""

    step: int = 0  # optimizer steps done
    micro_step: int = 0  # micro-batches drawn (including dropped non-finite ones)
    positions: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> {epoch, batches}
    nonfinite: int = 0  # micro-batches dropped for a non-finite loss
    broken_videos: dict[str, int] = field(default_factory=dict)  # path -> skipped reads
    shape: dict[str, Any] = field(default_factory=dict)  # world size, micro-batch, accumulation, ZeRO stage

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def step_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def list_checkpoints(output_dir: Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """(step, folder) of the checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and (is_complete(child) or not complete_only):
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


# --------------------------------------------------------------------------------------------------
# Random generators, as JSON (no pickle)


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# --------------------------------------------------------------------------------------------------
# Save


def save_checkpoint(engine, model, state: TrainState, output_dir: Path, *, rank: int, world_size: int,
                    zero_stage: int) -> Path:
    """Write step-<state.step>/ collectively (every rank calls this); returns the folder."""
    import deepspeed

    from videolang.train.distributed import barrier

    folder = step_dir(output_dir, state.step)
    if rank == 0 and folder.exists():  # an incomplete leftover of a killed save, or a re-run step
        shutil.rmtree(folder)
    barrier()
    engine.save_checkpoint(str(folder), tag=ENGINE_TAG, save_latest=False)
    atomic_write_json(folder / "rng" / f"rank-{rank:05d}.json", rng_state())
    params = list(model.parameters())
    gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None) if zero_stage == 3 else nullcontext()
    with gather:
        if rank == 0:
            model.save_pretrained(folder / MODEL_DIR)
    if rank == 0:
        atomic_write_json(folder / STATE_NAME, asdict(state))
        fsync_tree(folder / MODEL_DIR)  # safetensors and the tokenizer are written without fsync
    # DeepSpeed writes with plain torch.save: make every rank's files durable before the marker (the
    # JSON files above are fsynced by their atomic writes).
    fsync_tree(folder / ENGINE_TAG)
    _fault_point("save", state.step)
    barrier()
    if rank == 0:
        fsync_dir(folder)
        atomic_write_json(folder / MARKER, {"step": state.step, "world_size": world_size})
        fsync_dir(folder.parent)
    barrier()
    return folder


def _fault_point(where: str, step: int) -> None:
    """Fault injection for the crash tests: `VIDEOLANG_FAULT=kill-in-save:<step>` SIGKILLs the process
    after the checkpoint's files are written but before its marker is."""
    spec = os.environ.get("VIDEOLANG_FAULT", "")
    if spec == f"kill-in-{where}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def prune_checkpoints(output_dir: Path, keep_last: int) -> list[Path]:
    """Remove complete checkpoints beyond the newest `keep_last`, and incomplete ones older than the
    newest complete one (rank 0 only)."""
    complete = list_checkpoints(output_dir)
    removed = []
    if not complete:
        return removed
    newest = complete[-1][0]
    for step, folder in complete[:-keep_last]:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    for step, folder in list_checkpoints(output_dir, complete_only=False):
        if step < newest and not is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# --------------------------------------------------------------------------------------------------
# Resume


def resolve_resume(resume: str, output_dir: Path) -> Optional[Path]:
    """`auto`: the newest complete checkpoint of the run (or none); `never`: none; else a folder."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    folder = Path(resume)
    if not folder.is_dir():
        raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
    if not is_complete(folder):
        raise CheckpointError(f"--resume {resume}: checkpoint is incomplete (no {MARKER} marker: its save was interrupted)")
    return folder


def read_state(folder: Path) -> TrainState:
    try:
        return TrainState.from_dict(json.loads((folder / STATE_NAME).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{folder / STATE_NAME}: unreadable train state ({e})") from None


def check_shape(state: TrainState, shape: dict[str, Any], folder: Path) -> None:
    """Refuse a resume that cannot continue the same run exactly, naming what changed."""
    for key, now in shape.items():
        saved = state.shape.get(key)
        if saved is not None and saved != now:
            raise CheckpointError(
                f"{folder}: cannot resume: {key} was {saved}, now {now} (resume with the same world size, "
                f"micro-batch, accumulation and ZeRO stage, or start a new run with --resume never)"
            )


def load_checkpoint(engine, folder: Path, rank: int) -> None:
    """Engine state (module, optimizer, LR schedule) and this rank's random generators."""
    path, _ = engine.load_checkpoint(str(folder), tag=ENGINE_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=True)
    if path is None:
        raise CheckpointError(f"{folder / ENGINE_TAG}: DeepSpeed could not load the engine state")
    rng_file = folder / "rng" / f"rank-{rank:05d}.json"
    if not rng_file.is_file():
        raise CheckpointError(f"{rng_file}: missing (the checkpoint was written by fewer ranks)")
    set_rng_state(json.loads(rng_file.read_text()))

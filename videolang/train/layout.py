"""Where a run keeps its model folders, so that every command accepts a run, a checkpoint or a model.

Run folder: `final/` (the trained model) or, before the run has finished, the newest complete
checkpoint's `model/`. Checkpoint folder: its `model/`. Anything else is taken as a model folder.
All of them are safetensors folders: nothing pickled is ever read here.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"


def resolve_model_folder(path: str | Path) -> Path:
    """The model folder behind a run folder, a checkpoint folder or a model folder (returned as is)."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    if (path / "model" / CONFIG).is_file() and (path / "COMPLETE").is_file():  # a checkpoint
        return path / "model"
    if (path / "final" / CONFIG).is_file():  # a finished run
        return path / "final"
    from videolang.train.checkpoint import latest_checkpoint

    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest / "model"
    return path

"""Where a run keeps its model folders, so that every command accepts a run, a checkpoint or a model.

Run folder: `final/` (the trained model) or, before the run has finished, the newest complete
checkpoint's `model/`. Checkpoint folder: its `model/`. Anything else is taken as a model folder.
All of them are safetensors folders: nothing pickled is ever read here.
"""

from __future__ import annotations

from pathlib import Path

from videolang.models.serialization import CONFIG_NAME
from videolang.train.checkpoint import MODEL_DIR, is_complete, latest_checkpoint


def resolve_model_folder(path: str | Path) -> Path:
    """The model folder behind a run folder, a checkpoint folder or a model folder (returned as is)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / MODEL_DIR / CONFIG_NAME).is_file() and is_complete(path):  # a checkpoint
        return path / MODEL_DIR
    if (path / "final" / CONFIG_NAME).is_file():  # a finished run
        return path / "final"
    latest = latest_checkpoint(path)
    return latest / MODEL_DIR if latest is not None else path

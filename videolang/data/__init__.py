"""Data stage: manifests, video decoding, datasets, synthetic corpora.

Public names resolve lazily so `import videolang.data` stays cheap and optional decoders load on use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_clip": "videolang.data.video",
    "VideoDecodeError": "videolang.data.video",
    "load_manifest": "videolang.data.manifest",
    "validate_manifest": "videolang.data.manifest",
    "VideoRecord": "videolang.data.manifest",
    "Segment": "videolang.data.manifest",
    "clip_pairs": "videolang.data.manifest",
    "frame_labels": "videolang.data.manifest",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'videolang.data' has no attribute '{name}'")


__all__ = sorted(_EXPORTS)

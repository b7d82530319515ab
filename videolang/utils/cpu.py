"""Facts about the CPU that size the work of cache-blocked loops."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def cache_bytes(level: int, root: Path = SYSFS_CACHE) -> Optional[int]:
    """Size of one core's data (or unified) cache at `level` as Linux reports it, None where sysfs does not say
    (other systems, containers that hide it)."""
    for index in sorted(root.glob("index*")):
        try:
            found = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
            kind = (index / "type").read_text().strip() if (index / "type").exists() else "Unified"
        except OSError:
            continue
        if found == str(level) and kind != "Instruction" and size[:-1].isdigit() and size[-1] in "KM":
            return int(size[:-1]) * (1 << (10 if size[-1] == "K" else 20))
    return None

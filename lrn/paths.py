"""Where the shared datasets live: ``$LRN_DATA``, else ``../shared/data`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    env = os.environ.get("LRN_DATA")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    return candidate if candidate.is_dir() else None

"""The user's cache folder, where answers measured on this machine are kept between runs (perf=fast's
precision probe, the bench's epoch rates): $APRELU_CACHE_DIR, else $XDG_CACHE_HOME/aprelu-exp, else
~/.cache/aprelu-exp."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "APRELU_CACHE_DIR"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aprelu-exp"

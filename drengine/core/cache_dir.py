"""Where local state lives: ``DRENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/drengine``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("DRENGINE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "drengine"


def repo_cache_dir(repo_id: str) -> Path:
    path = cache_root() / repo_id
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path

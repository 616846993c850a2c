"""File-system helpers for what drengine creates: private whatever the umask.

Repositories and caches hold encrypted data, file names of the cache and lock contents;
other users need no access. ``Path.mkdir(parents=True, mode=...)`` applies ``mode`` to the
last directory only and gives the parents ``0777 & ~umask`` (0777 under umask 000), so
directories are created here one component at a time.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(path: Path, mode: int = DIR_MODE) -> bool:
    """Create ``path`` and its missing parents, each with exactly ``mode``; directories that
    exist are left as they are. Returns whether ``path`` itself was created.

    One ``mkdir`` in the common case (the directory exists), so it is cheap to call on every
    write. Safe against concurrent creators: a directory someone else made first is fine.
    """
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return False  # (a file there: the caller's next open or rename says so)
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_dirs(path.parent, mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            return False
    # mkdir applies the umask, which may take bits drengine itself needs (umask 0277).
    os.chmod(path, mode)
    return True


def unlink_quietly(path: Path) -> None:
    """Remove ``path`` if possible: cleanup after a failure must not hide that failure."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def reason(e: OSError) -> str:
    """``e.strerror``, or the message of an OSError raised without an errno."""
    return e.strerror or str(e) or type(e).__name__

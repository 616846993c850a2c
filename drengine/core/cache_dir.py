"""Where local state lives: ``DRENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/drengine``.

Directories are created 0700 whatever the umask (``core.fsutil``). The cache root carries a
``CACHEDIR.TAG`` (https://bford.info/cachedir/) so backup tools, drengine's own included,
skip it: backing up a cache only stores data that is already in the repository.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from drengine.core.errors import DrengineError
from drengine.core.fsutil import FILE_MODE, make_dirs, reason, unlink_quietly

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
_TAG_CONTENT = CACHEDIR_SIGNATURE + (
    b"\n# This file is a cache directory tag created by drengine.\n"
    b"# For information about cache directory tags, see https://bford.info/cachedir/\n"
)


def _default_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "drengine"


def cache_root() -> Path:
    """The cache root's path; creates nothing (``ensure_cache_root`` does)."""
    env = os.environ.get("DRENGINE_CACHE_DIR")
    return Path(env) if env else _default_root()


def ensure_cache_root() -> Path:
    """The cache root, created if missing and then tagged as a cache directory.

    A directory that ``DRENGINE_CACHE_DIR`` names and that already exists is tagged only if
    drengine created it: the user may have pointed it at a directory holding other things,
    which a tag would exclude from their backups. The default location is drengine's own and
    is always tagged (also when an older version created it untagged).
    """
    root = cache_root()
    try:
        created = make_dirs(root)
        if created or root == _default_root():
            write_cachedir_tag(root)
    except OSError as e:
        raise _cannot_create(root, e) from e
    return root


def repo_cache_dir(repo_id: str) -> Path:
    root = ensure_cache_root()
    path = root / repo_id
    try:
        make_dirs(path)
    except OSError as e:
        raise _cannot_create(path, e) from e
    return path


def write_cachedir_tag(directory: Path) -> None:
    """Put a ``CACHEDIR.TAG`` into ``directory`` unless one is there; atomic (temporary file,
    then rename), so a tool never sees a tag without its signature."""
    tag = directory / CACHEDIR_TAG
    if tag.exists():
        return
    tmp = directory / f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{CACHEDIR_TAG}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.write(fd, _TAG_CONTENT)
        finally:
            os.close(fd)
        os.replace(tmp, tag)
    except BaseException:
        unlink_quietly(tmp)
        raise


def _cannot_create(path: Path, e: OSError) -> DrengineError:
    return DrengineError(
        f"cannot create the cache directory {path}: {reason(e)} (set DRENGINE_CACHE_DIR to a "
        "writable directory)"
    )

"""File-system metadata: read it into ``Node``s at backup (``files_restore`` applies it).

Knows nothing of storage or crypto: content is read by the caller through ``open_file``.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from functools import lru_cache

from drengine.core.model import Node

_O_NOATIME = getattr(os, "O_NOATIME", 0)


@lru_cache(maxsize=4096)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def node_type(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "chardev"
    if stat.S_ISBLK(mode):
        return "blockdev"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


def read_xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    """Extended attributes where the file system lets us read them; none otherwise."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out.append((os.fsencode(name), value))
    return out


def node_from_stat(name: bytes, path: bytes, st: os.stat_result) -> Node:
    """Everything about an entry except file content (filled in by the backup)."""
    kind = node_type(st.st_mode)
    if kind is None:
        raise OSError(errno.EINVAL, "unsupported file type")
    node = Node(
        name=name,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=_user(st.st_uid),
        group=_group(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        size=st.st_size if kind == "file" else 0,
        inode=st.st_ino,
        device=st.st_dev,
        links=st.st_nlink,
        xattrs=read_xattrs(path),
    )
    if kind == "symlink":
        node.target = os.readlink(path)
    elif kind in ("chardev", "blockdev"):
        node.rdev = st.st_rdev
    elif kind == "file":
        node.sparse = st.st_blocks * 512 < st.st_size
    return node


def open_file(path: bytes) -> int:
    """Open for reading without following a symlink swapped in since the scan."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return os.open(path, flags | _O_NOATIME)
    except PermissionError:
        if not _O_NOATIME:
            raise
        return os.open(path, flags)  # O_NOATIME needs ownership or CAP_FOWNER

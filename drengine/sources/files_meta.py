"""File-system metadata: read it into ``Node``s at backup (``files_restore`` applies it).

Knows nothing of storage or crypto: content is read by the caller through ``open_file``.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import threading
from functools import lru_cache
from typing import NamedTuple

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


def owner_names(uid: int, gid: int) -> tuple[str, str]:
    """The user and group names a node records for these IDs ("" where there is none)."""
    return _user(uid), _group(gid)


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


# A path longer than this is reached from the descriptor of an ancestor directory instead
# (an "anchor"), so trees deeper than PATH_MAX (4096 bytes) back up too.
DEEP_PATH = 3072


class Anchor:
    """An open directory that deeper entries are reached from; closed when the walk and
    every read below it have let go of it (reference counted, thread-safe)."""

    __slots__ = ("_lock", "fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd, self.refs, self._lock = fd, 1, threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self.refs += 1

    def release(self) -> None:
        with self._lock:
            self.refs -= 1
            last = self.refs == 0
        if last:
            os.close(self.fd)

    def close(self) -> None:
        """Close now, whoever still holds it (a walk that stopped midway)."""
        with self._lock:
            was, self.refs = self.refs, 0
        if was > 0:
            os.close(self.fd)


class Place(NamedTuple):
    """Where an entry is for system calls: an absolute path, or a path relative to an
    anchor's descriptor (always short enough for the kernel). A tuple: one is made per
    entry backed up, and a frozen dataclass costs several times more to create."""

    anchor: Anchor | None
    rel: bytes

    @property
    def dir_fd(self) -> int | None:
        return self.anchor.fd if self.anchor is not None else None

    def child(self, name: bytes) -> Place:
        if not self.rel:
            return Place(self.anchor, name)
        sep = b"" if self.rel.endswith(b"/") else b"/"
        return Place(self.anchor, self.rel + sep + name)

    def lstat(self) -> os.stat_result:
        return os.lstat(self.rel or b".", dir_fd=self.dir_fd)

    def names(self) -> list[bytes]:
        """The directory's entry names, sorted."""
        if self.anchor is None:
            return sorted(os.listdir(self.rel))  # bytes in, bytes out; no DirEntry objects
        fd = os.open(self.rel or b".", _DIR_FLAGS, dir_fd=self.dir_fd)
        try:
            return sorted(os.fsencode(n) for n in os.listdir(fd))
        finally:
            os.close(fd)

    def descend(self) -> tuple[Place, Anchor | None]:
        """This directory as the place of its entries; past ``DEEP_PATH`` a new anchor is
        opened for it (returned too, for the caller to release)."""
        if len(self.rel) <= DEEP_PATH:
            return self, None
        anchor = Anchor(os.open(self.rel, _DIR_FLAGS, dir_fd=self.dir_fd))
        return Place(anchor, b""), anchor

    def syscall_path(self) -> bytes:
        """A path for calls without a ``dir_fd`` parameter (extended attributes)."""
        if self.anchor is None:
            return self.rel
        return b"/proc/self/fd/%d/%s" % (self.anchor.fd, self.rel or b".")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def node_from_stat(name: bytes, path: bytes | Place, st: os.stat_result) -> Node:
    """Everything about an entry except file content (filled in by the backup)."""
    place = path if isinstance(path, Place) else Place(None, path)
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
        xattrs=read_xattrs(place.syscall_path()),
    )
    if kind == "symlink":
        node.target = os.readlink(place.rel or b".", dir_fd=place.dir_fd)
    elif kind in ("chardev", "blockdev"):
        node.rdev = st.st_rdev
    elif kind == "file":
        node.sparse = st.st_blocks * 512 < st.st_size
    return node


def open_file(path: bytes | Place) -> int:
    """Open for reading without following a symlink swapped in since the scan."""
    place = path if isinstance(path, Place) else Place(None, path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(place.rel, flags | _O_NOATIME, dir_fd=place.dir_fd)
    except PermissionError:
        if not _O_NOATIME:
            raise
        # O_NOATIME needs ownership or CAP_FOWNER
        return os.open(place.rel, flags, dir_fd=place.dir_fd)

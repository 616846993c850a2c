"""File-system side of restore: create entries and apply metadata without following a link.

Everything here works relative to an open directory descriptor or on a descriptor of the
entry itself, never on a path: a path would follow any symlink someone planted in the target
and fails beyond PATH_MAX. Where Linux has no call that takes a descriptor for a special file
(chmod and xattrs of a FIFO or device), an ``O_PATH`` descriptor is reached through
``/proc/self/fd/N``, which names that inode and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from drengine.core.model import Node

# Linux writes at most 0x7ffff000 bytes per call; reading back in pieces keeps memory flat.
_READBACK = 16 << 20
_SPECIAL_TYPES = {
    "fifo": stat.S_IFIFO,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "socket": stat.S_IFSOCK,
}


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` and read it back: ``OSError`` unless exactly
    these bytes reached the file. A short write is continued, one that makes no progress
    is an error (a full disk raises ENOSPC on the next call)."""
    done = os.pwrite(fd, data, offset)
    if done != len(data):
        view = memoryview(data)
        while done < len(view):
            n = os.pwrite(fd, view[done:], offset + done)
            if n <= 0:
                at = offset + done
                raise OSError(errno.EIO, f"the file system took no bytes at offset {at}")
            done += n
    if len(data) <= _READBACK:
        if data and _pread_all(fd, len(data), offset) != data:
            raise OSError(errno.EIO, f"what reached the file at offset {offset} differs")
        return
    for start in range(0, len(data), _READBACK):
        want = data[start : start + _READBACK]
        if _pread_all(fd, len(want), offset + start) != want:
            raise OSError(errno.EIO, f"what reached the file at offset {offset + start} differs")


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    got = os.pread(fd, length, offset)
    if len(got) == length or not got:
        return got
    parts = [got]
    done = len(got)
    while done < length:
        more = os.pread(fd, length - done, offset + done)
        if not more:
            break
        parts.append(more)
        done += len(more)
    return b"".join(parts)


def _set_xattrs(target: int | str, node: Node) -> None:
    for key, value in node.xattrs:
        # File systems without xattrs, or namespaces we may not write (trusted.*): skip.
        # A name with a NUL byte raises ValueError: that entry is reported.
        with contextlib.suppress(OSError):
            os.setxattr(target, key, value)


def apply_metadata_fd(fd: int, node: Node, *, is_root: bool) -> None:
    """Ownership, xattrs, mode and times of a regular file or directory open for reading or
    writing, in the order that keeps each (chown clears setuid)."""
    if is_root:
        os.fchown(fd, node.uid, node.gid)
    _set_xattrs(fd, node)
    os.fchmod(fd, node.mode)
    os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))


def apply_metadata_opath(fd: int, node: Node, *, is_root: bool) -> None:
    """``apply_metadata_fd`` for an ``O_PATH`` descriptor of anything but a symlink (a FIFO
    or device must not be opened for I/O; a directory we may search but not read)."""
    proc = f"/proc/self/fd/{fd}"
    if is_root:
        os.chown(proc, node.uid, node.gid)
    _set_xattrs(proc, node)
    os.chmod(proc, node.mode)
    os.utime(proc, ns=(node.mtime_ns, node.mtime_ns))


def apply_symlink_metadata(dir_fd: int, name: bytes, node: Node, *, is_root: bool) -> None:
    """Owner, xattrs and times of the symlink ``name`` itself (a symlink has no mode)."""
    if is_root:
        os.chown(name, node.uid, node.gid, dir_fd=dir_fd, follow_symlinks=False)
    if node.xattrs:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ESTALE, "the new symlink was replaced meanwhile")
            _set_xattrs(f"/proc/self/fd/{fd}", node)  # names the link, not its target
        finally:
            os.close(fd)
    os.utime(name, ns=(node.mtime_ns, node.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def make_special_at(dir_fd: int, name: bytes, node: Node, *, is_root: bool) -> None:
    """Create a symlink, FIFO, device node or socket placeholder at ``name`` (which must
    not exist) and give it the node's metadata."""
    if node.type == "symlink":
        os.symlink(node.target or b"", name, dir_fd=dir_fd)
        apply_symlink_metadata(dir_fd, name, node, is_root=is_root)
        return
    kind = _SPECIAL_TYPES[node.type]
    if node.type == "fifo":
        os.mkfifo(name, 0o600, dir_fd=dir_fd)
    else:
        os.mknod(name, kind | 0o600, node.rdev, dir_fd=dir_fd)
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
            raise OSError(errno.ESTALE, f"the new {node.type} was replaced meanwhile")
        apply_metadata_opath(fd, node, is_root=is_root)
    finally:
        os.close(fd)

"""Block devices and disk images: ``block:///dev/DEVICE`` or ``block:///PATH/TO/IMAGE``.

The device is read from start to end in large sequential reads, stored at
``/block/PATH`` as one file. All-zero stretches cut into identical chunks, stored once, and
the file is marked sparse, so ``restore --target`` leaves holes there; a change of a few
blocks changes only the chunks around it. The record holds the size and the SHA-256 of the
whole device, as ``sha256sum /dev/DEVICE`` prints it.

A device that is written while it is read gives an image that no single moment had: freeze
the file system or read an LVM or ZFS snapshot (``--before``/``--after`` hooks).

``restore --to block:///dev/DEVICE --confirm-device /dev/DEVICE`` writes an image back onto
a device or an existing image file: refused without the confirmation, for a device that is
mounted, or one smaller than the image; read back afterwards and compared with the recorded
SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult

from drengine.core.errors import RestoreError, SourceFailed, UsageError
from drengine.sources.base import (
    BackupContext,
    ChunksOf,
    Entry,
    LoadOptions,
    Readable,
    StoredStream,
    StreamSource,
    stored_entries,
)
from drengine.sources.command import stream_node
from drengine.sources.urls import local_path

_READ = 8 << 20  # large sequential reads: devices and images are read at streaming speed


def device_path(u: SplitResult) -> str:
    return local_path(u, "the device or image path")


def _open_device(path: str, flags: int) -> tuple[int, int, str]:
    """(fd, size in bytes, "block device" or "image file")."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        raise SourceFailed(f"{path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            return fd, os.lseek(fd, 0, os.SEEK_END), "block device"
        if stat.S_ISREG(st.st_mode):
            return fd, st.st_size, "image file"
    except OSError as e:
        os.close(fd)
        raise SourceFailed(f"{path}: {e.strerror or e}") from None
    os.close(fd)
    raise SourceFailed(f"{path} is neither a block device nor a regular file (an image)")


class _Reader:
    """Sequential reads of exactly ``size`` bytes; a device that shrinks fails the backup."""

    def __init__(self, fd: int, size: int, path: str) -> None:
        self._fd, self._left, self._path = fd, size, path
        self._pos = 0

    def readinto(self, b: memoryview) -> int:
        if self._left == 0:
            return 0
        want = min(len(b), self._left, _READ)
        n = os.preadv(self._fd, [b[:want]], self._pos)
        if n == 0:
            raise SourceFailed(f"{self._path} ended at byte {self._pos}, before its size")
        self._pos += n
        self._left -= n
        return n


class BlockSource(StreamSource):
    def __init__(self, path: str) -> None:
        super().__init__(kind="block")
        self.path = path
        self.entry = os.fsencode("/block" + path)
        self._what = ""

    @classmethod
    def from_url(cls, u: SplitResult) -> BlockSource:
        return cls(device_path(u))

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        node = stream_node(self.entry)
        node.sparse = True  # zero stretches come back as holes in a restored image file
        yield Entry(self.entry, node, open=self._open)

    @contextmanager
    def _open(self) -> Iterator[Readable]:
        fd, size, self._what = _open_device(self.path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            yield _Reader(fd, size, self.path)
        finally:
            os.close(fd)

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "device": self.path,
            "type": self._what,
            "size": stored[0].size,
            "entries": stored_entries(stored),
        }


def restore_block(
    part: dict[str, Any], u: SplitResult, chunks_of: ChunksOf, opts: LoadOptions
) -> list[dict[str, Any]]:
    dest = device_path(u)
    confirm = opts.confirm_device
    if not confirm or os.path.normpath(confirm) != dest:
        raise UsageError(
            f"writing the image onto {dest} destroys what it holds; repeat the path with "
            f"--confirm-device {dest} to go ahead"
        )
    entries = part.get("entries") or [{}]
    path, size, recorded = (entries[0].get(k) for k in ("path", "size", "sha256"))
    if not isinstance(path, str) or not isinstance(size, int):
        raise UsageError("the snapshot's block record names no image")
    if _mounted(dest):
        raise RestoreError(f"{dest} is mounted; unmount it before writing an image onto it")
    try:
        fd, have, _ = _open_device(dest, os.O_WRONLY)
    except SourceFailed as e:
        raise RestoreError(str(e)) from None
    try:
        if have < size and stat.S_ISBLK(os.fstat(fd).st_mode):
            raise RestoreError(f"{dest} holds {have} bytes, fewer than the image's {size}")
        pos = 0
        for chunk in chunks_of(path):
            view = memoryview(chunk)
            with opts.phases.span("write"):
                while view:
                    n = os.pwrite(fd, view, pos)
                    view, pos = view[n:], pos + n
        with opts.phases.span("write"):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, size)
            os.fsync(fd)
    except OSError as e:
        raise RestoreError(f"cannot write {dest}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    with opts.phases.span("verify"):
        digest = _read_back(dest, size)
    if recorded is not None and digest != recorded:
        raise RestoreError(f"{dest} does not read back as the recorded image (SHA-256 differs)")
    return [{"device": dest, "bytes": size, "sha256": digest}]


def _read_back(path: str, size: int) -> str:
    """SHA-256 of the first ``size`` bytes as the device now holds them."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read the device, not the cache
        buf = bytearray(_READ)
        pos = 0
        while pos < size:
            n = os.preadv(fd, [memoryview(buf)[: min(_READ, size - pos)]], pos)
            if n == 0:
                break
            h.update(memoryview(buf)[:n])
            pos += n
    finally:
        os.close(fd)
    return h.hexdigest()


def _mounted(dev: str) -> bool:
    try:
        real = os.path.realpath(dev)
        with open("/proc/mounts") as f:
            return any(os.path.realpath(line.split()[0]) == real for line in f if line.strip())
    except OSError:
        return False

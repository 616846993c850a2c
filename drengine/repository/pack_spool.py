"""Packs that fill in a temporary file instead of memory, as restic's do.

A backup keeps a pack open per sealer thread and blob type, one sealed pack waiting for the
uploader and one being uploaded: in memory that was up to four packs (64 MiB at the default
16 MiB), the largest part of a first backup's peak. Spooled, the open and waiting packs sit
in the page cache, which the kernel may write out and reclaim under pressure. A pack's
object ID is hashed as it is written, and a local repository copies the file in the kernel
(``Backend.put_file``), so no page of a pack is in the backup's memory; object storage
uploads it from a mapping.

The file is unlinked as it is created (``tempfile.TemporaryFile``), so nothing is left
behind by a crash or a kill. It lives in ``TMPDIR`` (``/tmp`` by default), which needs room
for a few packs while a backup runs; a write that fails there fails the backup with one
sentence that says so, and no snapshot is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import blake3

from drengine.core.errors import StorageError
from drengine.core.fsutil import reason
from drengine.repository.pack import PackBuilder
from drengine.storage.base import file_view

_GATHER = 1 << 20
_GATHER_BUFFERS = 512  # below IOV_MAX (1024), the most buffers one writev takes


def _spool_error(e: OSError) -> StorageError:
    try:
        where = tempfile.gettempdir()
    except OSError:  # none of TMPDIR, /tmp, /var/tmp, ... is usable
        where = os.environ.get("TMPDIR") or "/tmp"
    return StorageError(
        f"cannot write a temporary pack file in {where}: {reason(e)} "
        "(a backup keeps a few packs there while it runs; TMPDIR chooses the directory)"
    )


class SpooledPack:
    """A finished pack in its temporary file, with its object ID (hashed as it was
    written). ``Repository.save_spooled`` stores it; ``view`` maps it; ``close`` (always,
    also on failure) gives the file's space back."""

    def __init__(self, f: IO[bytes], size: int, object_id: str) -> None:
        self._f = f
        self.size = size
        self.object_id = object_id

    def __len__(self) -> int:
        return self.size

    def fileno(self) -> int:
        return self._f.fileno()

    @contextmanager
    def view(self) -> Iterator[memoryview]:
        with file_view(self._f.fileno(), self.size) as v:
            yield v

    def close(self) -> None:
        self._f.close()


class SpoolingPackWriter(PackBuilder):
    """``PackWriter``'s pack, written to an unlinked temporary file as blobs are added."""

    def __init__(self, encryption_key: bytes) -> None:
        self._pending: list[bytes] = []  # written together by one ``writev``
        self._pending_bytes = 0
        self._hash = blake3.blake3()  # the object ID, of every byte as it is written
        try:
            # Handed on to a SpooledPack and closed there, or by discard(): no context here.
            self._f = tempfile.TemporaryFile(prefix="drengine-pack-", buffering=0)  # noqa: SIM115
        except OSError as e:
            raise _spool_error(e) from e
        try:
            super().__init__(encryption_key)
        except BaseException:
            self._f.close()
            raise

    def _append(self, data: bytes) -> None:
        # Small blobs are gathered first: a write per blob (47,000 on /usr/share) cost
        # ~0.4 s of system time in the file system's per-write work. They are written with
        # one ``writev``, not copied into a buffer first: that copy held the interpreter lock.
        self._size += len(data)
        self._hash.update(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= _GATHER or len(self._pending) >= _GATHER_BUFFERS:
            self._flush()

    def _flush(self) -> None:
        buffers, self._pending, self._pending_bytes = self._pending, [], 0
        if not buffers:
            return
        fd = self._f.fileno()
        try:
            done, total = os.writev(fd, buffers), sum(len(b) for b in buffers)
            if done < total:  # a short write (a full disk, a signal): the rest one by one
                self._write_from(fd, b"".join(buffers), done)
        except OSError as e:
            raise _spool_error(e) from e

    @staticmethod
    def _write_from(fd: int, data: bytes, done: int) -> None:
        with memoryview(data) as view:
            while done < len(view):
                done += os.write(fd, view[done:])

    def finish(self) -> SpooledPack:
        self._finish()
        self._flush()
        return SpooledPack(self._f, self._size, self._hash.hexdigest())

    def discard(self) -> None:
        self._f.close()

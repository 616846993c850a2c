"""Write restored files: under a temporary name, verified, then renamed into place.

A file's blobs are each authenticated and checked against their IDs on reading; every write
is continued until all its bytes are taken and then read back (``write_at``); the whole
content is hashed in order against the snapshot's content hash and its length checked, and
the file's size checked once more by ``fstat``. Only then is it renamed to its final name,
relative to its directory's descriptor: a symlink there is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import blake3

from drengine.core.errors import Cancelled, DrengineError, IntegrityError
from drengine.core.model import Node
from drengine.core.phases import NO_PHASES, Phases
from drengine.core.progress import Progress
from drengine.engine.blobstream import blob_stream
from drengine.engine.restore_batches import Batch
from drengine.engine.restore_dirs import DirFds
from drengine.engine.restore_plan import Entry
from drengine.repository.repo import Repository
from drengine.sources.files_restore import apply_metadata_fd, write_at

# What a failed entry is reported with: (entry, message).
Fail = Callable[[Entry, str], None]
ENTRY_ERRORS = (DrengineError, OSError, OverflowError, ValueError)
_TMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_TRIES = 8


def reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _is_zero(data: bytes) -> bool:
    return not data or (data[0] == 0 and data == bytes(len(data)))


class TempNames:
    """Names for entries before they are renamed into place; unique in this process."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._prefix = b".drengine-%d-" % os.getpid()

    def __call__(self) -> bytes:
        return self._prefix + b"%d.tmp" % next(self._counter)


_TEMP_NAME = re.compile(rb"\.drengine-(\d{1,10})-\d{1,20}\.tmp")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True


def remove_stale_temps(dir_fd: int) -> int:
    """Remove what a restore killed in this directory left under a temporary name: a
    regular file named as ``TempNames`` names them, owned by us, of a process that no
    longer runs (a running one may be another restore into the same target). How many."""
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return 0
    removed = 0
    for name in names:
        raw = os.fsencode(name)
        m = _TEMP_NAME.fullmatch(raw)
        if m is None or _running(int(m.group(1))):
            continue
        try:
            st = os.lstat(raw, dir_fd=dir_fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(raw, dir_fd=dir_fd)
                removed += 1
        except OSError:
            continue  # gone meanwhile, or not ours to remove: it stays
    return removed


class FileWriter:
    def __init__(
        self,
        repo: Repository,
        dirs: DirFds,
        temp: TempNames,
        progress: Progress,
        fail: Fail,
        *,
        is_root: bool,
        phases: Phases = NO_PHASES,
        cancel: threading.Event | None = None,
        note: Fail | None = None,
    ) -> None:
        self.repo = repo
        self.dirs = dirs
        self.temp = temp
        self.progress = progress
        self.fail = fail
        # A problem to report even if the entry is written later (a temporary file left).
        self.note = note or fail
        self.is_root = is_root
        self.phases = phases
        self.cancel = cancel

    def write_batch(self, batch: Batch[Entry]) -> None:
        """One ranged read of a pack, then every one-blob file whose blob lies in it. A
        blob that does not read from this copy is read alone (there may be another)."""
        try:
            with self.phases.span("fetch"):
                buf = memoryview(
                    self.repo.read_pack(batch.pack_id, batch.start, batch.end - batch.start)
                )
        except DrengineError:
            buf = None
        for entry, node, ie in batch.items:
            data = None
            if buf is not None:
                rel = ie.offset - batch.start
                with contextlib.suppress(DrengineError), self.phases.span("decrypt"):
                    data = self.repo.open_blob(node.content[0], ie, buf[rel : rel + ie.length])
            self.write(entry, None, data)

    def write(self, entry: Entry, fetch: ThreadPoolExecutor | None, data: bytes | None) -> None:
        """Restore one file; ``data`` is its content when the caller already read it."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("the restore was cancelled")
        try:
            dir_fd = self.dirs.acquire(entry.dir)
        except ENTRY_ERRORS as e:
            self.fail(entry, f"cannot open its directory: {reason(e)}")
            return
        try:
            self._write_in(dir_fd, entry, fetch, data)
        finally:
            self.dirs.release(entry.dir)
        if entry.done:
            self.progress.file_done()

    def _write_in(
        self, dir_fd: int, entry: Entry, fetch: ThreadPoolExecutor | None, data: bytes | None
    ) -> None:
        step = "cannot create file"
        tmp = b""
        fd = -1
        span = self.phases.span
        try:
            with span("write"):
                tmp, fd = self._create(dir_fd)
            step = "cannot write file"
            self._content(fd, entry.node, fetch, data)
            step = "cannot set metadata"
            with span("write"):
                apply_metadata_fd(fd, entry.node, is_root=self.is_root)
                os.close(fd)
                fd = -1
                step = "cannot move the verified file into place"
                os.replace(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            tmp = b""
        except ENTRY_ERRORS as e:
            self.fail(entry, reason(e) if isinstance(e, DrengineError) else f"{step}: {reason(e)}")
            return
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError as e:
                    self.note(entry, f"cannot remove the temporary file {tmp!r}: {reason(e)}")
        entry.done = True

    def _create(self, dir_fd: int) -> tuple[bytes, int]:
        for attempt in range(_TMP_TRIES):
            tmp = self.temp()
            try:
                return tmp, os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                if attempt == _TMP_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _content(
        self, fd: int, node: Node, fetch: ThreadPoolExecutor | None, data: bytes | None
    ) -> None:
        """Write and verify the content; ``IntegrityError`` if it is not the snapshot's."""

        span = self.phases.span

        def sink(offset: int, blob: bytes) -> None:
            if not (node.sparse and _is_zero(blob)):
                with span("write"):
                    write_at(fd, blob, offset)  # holes of a new file read as zeros

        hasher = blake3.blake3()
        pos = 0
        if data is not None:
            sink(0, data)
            blobs = iter([data])
        else:
            blobs = blob_stream(self.repo, node.content, fetch, sink, self.phases)
        for blob in blobs:
            with span("verify"):
                hasher.update(blob)
            pos += len(blob)
            self.progress.add_bytes(len(blob))
        if pos != node.size or hasher.digest() != node.content_hash:
            raise IntegrityError("restored content does not match the snapshot's content hash")
        with span("write"):
            if node.sparse:
                os.ftruncate(fd, pos)  # a hole at the end was never written
            size = os.fstat(fd).st_size
        if size != node.size:
            raise IntegrityError(f"the file holds {size} bytes after writing, not {node.size}")

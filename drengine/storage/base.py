"""The ``Backend`` contract every storage implementation keeps.

Objects are named by ``/``-separated strings (``config``, ``data/ab/ab12...``). The contract:

- ``put`` is atomic: a reader sees the whole object or none of it, never a part. Callers only
  ever write an existing name again with identical bytes (names are content hashes), so
  implementations may replace or keep the old object.
- ``put_file`` is ``put`` of the first ``size`` bytes of an open file (read with ``pread``,
  its offset untouched): a local backend copies them in the kernel, no copy in memory.
- ``put_if_absent`` is atomic and exclusive: of concurrent callers exactly one succeeds, the
  others get ``ObjectExists``. Locks rely on it.
- ``get`` with ``offset``/``length`` returns exactly that many bytes; a short read is a
  ``StorageError``, a missing object ``ObjectNotFound``.
- ``list`` yields every object whose name starts with ``prefix``, in no particular order.
- ``delete`` of a missing object is not an error (deletes may be retried).
- Every method may raise ``StorageError``; none returns partial results silently.

Beyond the seven operations (``put_file`` has a default) a backend declares its
``Capabilities`` once. The optional operations (S3 Object Lock, temporary files) are part of
the protocol too, so callers never probe with ``getattr``: ``BackendDefaults`` gives every
backend that lacks one a defined answer, and ``BackendWrapper`` forwards all of them, so a
wrapper never hides a capability.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from drengine.core.errors import StorageError, UsageError

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do beyond the seven operations (``docs/storage.md``)."""

    remote: bool = False  # reads cost a network round trip: metadata is worth caching locally
    object_lock: bool = False  # set_retention, object_lock_enabled, retained_until really work
    temporary_files: bool = False  # may leave temporary files behind: list/remove_temporary


@dataclass(frozen=True, slots=True)
class TemporaryFile:
    """A file an interrupted or failed write left behind; never an object."""

    name: str  # relative to the repository, "/"-separated: "data/ab/.tmp-0123456789abcdef"
    size: int
    mtime: float  # seconds since the epoch: only old ones are safe to remove


@runtime_checkable
class Backend(Protocol):
    """Seven operations on immutable, named objects (see the module docstring), the backend's
    capabilities, and the optional operations they announce."""

    @property
    def location(self) -> str:
        """Where the objects live, for messages (a path or URL, never a secret)."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def put(self, name: str, data: Buffer) -> None: ...

    def put_file(self, name: str, fd: int, size: int) -> None: ...

    def put_if_absent(self, name: str, data: Buffer) -> None: ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, name: str) -> None: ...

    def stat(self, name: str) -> ObjectInfo: ...

    def close(self) -> None: ...

    # Optional operations; see ``BackendDefaults`` for what a backend without them does.

    def set_retention(self, mode: str, days: int, exempt: tuple[str, ...] = ()) -> None:
        """Write every later object not named ``exempt*`` under S3 Object Lock ``mode`` for
        ``days`` after its write."""
        ...

    def object_lock_enabled(self) -> bool:
        """Whether the storage (the bucket) has S3 Object Lock enabled."""
        ...

    def retained_until(self, name: str) -> datetime | None:
        """The end of ``name``'s retention (possibly past), None if it has none."""
        ...

    def list_temporary(self) -> Sequence[TemporaryFile]:
        """Temporary files failed or killed writes left behind (never listed by ``list``)."""
        ...

    def remove_temporary(self, name: str) -> None:
        """Remove one temporary file; ``ValueError`` for a name that is not one."""
        ...


class BackendDefaults:
    """The optional operations of a backend without the capability; backends inherit it and
    override ``capabilities`` and the operations they really support."""

    capabilities = Capabilities()

    @property
    def location(self) -> str:
        raise NotImplementedError

    def put(self, name: str, data: Buffer) -> None:
        raise NotImplementedError

    def put_file(self, name: str, fd: int, size: int) -> None:
        put_mapped(self.put, name, fd, size)

    @property
    def remote(self) -> bool:
        """Old spelling of ``capabilities.remote``, still read by callers with ``getattr``."""
        return self.capabilities.remote

    def set_retention(self, mode: str, days: int, exempt: tuple[str, ...] = ()) -> None:
        raise UsageError(f"{self.location} does not support S3 Object Lock")

    def object_lock_enabled(self) -> bool:
        return False

    def retained_until(self, name: str) -> datetime | None:
        check_name(name)
        return None

    def list_temporary(self) -> Sequence[TemporaryFile]:
        return []

    def remove_temporary(self, name: str) -> None:
        check_name(name)


class BackendWrapper:
    """Forwards every operation, the capabilities and the optional operations to ``inner``;
    a wrapper (retries, caching, faults) overrides only what it changes."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def remote(self) -> bool:
        """Old spelling of ``capabilities.remote``, still read by callers with ``getattr``."""
        return self.capabilities.remote

    def put(self, name: str, data: Buffer) -> None:
        self.inner.put(name, data)

    def put_file(self, name: str, fd: int, size: int) -> None:
        # Through this wrapper's own ``put``: what it does to a put (retry, cache, faults)
        # applies to this one too.
        put_mapped(self.put, name, fd, size)

    def put_if_absent(self, name: str, data: Buffer) -> None:
        self.inner.put_if_absent(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(name, offset, length)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def close(self) -> None:
        self.inner.close()

    def set_retention(self, mode: str, days: int, exempt: tuple[str, ...] = ()) -> None:
        self.inner.set_retention(mode, days, exempt)

    def object_lock_enabled(self) -> bool:
        return self.inner.object_lock_enabled()

    def retained_until(self, name: str) -> datetime | None:
        return self.inner.retained_until(name)

    def list_temporary(self) -> Sequence[TemporaryFile]:
        return self.inner.list_temporary()

    def remove_temporary(self, name: str) -> None:
        self.inner.remove_temporary(name)


def check_name(name: str) -> None:
    """Refuse names that could escape a directory-based backend."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object name {name!r}")


def put_mapped(put: Callable[[str, Buffer], None], name: str, fd: int, size: int) -> None:
    """``put_file`` by ``put`` of the file mapped: for backends without a better way."""
    with file_view(fd, size) as view:
        put(name, view)


@contextmanager
def file_view(fd: int, size: int) -> Iterator[memoryview]:
    """The first ``size`` bytes of an open file, mapped (read whole where it cannot be);
    ``StorageError`` if the file is shorter or cannot be read."""
    try:
        if os.fstat(fd).st_size < size:
            raise OSError(0, f"the file to store is shorter than {size} bytes")
    except OSError as e:
        raise StorageError(f"cannot read the file to store: {e.strerror or e}") from e
    if size == 0:
        yield memoryview(b"")
        return
    try:
        # Populated at once: one call instead of a page fault per 4 KiB as it is read.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        m = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
    except OSError:  # a file system that cannot map files
        try:
            data = read_file(fd, size)
        except OSError as e:
            raise StorageError(f"cannot read the file to store: {e.strerror or e}") from e
        yield memoryview(data)
        return
    v = memoryview(m)
    try:
        yield v
    finally:
        v.release()
        with contextlib.suppress(BufferError):  # a failed put's traceback still holds a view
            m.close()


def read_file(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of an open file; ``OSError`` if it is shorter."""
    parts, done = [], 0
    while done < size:
        part = os.pread(fd, size - done, done)
        if not part:
            raise OSError(0, f"the file is shorter than {size} bytes")
        parts.append(part)
        done += len(part)
    return b"".join(parts)

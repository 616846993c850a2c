"""The ``Backend`` contract every storage implementation keeps.

Objects are named by ``/``-separated strings (``config``, ``data/ab/ab12...``). The contract:

- ``put`` is atomic: a reader sees the whole object or none of it, never a part. Callers only
  ever write an existing name again with identical bytes (names are content hashes), so
  implementations may replace or keep the old object.
- ``put_if_absent`` is atomic and exclusive: of concurrent callers exactly one succeeds, the
  others get ``ObjectExists``. Locks rely on it.
- ``get`` with ``offset``/``length`` returns exactly that many bytes; a short read is a
  ``StorageError``, a missing object ``ObjectNotFound``.
- ``list`` yields every object whose name starts with ``prefix``, in no particular order.
- ``delete`` of a missing object is not an error (deletes may be retried).
- Every method may raise ``StorageError``; none returns partial results silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    size: int


@runtime_checkable
class Backend(Protocol):
    """Six operations on immutable, named objects (see the module docstring)."""

    @property
    def location(self) -> str:
        """Where the objects live, for messages (a path or URL, never a secret)."""
        ...

    def put(self, name: str, data: Buffer) -> None: ...

    def put_if_absent(self, name: str, data: Buffer) -> None: ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, name: str) -> None: ...

    def stat(self, name: str) -> ObjectInfo: ...

    def close(self) -> None: ...


def check_name(name: str) -> None:
    """Refuse names that could escape a directory-based backend."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object name {name!r}")

"""A local copy of immutable objects in front of a remote backend.

Index objects and snapshots are read by almost every command; on S3 that would be one GET
each, every time. Their names are hashes of their content, so a cached copy never goes
stale: it is either the object or damaged (checked against the name on every read, and
fetched again when damaged). Listings always go to the backend, so new and deleted objects
are seen; cached copies of objects no longer listed are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import cast

import blake3

from drengine.core.errors import StorageError
from drengine.storage.base import Backend, Buffer, ObjectInfo, check_name

log = logging.getLogger(__name__)


class CachingBackend:
    def __init__(self, inner: Backend, directory: Path, prefixes: tuple[str, ...]) -> None:
        self.inner = inner
        self.dir = directory
        self.prefixes = prefixes
        self.hits = 0

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def remote(self) -> bool:
        return bool(getattr(self.inner, "remote", False))

    def _cached(self, name: str) -> bool:
        return name.startswith(self.prefixes)

    def _path(self, name: str) -> Path:
        check_name(name)
        return self.dir / name

    def _store(self, name: str, data: bytes) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:  # a cache that cannot be written only costs speed
            log.debug("cannot cache %s: %s", name, e)

    def put(self, name: str, data: Buffer) -> None:
        self.inner.put(name, data)
        if self._cached(name):
            self._store(name, bytes(data))

    def put_if_absent(self, name: str, data: Buffer) -> None:
        self.inner.put_if_absent(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if not self._cached(name):
            return self.inner.get(name, offset, length)
        path = self._path(name)
        data: bytes | None = None
        with contextlib.suppress(OSError):
            data = path.read_bytes()
        if data is not None and blake3.blake3(data).hexdigest() == name.rsplit("/", 1)[-1]:
            self.hits += 1
        else:
            data = self.inner.get(name)  # not cached, or the copy is damaged
            self._store(name, data)
        end = len(data) if length is None else offset + length
        if offset < 0 or end > len(data):
            raise StorageError(f"short read of {name}: wanted bytes {offset}-{end} of {len(data)}")
        return data if (offset, end) == (0, len(data)) else data[offset:end]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        infos = list(self.inner.list(prefix))
        if self._cached(prefix):
            self._forget_missing(prefix, {i.name for i in infos})
        return iter(infos)

    def _forget_missing(self, prefix: str, present: set[str]) -> None:
        base = self.dir / prefix.rstrip("/") if prefix.endswith("/") else None
        if base is None or not base.is_dir():
            return
        for path in base.rglob("*"):
            name = path.relative_to(self.dir).as_posix()
            if path.is_file() and name not in present:
                path.unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        if self._cached(name):
            self._path(name).unlink(missing_ok=True)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def retained_until(self, name: str) -> datetime | None:  # optional: S3 Object Lock
        retained_until = getattr(self.inner, "retained_until", None)
        return None if retained_until is None else cast("datetime | None", retained_until(name))

    def close(self) -> None:
        self.inner.close()

"""A local copy of immutable objects in front of a remote backend.

Index objects and snapshots are read by almost every command; on S3 that would be one GET
each, every time. Their names are hashes of their content, so a cached copy never goes
stale: it is either the object or damaged (checked against the name on every read, and
fetched again when damaged). Listings always go to the backend, so new and deleted objects
are seen; cached copies of objects no longer listed are removed.

The cache directory is created 0700 and its files 0600, whatever the umask: it holds the
repository's index and snapshots (encrypted, but nobody else's business). A copy that cannot
be written (a full disk) only costs speed, and leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import blake3

from drengine.core.errors import StorageError
from drengine.core.fsutil import FILE_MODE, make_dirs, unlink_quietly
from drengine.storage.base import Backend, BackendWrapper, Buffer, ObjectInfo, check_name

log = logging.getLogger(__name__)


class CachingBackend(BackendWrapper):
    def __init__(self, inner: Backend, directory: Path, prefixes: tuple[str, ...]) -> None:
        super().__init__(inner)
        self.dir = directory
        self.prefixes = prefixes
        self.hits = 0

    def _cached(self, name: str) -> bool:
        return name.startswith(self.prefixes)

    def _path(self, name: str) -> Path:
        check_name(name)
        return self.dir / name

    def _store(self, name: str, data: bytes) -> None:
        path = self._path(name)
        # Unique per call: two threads caching one object must not write one file.
        tmp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
        try:
            make_dirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:  # a cache that cannot be written only costs speed
            unlink_quietly(tmp)
            log.debug("cannot cache %s: %s", name, e)
        except BaseException:
            unlink_quietly(tmp)
            raise

    def put(self, name: str, data: Buffer) -> None:
        self.inner.put(name, data)
        if self._cached(name):
            self._store(name, bytes(data))

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
        try:
            for path in base.rglob("*"):
                name = path.relative_to(self.dir).as_posix()
                if path.is_file() and name not in present:
                    unlink_quietly(path)  # also stale .tmp- files of killed processes
        except OSError as e:  # the cache is an optimisation: never fail a listing for it
            log.debug("cannot clean the cache under %s: %s", base, e)

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        if self._cached(name):
            unlink_quietly(self._path(name))

"""An in-memory backend for tests; thread-safe, forgets everything on exit."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError
from drengine.storage.base import BackendDefaults, Buffer, Capabilities, ObjectInfo, check_name


class MemoryBackend(BackendDefaults):
    capabilities = Capabilities()  # nothing optional: no round trips, no Object Lock, no temp files

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return "memory:"

    def put(self, name: str, data: Buffer) -> None:
        check_name(name)
        with self._lock:
            self._objects[name] = bytes(data)

    def put_if_absent(self, name: str, data: Buffer) -> None:
        check_name(name)
        with self._lock:
            if name in self._objects:
                raise ObjectExists(f"object {name} already exists in memory backend")
            self._objects[name] = bytes(data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        with self._lock:
            data = self._objects.get(name)
        if data is None:
            raise ObjectNotFound(f"object {name} not found in memory backend")
        end = len(data) if length is None else offset + length
        if offset < 0 or end > len(data):
            raise StorageError(
                f"short read of {name}: wanted bytes {offset}-{end}, object has {len(data)}"
            )
        return data[offset:end]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(n, len(d)) for n, d in self._objects.items() if n.startswith(prefix)]
        for name, size in items:
            yield ObjectInfo(name, size)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self._objects.pop(name, None)

    def stat(self, name: str) -> ObjectInfo:
        check_name(name)
        with self._lock:
            data = self._objects.get(name)
        if data is None:
            raise ObjectNotFound(f"object {name} not found in memory backend")
        return ObjectInfo(name, len(data))

    def close(self) -> None:
        pass

    # Test helpers: reach behind the contract to damage objects on purpose.
    def raw_objects(self) -> dict[str, bytes]:
        return self._objects

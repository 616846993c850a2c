"""The local object cache: fewer remote reads, never a stale or damaged answer."""

from __future__ import annotations

from pathlib import Path

import blake3

from drengine.storage.cache import CachingBackend
from drengine.storage.memory import MemoryBackend


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.gets += 1
        return super().get(name, offset, length)


def _name(prefix: str, data: bytes) -> str:
    return prefix + blake3.blake3(data).hexdigest()


def test_cached_prefixes_are_read_once_and_checked(tmp_path: Path) -> None:
    inner = CountingBackend()
    cache = CachingBackend(inner, tmp_path, ("index/",))
    data = b"an index object"
    name = _name("index/", data)
    inner.put(name, data)
    assert cache.get(name) == data
    assert cache.get(name) == data
    assert cache.get(name, 3, 5) == data[3:8]
    assert inner.gets == 1
    # A damaged local copy is noticed and fetched again.
    (tmp_path / name).write_bytes(b"garbage")
    assert cache.get(name) == data
    assert inner.gets == 2


def test_objects_gone_from_the_backend_leave_the_cache(tmp_path: Path) -> None:
    inner = CountingBackend()
    cache = CachingBackend(inner, tmp_path, ("snapshots/",))
    data = b"a snapshot"
    name = _name("snapshots/", data)
    cache.put(name, data)
    assert (tmp_path / name).exists()
    inner.delete(name)  # deleted by another host
    assert list(cache.list("snapshots/")) == []
    assert not (tmp_path / name).exists()


def test_other_prefixes_pass_through(tmp_path: Path) -> None:
    inner = CountingBackend()
    cache = CachingBackend(inner, tmp_path, ("index/",))
    inner.put("data/ab/abc", b"pack")
    assert cache.get("data/ab/abc") == b"pack"
    assert cache.get("data/ab/abc") == b"pack"
    assert inner.gets == 2
    assert not (tmp_path / "data").exists()


def test_threads_caching_one_object_at_once(tmp_path: Path) -> None:
    import threading

    inner = CountingBackend()
    data = b"an index object read by every thread" * 1000
    name = _name("index/", data)
    inner.put(name, data)
    cache = CachingBackend(inner, tmp_path, ("index/",))
    barrier = threading.Barrier(8)
    got: list[bytes] = []

    def read() -> None:
        barrier.wait()
        got.append(cache.get(name))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [data] * 8
    assert (tmp_path / name).read_bytes() == data
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_is_a_backend_with_the_inner_capabilities(tmp_path: Path) -> None:
    from drengine.storage.base import Backend

    cache = CachingBackend(MemoryBackend(), tmp_path, ("index/",))
    assert isinstance(cache, Backend)
    assert cache.capabilities == MemoryBackend.capabilities
    assert cache.retained_until("index/x") is None

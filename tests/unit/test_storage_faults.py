"""``FaultyBackend``: each kind of fault hits exactly the calls its rule names, reproducibly."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError
from drengine.storage.base import Backend, Capabilities, ObjectInfo
from drengine.storage.faults import Call, FaultyBackend, no_space
from drengine.storage.local import LocalBackend
from drengine.storage.memory import MemoryBackend
from drengine.storage.retry import RetryingBackend, RetryPolicy, TransientStorageError


def _faulty() -> tuple[MemoryBackend, FaultyBackend]:
    inner = MemoryBackend()
    return inner, FaultyBackend(inner)


def test_without_rules_everything_passes_through_and_is_counted() -> None:
    inner, b = _faulty()
    assert isinstance(b, Backend)
    b.put("data/ab/abcd", b"pack")
    b.put_if_absent("locks/l1", b"lock")
    assert b.get("data/ab/abcd", 1, 2) == b"ac"
    assert [i.name for i in b.list("data/")] == ["data/ab/abcd"]
    assert b.stat("locks/l1") == ObjectInfo("locks/l1", 4)
    b.delete("locks/l1")
    assert inner.raw_objects() == {"data/ab/abcd": b"pack"}
    assert b.count() == 6 and b.count("put") == 1 and b.count("list") == 1
    assert b.calls[0] == Call("put", "data/ab/abcd", 1, ())
    assert b.calls[3] == Call("list", "data/", 1, ())
    assert b.injected() == []


def test_fail_the_nth_call_of_a_method_under_a_prefix() -> None:
    inner, b = _faulty()
    b.fail("put", nth=3, prefix="data/")
    b.put("index/i1", b"i")  # other prefixes neither fail nor count for the rule
    b.put("data/aa/1", b"1")
    b.put("data/aa/2", b"2")
    with pytest.raises(StorageError, match="injected fault: put data/aa/3 in memory:"):
        b.put("data/aa/3", b"3")
    b.put("data/aa/4", b"4")  # only the third
    assert sorted(inner.raw_objects()) == ["data/aa/1", "data/aa/2", "data/aa/4", "index/i1"]
    assert b.injected("fail") == [Call("put", "data/aa/3", 4, ("fail",))]
    (rule,) = b.faults
    assert (rule.seen, rule.fired) == (4, 1)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (StorageError, StorageError),
        (TransientStorageError, TransientStorageError),
        (ObjectNotFound, ObjectNotFound),
        (no_space, StorageError),
    ],
)
def test_fail_raises_the_given_exception(error: type[Exception], kind: type[Exception]) -> None:
    _, b = _faulty()
    b.put("config", b"c")
    b.fail("get", error=error)
    with pytest.raises(kind) as exc:
        b.get("config")
    assert type(exc.value) is kind


def test_no_space_looks_like_a_full_disk() -> None:
    _, b = _faulty()
    b.fail("put", error=no_space)
    with pytest.raises(StorageError, match="No space left on device") as exc:
        b.put("data/ab/abcd", b"x")
    assert isinstance(exc.value.__cause__, OSError)
    assert exc.value.__cause__.errno == errno.ENOSPC


def test_fail_with_an_instance_raises_that_instance() -> None:
    _, b = _faulty()
    boom = ObjectExists("taken")
    b.fail("put_if_absent", error=boom)
    with pytest.raises(ObjectExists) as exc:
        b.put_if_absent("locks/l", b"x")
    assert exc.value is boom


def test_landed_failure_writes_then_loses_the_answer() -> None:
    inner, b = _faulty()
    b.fail("put_if_absent", error=TransientStorageError, landed=True, times=1)
    with pytest.raises(TransientStorageError):
        b.put_if_absent("locks/mine", b"my lock")
    assert inner.raw_objects() == {"locks/mine": b"my lock"}
    # The retry wrapper recognises its own write (retry.py) behind the faulty storage.
    inner2, b2 = _faulty()
    b2.fail("put_if_absent", error=TransientStorageError, landed=True, times=1)
    RetryingBackend(b2, sleep=lambda _s: None).put_if_absent("locks/mine", b"my lock")
    assert inner2.raw_objects() == {"locks/mine": b"my lock"}
    assert b2.count("put_if_absent") == 2 and b2.count("get") == 1


def test_landed_needs_a_write() -> None:
    _, b = _faulty()
    with pytest.raises(ValueError, match="landed"):
        b.fail("get", landed=True)


def test_times_caps_the_failures_and_retries_ride_them_out() -> None:
    inner, b = _faulty()
    b.fail("put", error=TransientStorageError, times=2)
    sleeps: list[float] = []
    RetryingBackend(b, sleep=sleeps.append).put("data/ab/abcd", b"pack")
    assert inner.raw_objects() == {"data/ab/abcd": b"pack"}
    assert b.count("put") == 3 and len(sleeps) == 2


def test_fail_list_surfaces_when_read() -> None:
    _, b = _faulty()
    b.put("index/i1", b"x")
    b.fail("list", prefix="index/", error=TransientStorageError)
    listing = b.list("index/")
    with pytest.raises(TransientStorageError):
        next(listing)
    assert [i.name for i in b.list("")] == ["index/i1"]  # prefix "" does not match "index/"


def test_delay_sleeps_before_the_call() -> None:
    inner = MemoryBackend()
    sleeps: list[float] = []
    b = FaultyBackend(inner, sleep=sleeps.append).delay("get", 2.5, nth=2)
    b.put("config", b"c")
    for _ in range(3):
        assert b.get("config") == b"c"
    assert sleeps == [2.5]
    assert [c.n for c in b.injected("delay")] == [2]


def test_delay_and_failure_on_one_call() -> None:
    sleeps: list[float] = []
    b = FaultyBackend(MemoryBackend(), sleep=sleeps.append)
    b.fail("stat").delay("stat", 1.0)  # rules chain; the delay comes first
    with pytest.raises(StorageError):
        b.stat("config")
    assert sleeps == [1.0]
    assert b.calls == [Call("stat", "config", 1, ("delay", "fail"))]


def test_truncate_get_returns_fewer_bytes() -> None:
    _, b = _faulty()
    b.put("data/ab/abcd", bytes(range(100)))
    b.truncate("get", keep=10, times=1)
    assert b.get("data/ab/abcd") == bytes(range(10))
    assert b.get("data/ab/abcd") == bytes(range(100))


def test_truncate_put_stores_fewer_bytes_always_fewer() -> None:
    inner, b = _faulty()
    b.truncate("put", prefix="data/")
    b.truncate("put_if_absent", keep=1000)  # more than the data: still one byte short
    b.put("data/ab/abcd", b"0123456789")
    b.put("config", b"whole")
    b.put_if_absent("locks/l", b"lock")
    assert inner.raw_objects() == {"data/ab/abcd": b"01234", "config": b"whole", "locks/l": b"loc"}


def test_truncate_list_drops_entries() -> None:
    _, b = _faulty()
    for i in range(4):
        b.put(f"index/i{i}", b"x")
    b.truncate("list", keep=1)
    assert len(list(b.list("index/"))) == 1


def test_corrupt_get_flips_one_byte_at_a_position() -> None:
    inner, b = _faulty()
    b.put("index/i1", b"\x00" * 8)
    b.corrupt("get", position=-1)
    assert b.get("index/i1") == b"\x00" * 7 + b"\xff"
    assert inner.raw_objects()["index/i1"] == b"\x00" * 8  # stored bytes untouched


def test_corrupt_put_damages_what_is_stored() -> None:
    inner, b = _faulty()
    b.corrupt("put", prefix="data/")
    payload = bytes(64)
    b.put("data/ab/abcd", payload)
    stored = inner.raw_objects()["data/ab/abcd"]
    assert len(stored) == 64 and sum(x != 0 for x in stored) == 1
    b.put("data/ab/empty", b"")  # nothing to flip
    assert inner.raw_objects()["data/ab/empty"] == b""


def _pattern(seed: int) -> list[bool]:
    _, b = _faulty()
    b.put("index/i1", bytes(32))
    b.put("snapshots/s1", bytes(32))
    b.corrupt("get", prefix="index/", probability=0.5, seed=seed)
    hits = [b.get("index/i1") != bytes(32) for _ in range(40)]
    assert all(b.get("snapshots/s1") == bytes(32) for _ in range(5))  # other prefix untouched
    return hits


def test_probability_is_reproducible_with_a_seed() -> None:
    first = _pattern(seed=1)
    assert first == _pattern(seed=1)
    assert first != _pattern(seed=2)
    assert 5 < sum(first) < 35  # about half


def test_clear_heals_the_storage() -> None:
    _, b = _faulty()
    b.fail("put")
    with pytest.raises(StorageError):
        b.put("config", b"c")
    b.clear()
    b.put("config", b"c")
    assert b.get("config") == b"c"


@pytest.mark.parametrize(
    "make",
    [
        lambda b: b.fail("rename"),
        lambda b: b.fail("put", nth=0),
        lambda b: b.fail("put", nth=1, probability=0.5),
        lambda b: b.fail("put", probability=1.5),
        lambda b: b.corrupt("stat"),
        lambda b: b.corrupt("list"),
        lambda b: b.truncate("delete"),
        lambda b: b.delay("get", -1),
    ],
)
def test_bad_rules_are_refused(make: object) -> None:
    _, b = _faulty()
    with pytest.raises(ValueError):
        make(b)  # type: ignore[operator]


def test_thread_safe_counting_and_exactly_one_nth() -> None:
    inner, b = _faulty()
    b.fail("put", nth=50)
    failures: list[str] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        for i in range(25):
            name = f"data/{t:02x}/{i:04x}"
            try:
                b.put(name, b"x")
            except StorageError:
                with lock:
                    failures.append(name)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.count("put") == 200 and len(b.calls) == 200
    assert len(failures) == 1 and len(inner.raw_objects()) == 199
    assert sorted(c.n for c in b.calls) == list(range(1, 201))


def test_capabilities_and_optional_operations_are_forwarded(tmp_path: Path) -> None:
    b = FaultyBackend(LocalBackend(tmp_path))
    assert b.capabilities == Capabilities(temporary_files=True)
    (tmp_path / ".tmp-0123").write_bytes(b"left over")
    assert [t.name for t in b.list_temporary()] == [".tmp-0123"]
    b.remove_temporary(".tmp-0123")
    assert b.list_temporary() == []


def test_faults_reach_the_caller_through_retries_as_one_error() -> None:
    _, b = _faulty()
    b.fail("get", error=TransientStorageError)
    clock = {"now": 0.0}

    def sleep(s: float) -> None:
        clock["now"] += s

    r = RetryingBackend(b, RetryPolicy(budget=5), sleep=sleep, clock=lambda: clock["now"])
    with pytest.raises(StorageError, match="gave up after"):
        r.get("config")
    assert b.count("get") > 1

"""The ``Backend`` contract (``drengine/storage/base.py``), one suite for every backend.

A new backend joins by adding one entry to ``_FACTORIES`` (for a remote one, a factory that
calls ``pytest.skip`` when no test endpoint is configured). The wrappers (retries, the object
cache, fault injection without faults) join too: wrapping must not break the contract. Tests
that only make sense for one backend are at the end of the file.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError
from drengine.storage import local as local_mod
from drengine.storage.base import Backend, Capabilities, ObjectInfo
from drengine.storage.cache import CachingBackend
from drengine.storage.faults import FaultyBackend
from drengine.storage.local import LocalBackend
from drengine.storage.memory import MemoryBackend
from drengine.storage.retry import RetryingBackend


def _moto_s3(tmp: Path) -> Backend:
    """``S3Backend`` on moto's in-process fake S3; the fake ends when the backend closes."""
    from moto import mock_aws

    from drengine.storage.s3 import S3Backend

    class MotoS3Backend(S3Backend):
        def close(self) -> None:
            super().close()
            mock.stop()

    mock = mock_aws()
    mock.start()
    backend = MotoS3Backend("contract", "repo/prefix", region="us-east-1")
    backend.client.create_bucket(Bucket="contract")
    return backend


def _cached_local(tmp: Path) -> Backend:
    # As the repository uses it (repo.py): index and snapshots cached, in a directory apart.
    return CachingBackend(LocalBackend(tmp / "repo"), tmp / "cache", ("index/", "snapshots/"))


_FACTORIES: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda tmp: MemoryBackend(),
    "local": lambda tmp: LocalBackend(tmp),
    "s3": _moto_s3,
    "retry-memory": lambda tmp: RetryingBackend(MemoryBackend()),
    "retry-local": lambda tmp: RetryingBackend(LocalBackend(tmp)),
    "cache-local": _cached_local,
    "faulty-memory": lambda tmp: FaultyBackend(MemoryBackend()),
}
# Where "exactly one of N concurrent put_if_absent callers wins" is a real property. Not moto:
# its conditional write checks and writes outside one lock, so two racers win now and then.
# The integration suite runs the race on SeaweedFS, a real S3 server.
_EXCLUSIVE_UNDER_RACE = {"local", "retry-local", "cache-local", "seaweedfs"}

# Known contract violations: (backend, case) -> (reason, how the test fails). Each is a strict
# xfail that must fail with that exception, so a different failure is still reported.
_DID_NOT_RAISE = pytest.fail.Exception
_KNOWN_BUGS: dict[tuple[str, str], tuple[str, type[BaseException]]] = {}


def _expect_bug(request: pytest.FixtureRequest, kind: str, case: str) -> None:
    known = _KNOWN_BUGS.get((kind, case))
    if known is not None:
        reason, raises = known
        request.applymarker(
            pytest.mark.xfail(reason=f"product bug: {reason}", raises=raises, strict=True)
        )


@pytest.fixture(params=sorted(_FACTORIES))
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(backend_kind: str, tmp_path: Path) -> Iterator[Backend]:
    b = _FACTORIES[backend_kind](tmp_path)
    yield b
    b.close()


def _names(backend: Backend, prefix: str) -> dict[str, int]:
    infos = list(backend.list(prefix))
    names = [i.name for i in infos]
    assert len(names) == len(set(names)), f"list({prefix!r}) yielded a name twice: {names}"
    return {i.name: i.size for i in infos}


# ---- shape ------------------------------------------------------------------------------------


def test_implements_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.location, str) and backend.location
    assert isinstance(backend.capabilities, Capabilities)


def test_optional_operations_have_defined_answers(backend: Backend) -> None:
    caps = backend.capabilities
    assert getattr(backend, "remote", False) is caps.remote  # the old spelling still works
    if not caps.object_lock:
        assert backend.object_lock_enabled() is False
    backend.put("index/i1", b"x")
    assert backend.retained_until("index/i1") is None  # nothing was written under retention
    assert list(backend.list_temporary()) == []  # no write failed
    if not caps.temporary_files:
        backend.remove_temporary("data/ab/.tmp-0123")  # nothing to do, not an error


# ---- put / get --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda b: bytes(b), id="bytes"),
        pytest.param(lambda b: bytearray(b), id="bytearray"),
        pytest.param(lambda b: memoryview(b), id="memoryview"),
        pytest.param(lambda b: memoryview(b"<<" + b + b">>")[2:-2], id="memoryview-slice"),
        pytest.param(lambda b: memoryview(bytearray(b)), id="memoryview-of-bytearray"),
    ],
)
@pytest.mark.parametrize("size", [0, 1, 4096, 300_001])
def test_put_get_round_trip(backend: Backend, make: Callable[[bytes], object], size: int) -> None:
    payload = os.urandom(size)
    backend.put("data/ab/abcdef", make(payload))  # type: ignore[arg-type]
    got = backend.get("data/ab/abcdef")
    assert isinstance(got, bytes)
    assert got == payload


@pytest.mark.parametrize("size", [0, 1, 4096, 300_001])
def test_put_file_stores_the_first_size_bytes(backend: Backend, tmp_path: Path, size: int) -> None:
    payload = os.urandom(size)
    with open(tmp_path / "spool", "w+b") as f:
        f.write(payload + b"not this")
        f.flush()
        f.seek(3)
        backend.put_file("data/ab/abcdef", f.fileno(), size)
        assert f.tell() == 3  # its offset untouched
    assert backend.get("data/ab/abcdef") == payload
    assert backend.stat("data/ab/abcdef").size == size


def test_put_file_of_a_shorter_file_stores_nothing(backend: Backend, tmp_path: Path) -> None:
    with open(tmp_path / "spool", "w+b") as f:
        f.write(b"short")
        f.flush()
        with pytest.raises((StorageError, OSError)):
            backend.put_file("data/ab/abcdef", f.fileno(), 100)
    with pytest.raises(ObjectNotFound):
        backend.get("data/ab/abcdef")


def test_put_if_absent_accepts_every_buffer_type(backend: Backend) -> None:
    for i, data in enumerate([b"one", bytearray(b"two"), memoryview(b"three")]):
        backend.put_if_absent(f"locks/l{i}", data)
    assert [backend.get(f"locks/l{i}") for i in range(3)] == [b"one", b"two", b"three"]


def test_stored_object_does_not_follow_later_changes_to_the_buffer(backend: Backend) -> None:
    buf = bytearray(b"original content")
    backend.put("snapshots/s1", buf)
    backend.put_if_absent("locks/l1", buf)
    buf[:] = b"XXXXXXXXXXXXXXXX"
    assert backend.get("snapshots/s1") == b"original content"
    assert backend.get("locks/l1") == b"original content"


def test_put_same_name_again_with_identical_bytes(backend: Backend) -> None:
    backend.put("index/i1", b"same bytes")
    backend.put("index/i1", b"same bytes")
    assert backend.get("index/i1") == b"same bytes"
    assert _names(backend, "index/") == {"index/i1": 10}


def test_top_level_name_without_separator(backend: Backend) -> None:
    backend.put("config", b"{}")
    assert backend.get("config") == b"{}"
    assert backend.stat("config") == ObjectInfo("config", 2)


# ---- ranged get -------------------------------------------------------------------------------

_RANGE_DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable mod 256


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 0),
        (0, 1),
        (0, 36),
        (36, 1000),
        (255, 257),
        (len(_RANGE_DATA) - 1, 1),
        (len(_RANGE_DATA) - 20, 20),
        (0, len(_RANGE_DATA)),
        (len(_RANGE_DATA), 0),
        (5000, None),
        (0, None),
    ],
)
def test_ranged_get_returns_exactly_those_bytes(
    backend: Backend, offset: int, length: int | None
) -> None:
    backend.put("data/aa/aa00", _RANGE_DATA)
    got = backend.get("data/aa/aa00", offset, length)
    end = len(_RANGE_DATA) if length is None else offset + length
    assert isinstance(got, bytes)
    assert got == _RANGE_DATA[offset:end]
    if length is not None:
        assert len(got) == length


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (len(_RANGE_DATA) - 10, 11),
        (0, len(_RANGE_DATA) + 1),
        (len(_RANGE_DATA), 1),
        (len(_RANGE_DATA) + 100, 4),
    ],
)
def test_short_ranged_read_is_a_storage_error(backend: Backend, offset: int, length: int) -> None:
    backend.put("data/aa/aa00", _RANGE_DATA)
    with pytest.raises(StorageError) as exc:
        backend.get("data/aa/aa00", offset, length)
    assert not isinstance(exc.value, ObjectNotFound)


# ---- missing objects --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config", "data/zz/zz11", "index/nothing", "keys/k"])
def test_missing_object_is_object_not_found(backend: Backend, name: str) -> None:
    backend.put("data/ab/abcd", b"present")  # the store is not empty
    with pytest.raises(ObjectNotFound):
        backend.get(name)
    with pytest.raises(ObjectNotFound):
        backend.get(name, 0, 1)
    with pytest.raises(ObjectNotFound):
        backend.get(name, 10, None)
    with pytest.raises(ObjectNotFound):
        backend.stat(name)


def test_missing_object_in_empty_store_is_object_not_found(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound):
        backend.get("config")
    with pytest.raises(ObjectNotFound):
        backend.stat("config")


def _non_object_name(backend: Backend, where: str) -> str:
    """A name that is no object but a prefix of one ("dir") or below one ("below")."""
    backend.put("data/ab/abcd", b"present")
    return "data/ab" if where == "dir" else "data/ab/abcd/x"


@pytest.mark.parametrize("where", ["dir", "below"])
def test_get_of_a_name_that_is_not_an_object(
    backend: Backend, backend_kind: str, where: str, request: pytest.FixtureRequest
) -> None:
    _expect_bug(request, backend_kind, f"get-{where}")
    name = _non_object_name(backend, where)
    with pytest.raises(ObjectNotFound):
        backend.get(name)


@pytest.mark.parametrize("where", ["dir", "below"])
def test_stat_of_a_name_that_is_not_an_object(
    backend: Backend, backend_kind: str, where: str, request: pytest.FixtureRequest
) -> None:
    _expect_bug(request, backend_kind, f"stat-{where}")
    name = _non_object_name(backend, where)
    with pytest.raises(ObjectNotFound):
        backend.stat(name)


@pytest.mark.parametrize("where", ["dir", "below"])
def test_delete_of_a_name_that_is_not_an_object(
    backend: Backend, backend_kind: str, where: str, request: pytest.FixtureRequest
) -> None:
    _expect_bug(request, backend_kind, f"delete-{where}")
    name = _non_object_name(backend, where)
    backend.delete(name)
    assert backend.get("data/ab/abcd") == b"present"


# ---- put_if_absent ----------------------------------------------------------------------------


def test_put_if_absent_is_exclusive(backend: Backend) -> None:
    backend.put_if_absent("locks/a", b"first")
    with pytest.raises(ObjectExists):
        backend.put_if_absent("locks/a", b"second")
    with pytest.raises(ObjectExists):
        backend.put_if_absent("locks/a", b"first")
    assert backend.get("locks/a") == b"first"
    assert _names(backend, "locks/") == {"locks/a": 5}


def test_put_if_absent_refuses_a_name_written_by_put(backend: Backend) -> None:
    backend.put("config", b"from put")
    with pytest.raises(ObjectExists):
        backend.put_if_absent("config", b"from put_if_absent")
    assert backend.get("config") == b"from put"


def test_put_if_absent_after_delete_succeeds(backend: Backend) -> None:
    backend.put_if_absent("locks/a", b"one")
    backend.delete("locks/a")
    backend.put_if_absent("locks/a", b"two")
    assert backend.get("locks/a") == b"two"


def _race_put_if_absent(backend: Backend, name: str, threads_n: int) -> list[str]:
    """``threads_n`` threads released at once, each ``put_if_absent(name, own payload)``."""
    barrier = threading.Barrier(threads_n)
    outcomes = [""] * threads_n

    def attempt(i: int) -> None:
        payload = f"writer {i} ".encode() * 1000
        barrier.wait()
        try:
            backend.put_if_absent(name, payload)
            outcomes[i] = "won"
        except ObjectExists:
            outcomes[i] = "lost"
        except BaseException as e:  # reported by the caller's assertion, not swallowed
            outcomes[i] = f"error {type(e).__name__}: {e}"

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_put_if_absent_concurrent_callers_exactly_one_wins(
    backend: Backend, backend_kind: str
) -> None:
    if backend_kind not in _EXCLUSIVE_UNDER_RACE:
        pytest.skip(f"{backend_kind}: exclusivity under a race is tested on local and SeaweedFS")
    rounds = 8
    for rnd in range(rounds):
        name = f"locks/race{rnd}"
        outcomes = _race_put_if_absent(backend, name, 16)
        assert sorted(set(outcomes)) == ["lost", "won"], outcomes
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert len(winners) == 1, outcomes
        # The stored object is the winner's, whole.
        assert backend.get(name) == f"writer {winners[0]} ".encode() * 1000
    assert set(_names(backend, "locks/")) == {f"locks/race{r}" for r in range(rounds)}


# ---- list -------------------------------------------------------------------------------------

_TREE = {
    "config": b"c" * 3,
    "keys/k1": b"k" * 5,
    "data/ab/abcd": b"1" * 10,
    "data/ab/abef": b"2" * 11,
    "data/ab/abcd0": b"3" * 12,
    "data/cd/cdef": b"4" * 13,
    "index/i1": b"i" * 7,
    "index/i2": b"j" * 8,
    "snapshots/s1": b"s" * 9,
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", set(_TREE)),
        ("data/", {"data/ab/abcd", "data/ab/abef", "data/ab/abcd0", "data/cd/cdef"}),
        ("data/ab", {"data/ab/abcd", "data/ab/abef", "data/ab/abcd0"}),
        ("data/ab/", {"data/ab/abcd", "data/ab/abef", "data/ab/abcd0"}),
        ("data/ab/abcd", {"data/ab/abcd", "data/ab/abcd0"}),
        ("data/ab/abcd0", {"data/ab/abcd0"}),
        ("dat", {"data/ab/abcd", "data/ab/abef", "data/ab/abcd0", "data/cd/cdef"}),
        ("data/c", {"data/cd/cdef"}),
        ("index/", {"index/i1", "index/i2"}),
        ("index/i2", {"index/i2"}),
        ("keys/", {"keys/k1"}),
        ("config", {"config"}),
        ("snapshots/", {"snapshots/s1"}),
        ("locks/", set()),
        ("nothing/", set()),
        ("data/zz", set()),
        ("index/i3", set()),
    ],
)
def test_list_by_prefix(backend: Backend, prefix: str, expected: set[str]) -> None:
    for name, data in _TREE.items():
        backend.put(name, data)
    got = _names(backend, prefix)
    assert set(got) == expected
    assert got == {n: len(_TREE[n]) for n in expected}  # sizes too


def test_list_with_a_prefix_below_an_object_is_empty(
    backend: Backend, backend_kind: str, request: pytest.FixtureRequest
) -> None:
    _expect_bug(request, backend_kind, "list-below")
    backend.put("data/ab/abcd", b"x")
    backend.put("config", b"y")
    assert _names(backend, "data/ab/abcd/") == {}
    assert _names(backend, "config/") == {}


def test_list_of_empty_store_is_empty(backend: Backend) -> None:
    assert _names(backend, "") == {}
    assert _names(backend, "data/") == {}


def test_list_items_are_object_infos(backend: Backend) -> None:
    backend.put("index/i1", b"12345")
    (info,) = list(backend.list("index/"))
    assert isinstance(info, ObjectInfo)
    assert info == ObjectInfo("index/i1", 5)


def test_list_prefix_cannot_reach_outside_the_store(
    backend: Backend, backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _expect_bug(request, backend_kind, "list-escape")
    backend.put("data/ab/abcd", b"inside")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_bytes(b"not an object")
    for prefix in [f"../{outside.name}/", "../", f"{outside}/", "/"]:
        try:
            # islice: never walk more than a few entries of whatever lies outside
            got = [i.name for i in itertools.islice(backend.list(prefix), 5)]
        except ValueError:
            got = []
        assert got == [], f"list({prefix!r}) yielded {got}"


# ---- delete -----------------------------------------------------------------------------------


def test_delete_removes_the_object(backend: Backend) -> None:
    backend.put("snapshots/s1", b"x")
    backend.put("snapshots/s2", b"y")
    backend.delete("snapshots/s1")
    with pytest.raises(ObjectNotFound):
        backend.get("snapshots/s1")
    with pytest.raises(ObjectNotFound):
        backend.stat("snapshots/s1")
    assert _names(backend, "snapshots/") == {"snapshots/s2": 1}


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("snapshots/s1", b"x")
    backend.delete("snapshots/s1")
    backend.delete("snapshots/s1")  # already gone: not an error
    backend.delete("snapshots/never")  # never existed
    backend.delete("data/zz/zz99")  # not even its directory exists
    assert _names(backend, "") == {}


# ---- stat -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 123_457])
def test_stat_size(backend: Backend, size: int) -> None:
    backend.put("data/ab/abcd", b"\xa5" * size)
    assert backend.stat("data/ab/abcd") == ObjectInfo("data/ab/abcd", size)


# ---- names ------------------------------------------------------------------------------------

_INVALID_NAMES = ["../x", "/abs", "a//b", "", ".", "..", "a/../b", "a/./b", "data/", "x/.."]


@pytest.mark.parametrize("name", _INVALID_NAMES)
def test_invalid_name_rejected_on_write(backend: Backend, name: str) -> None:
    with pytest.raises(ValueError):
        backend.put(name, b"x")
    with pytest.raises(ValueError):
        backend.put_if_absent(name, b"x")
    assert _names(backend, "") == {}


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b"])
def test_invalid_name_rejected_on_read_and_delete(
    backend: Backend, backend_kind: str, name: str, request: pytest.FixtureRequest
) -> None:
    _expect_bug(request, backend_kind, "invalid-read")
    for op in (backend.get, backend.stat, backend.delete):
        with pytest.raises(ValueError):
            op(name)


# ---- local backend only -----------------------------------------------------------------------


def test_local_crashed_writer_temp_file_is_not_an_object(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("data/ab/abcd", b"real")
    backend.put("config", b"cfg")
    # What a writer killed between creating and renaming its temp file leaves behind.
    (tmp_path / "data" / "ab" / ".tmp-0123456789abcdef").write_bytes(b"partial")
    (tmp_path / ".tmp-fedcba9876543210").write_bytes(b"partial")
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / ".tmp-00").write_bytes(b"partial")
    assert _names(backend, "") == {"data/ab/abcd": 4, "config": 3}
    assert _names(backend, "data/") == {"data/ab/abcd": 4}
    assert _names(backend, "data/ab/") == {"data/ab/abcd": 4}
    assert _names(backend, "index/") == {}
    assert _names(backend, ".tmp-") == {}
    # and writing goes on as usual next to them
    backend.put("data/ab/abef", b"more")
    assert set(_names(backend, "data/ab")) == {"data/ab/abcd", "data/ab/abef"}


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("data/ab/abcd", b"x" * 1000)
    backend.put("data/ab/abcd", b"x" * 1000)
    backend.put_if_absent("locks/l1", b"lock")
    with pytest.raises(ObjectExists):
        backend.put_if_absent("locks/l1", b"other")
    leftovers = [p for p in tmp_path.rglob(".tmp-*")]
    assert leftovers == []
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["data/ab/abcd", "locks/l1"]


@pytest.mark.parametrize("errno_", [errno.EXDEV, errno.ENOSYS])
def test_local_put_file_without_copy_file_range_reads_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_: int
) -> None:
    """Where the kernel cannot copy between the two files, the pack is read and written."""
    calls = []

    def refuse(*args: object) -> int:
        calls.append(args)
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(local_mod, "_COPY_PIECE", 1000)
    payload = os.urandom(5555)
    with open(tmp_path / "spool", "w+b") as f:
        f.write(payload)
        f.flush()
        LocalBackend(tmp_path / "repo").put_file("data/ab/abcd", f.fileno(), len(payload))
    assert calls
    assert (tmp_path / "repo" / "data" / "ab" / "abcd").read_bytes() == payload
    assert not list((tmp_path / "repo").rglob(".tmp-*"))


def test_local_objects_are_files_at_their_names(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("data/ab/abcd", b"payload")
    assert (tmp_path / "data" / "ab" / "abcd").read_bytes() == b"payload"
    assert backend.location == str(tmp_path)

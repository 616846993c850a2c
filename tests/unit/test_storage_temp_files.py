"""Temporary files of the local backend and the object cache: a failed write removes its own,
and those a killed writer left can be listed and removed (check reports, prune removes)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest

from drengine.core.errors import ObjectExists, StorageError
from drengine.storage.base import TemporaryFile
from drengine.storage.cache import CachingBackend
from drengine.storage.local import LocalBackend
from drengine.storage.memory import MemoryBackend

KiB = 1024


def _leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".tmp-*"))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system, so a write really fails with ENOSPC."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or str(e)
        pytest.skip(f"cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): {detail!r}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True, timeout=30)


# ---- a full disk ---------------------------------------------------------------------------


def test_full_disk_leaves_no_temporary_file(small_tmpfs: Path) -> None:
    backend = LocalBackend(small_tmpfs / "repo")
    with pytest.raises(StorageError, match="No space left on device") as exc:
        backend.put("data/ab/abcd", os.urandom(2048 * KiB))
    assert str(small_tmpfs / "repo" / "data" / "ab" / "abcd") in str(exc.value)
    with pytest.raises(StorageError, match="No space left on device"):
        backend.put_if_absent("locks/big", os.urandom(2048 * KiB))
    assert _leftovers(small_tmpfs) == []
    assert backend.list_temporary() == []
    # The space came back: a write that fits succeeds (a leftover would have taken ~1 MiB).
    backend.put("data/ab/abef", os.urandom(600 * KiB))
    assert backend.stat("data/ab/abef").size == 600 * KiB


def test_full_disk_under_the_object_cache_costs_only_speed(small_tmpfs: Path) -> None:
    inner = MemoryBackend()
    data = os.urandom(2048 * KiB)
    name = "index/" + blake3.blake3(data).hexdigest()
    inner.put(name, data)
    cache = CachingBackend(inner, small_tmpfs / "cache", ("index/",))
    assert cache.get(name) == data
    assert _leftovers(small_tmpfs) == []


# ---- failures injected into the system calls -----------------------------------------------


def _failing_after(
    real: Callable[..., int], calls_ok: int, error: BaseException
) -> Callable[..., int]:
    """``os.write`` that writes ``calls_ok`` times (one byte each), then raises ``error``."""
    left = {"n": calls_ok}

    def write(fd: int, data: object) -> int:
        if left["n"] == 0:
            raise error
        left["n"] -= 1
        return real(fd, memoryview(data)[:1])  # type: ignore[arg-type]

    return write


@pytest.mark.parametrize("op", ["put", "put_if_absent"])
def test_enospc_from_write_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    backend = LocalBackend(tmp_path)
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", _failing_after(os.write, 3, enospc))
    with pytest.raises(StorageError, match=f"cannot write {tmp_path}/locks/l1: No space left"):
        getattr(backend, op)("locks/l1", b"0123456789")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    assert list(backend.list("")) == []


def test_interrupted_write_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(tmp_path)
    monkeypatch.setattr(os, "write", _failing_after(os.write, 1, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        backend.put("data/ab/abcd", b"0123456789")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("call", ["fsync", "close", "replace"])
def test_io_error_after_the_data_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    backend = LocalBackend(tmp_path)
    real = getattr(os, call)

    def fail(*args: object) -> None:
        if call == "close":
            real(*args)  # do close the descriptor, then report a (delayed) write error
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(StorageError, match="Input/output error"):
        backend.put("data/ab/abcd", b"payload")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


def test_file_system_without_hard_links_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(tmp_path)

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(src), None, str(dst))

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(StorageError, match="hard links"):
        backend.put_if_absent("locks/l1", b"lock")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


def test_object_cache_write_failure_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner = MemoryBackend()
    data = b"an index object" * 100
    name = "index/" + blake3.blake3(data).hexdigest()
    inner.put(name, data)
    cache = CachingBackend(inner, tmp_path / "cache", ("index/",))
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", _failing_after(os.write, 2, enospc))
    assert cache.get(name) == data  # the copy could not be kept: only speed is lost
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "cache" / name).exists()


# ---- leftovers of killed writers -----------------------------------------------------------


def _leave(root: Path, rel: str, size: int, mtime: float) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"p" * size)
    os.utime(path, (mtime, mtime))


def test_list_temporary_finds_leftovers_everywhere(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("data/ab/abcd", b"object")
    backend.put("config", b"cfg")
    _leave(tmp_path, "data/ab/.tmp-0123456789abcdef", 7, 1_000_000.0)
    _leave(tmp_path, ".tmp-fedcba9876543210", 3, 2_000_000.0)
    _leave(tmp_path, "index/.tmp-00", 0, 3_000_000.0)
    found = sorted(backend.list_temporary(), key=lambda t: t.name)
    assert found == [
        TemporaryFile(".tmp-fedcba9876543210", 3, 2_000_000.0),
        TemporaryFile("data/ab/.tmp-0123456789abcdef", 7, 1_000_000.0),
        TemporaryFile("index/.tmp-00", 0, 3_000_000.0),
    ]
    assert {i.name for i in backend.list("")} == {"data/ab/abcd", "config"}


def test_list_temporary_of_a_missing_repository_is_empty(tmp_path: Path) -> None:
    assert LocalBackend(tmp_path / "nothing").list_temporary() == []


def test_remove_temporary_removes_only_temporary_files(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("data/ab/abcd", b"object")
    _leave(tmp_path, "data/ab/.tmp-0123", 5, 1_000_000.0)
    (tmp_path / "data" / ".tmp-dir").mkdir()
    backend.remove_temporary("data/ab/.tmp-0123")
    backend.remove_temporary("data/ab/.tmp-0123")  # already gone: fine
    assert backend.list_temporary() == []
    for name in ["data/ab/abcd", "config", "data/.tmp-dir", "../.tmp-x", "/.tmp-x", "data/ab"]:
        with pytest.raises(ValueError):
            backend.remove_temporary(name)
    assert backend.get("data/ab/abcd") == b"object"
    assert (tmp_path / "data" / ".tmp-dir").is_dir()


def test_put_if_absent_losing_leaves_no_temporary_file(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put_if_absent("locks/l1", b"first")
    with pytest.raises(ObjectExists):
        backend.put_if_absent("locks/l1", b"second")
    assert backend.list_temporary() == []

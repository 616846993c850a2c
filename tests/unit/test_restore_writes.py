"""Every byte restore or dump writes reaches its destination, or the entry is an error: short
writes are continued, a write that takes nothing fails that file, nothing unverified is put
under a final name, and no hard link points at a file that failed verification."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from test_restore_support import Builder

from drengine.core.errors import RestoreError
from drengine.core.model import Snapshot
from drengine.engine.dump import run_dump
from drengine.engine.restore import run_restore
from drengine.repository import layout
from drengine.repository.repo import Repository
from drengine.storage.memory import MemoryBackend

CHUNKS = [os.urandom(40_000), bytes(50_000), os.urandom(30_001)]


def _snapshot(repo: Repository, password: bytes) -> tuple[Repository, Snapshot]:
    b = Builder(repo, password)
    files = [
        b.file(b"small", b"x" * 5000),
        b.file(b"large", *CHUNKS),
        b.file(b"sparse", *CHUNKS, sparse=True),
        b.file(b"empty"),
    ]
    return b.snapshot([b.dir(b"d", files)])


def _expected() -> dict[str, bytes]:
    whole = b"".join(CHUNKS)
    return {"small": b"x" * 5000, "large": whole, "sparse": whole, "empty": b""}


def test_short_pwrites_are_continued(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, snap = _snapshot(mem_repo, repo_password)
    real = os.pwrite
    calls = []

    def at_most_777(fd: int, data: Any, offset: int) -> int:
        calls.append(len(data))
        return real(fd, memoryview(data)[:777], offset)

    monkeypatch.setattr(os, "pwrite", at_most_777)
    result = run_restore(reader, snap, str(tmp_path / "t"))
    for name, content in _expected().items():
        assert (tmp_path / "t" / "d" / name).read_bytes() == content, name
    assert result.errors == []
    assert len(calls) > 100


def test_pwrite_taking_nothing_fails_the_file(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, snap = _snapshot(mem_repo, repo_password)
    target = tmp_path / "t"
    (target / "d").mkdir(parents=True)
    (target / "d" / "small").write_bytes(b"stale content from before\n")
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: 0)
    result = run_restore(reader, snap, str(target))
    failed = {os.path.basename(e["path"]): e["error"] for e in result.errors}
    assert set(failed) == {"small", "large", "sparse"}, result.errors
    assert all("took no bytes" in msg for msg in failed.values()), failed
    assert sorted(os.listdir(target / "d")) == ["empty", "small"]  # no temporaries left
    assert (target / "d" / "small").read_bytes() == b"stale content from before\n"
    assert result.files == 1


def test_content_that_did_not_reach_the_file_is_caught(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that claims success but stored something else (a lying file system)."""
    reader, snap = _snapshot(mem_repo, repo_password)
    real = os.pwrite

    def flipping(fd: int, data: Any, offset: int) -> int:
        view = bytes(memoryview(data))
        return real(fd, bytes([view[0] ^ 1]) + view[1:], offset) if view else 0

    monkeypatch.setattr(os, "pwrite", flipping)
    result = run_restore(reader, snap, str(tmp_path / "t"))
    assert {os.path.basename(e["path"]) for e in result.errors} == {"small", "large", "sparse"}
    assert sorted(os.listdir(tmp_path / "t" / "d")) == ["empty"]


def _damage_blob(repo: Repository, blob_id: bytes) -> None:
    backend = repo.backend
    assert isinstance(backend, MemoryBackend)
    entry = repo.lookup(blob_id)
    name = layout.pack_name(entry.pack_id.hex())
    data = bytearray(backend.raw_objects()[name])
    data[entry.offset + entry.length // 2] ^= 0x40
    backend.raw_objects()[name] = bytes(data)


def test_hard_link_is_never_made_to_an_unverified_file(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path
) -> None:
    b = Builder(mem_repo, repo_password)
    hard = {"links": 3, "inode": 42, "device": 9}
    content = os.urandom(20_000)
    names = [b.file(n, content, **hard) for n in (b"first", b"second", b"third")]
    reader, snap = b.snapshot([b.dir(b"d", names), b.file(b"other", b"fine\n")])
    _damage_blob(reader, names[0].content[0])
    target = tmp_path / "t"
    (target / "d").mkdir(parents=True)
    (target / "d" / "first").write_bytes(b"stale file planted at the first name\n")

    result = run_restore(reader, snap, str(target))
    errors = {os.path.basename(e["path"]): e["error"] for e in result.errors}
    assert set(errors) == {"first", "second", "third"}
    assert "not restored: a hard link of" in errors["second"]
    assert sorted(os.listdir(target / "d")) == ["first"]
    assert (target / "d" / "first").read_bytes() == b"stale file planted at the first name\n"
    assert os.stat(target / "d" / "first").st_nlink == 1
    assert (target / "other").read_bytes() == b"fine\n"


def test_hard_link_names_with_different_content_restore_separately(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path
) -> None:
    """Same inode, different content (a repaired or crafted tree): linking would give one
    name the other's content, which was never verified against its own hash."""
    b = Builder(mem_repo, repo_password)
    hard = {"links": 2, "inode": 42, "device": 9}
    reader, snap = b.snapshot([b.file(b"a", b"one", **hard), b.file(b"b", b"two", **hard)])
    result = run_restore(reader, snap, str(tmp_path / "t"))
    assert result.errors == []
    assert (tmp_path / "t/a").read_bytes() == b"one" and (tmp_path / "t/b").read_bytes() == b"two"


# ---- dump ------------------------------------------------------------------------------------


class Stingy(io.RawIOBase):
    """A raw stream that takes at most ``n`` bytes per write and says "would block"
    (returns None) every third call."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int | None:
        self.calls += 1
        if self.calls % 3 == 0:
            return None
        taken = bytes(memoryview(b)[: self.n])
        self.data += taken
        return len(taken)


def _dump_snapshot(repo: Repository, password: bytes) -> tuple[Repository, Snapshot, bytes]:
    b = Builder(repo, password)
    chunks = [os.urandom(100_000), os.urandom(70_000), b"tail"]
    reader, snap = b.snapshot([b.file(b"f", *chunks)])
    return reader, snap, b"".join(chunks)


def test_dump_continues_short_and_would_block_writes(
    mem_repo: Repository, repo_password: bytes
) -> None:
    reader, snap, content = _dump_snapshot(mem_repo, repo_password)
    out = Stingy(1000)
    assert run_dump(reader, snap, "/f", out) == len(content)
    assert bytes(out.data) == content


def test_dump_to_a_non_blocking_pipe(mem_repo: Repository, repo_password: bytes) -> None:
    reader, snap, content = _dump_snapshot(mem_repo, repo_password)
    r, w = os.pipe()
    os.set_blocking(w, False)
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 4096):
            got.extend(chunk)

    t = threading.Thread(target=drain)
    t.start()
    try:
        for buffering in (0, -1):  # a raw stream, then a buffered one
            with open(w, "wb", buffering=buffering, closefd=False) as out:
                run_dump(reader, snap, "/f", out)
    finally:
        os.close(w)
        t.join()
        os.close(r)
    assert bytes(got) == content * 2


def test_dump_to_a_full_device_is_one_clear_error(
    mem_repo: Repository, repo_password: bytes
) -> None:
    reader, snap, _ = _dump_snapshot(mem_repo, repo_password)
    with (
        open("/dev/full", "wb") as out,
        pytest.raises(RestoreError, match="cannot write /f to the output: No space left"),
    ):
        run_dump(reader, snap, "/f", out)

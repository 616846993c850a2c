"""Packs filled in temporary files (``pack_spool``): the same packs as in memory, nothing left
in the temporary directory, and a full one fails the backup in one sentence, no snapshot."""

from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path

import pytest

from drengine.core.errors import StorageError
from drengine.engine.backup import BackupOptions, run_backup
from drengine.repository import layout, pack_spool
from drengine.repository.layout import BlobType
from drengine.repository.pack import decrypt_blob, parse_trailer
from drengine.repository.pack_spool import SpoolingPackWriter
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage import base as storage_base
from drengine.storage.local import LocalBackend

KEY = bytes(range(32))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("short", [False, True])
@pytest.mark.parametrize("gather", [1 << 20, 64, 1])
def test_a_spooled_pack_opens_like_one_built_in_memory(
    gather: int, short: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pack_spool, "_GATHER", gather)
    if short:  # every gathered write stops halfway through its first buffer
        real_writev = os.writev

        def writev(fd: int, buffers: list[bytes]) -> int:
            return real_writev(fd, [buffers[0][: len(buffers[0]) // 2]])

        monkeypatch.setattr(os, "writev", writev)
    rng = random.Random(gather)
    payloads = [rng.randbytes(rng.choice([0, 1, 100, 5000, 200_000])) for _ in range(60)]
    w = SpoolingPackWriter(KEY)
    for i, p in enumerate(payloads):
        w.add(BlobType.DATA, bytes([i]) * 32, p, len(p) + 1)
    records = list(w.records)
    pack = w.finish()
    try:
        with pack.view() as buf:
            data = bytes(buf)
    finally:
        pack.close()
    assert len(data) == len(pack)
    assert pack.object_id == layout.object_id(data)  # hashed as it was written
    salt, parsed = parse_trailer(KEY, data, "spooled pack")
    assert parsed == records
    for rec, p in zip(parsed, payloads, strict=True):
        ct = data[rec.offset : rec.offset + rec.length]
        assert decrypt_blob(KEY, salt, rec, ct, "blob") == p


def test_the_temporary_file_has_no_name_and_closes() -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    fds = _open_fds()
    w = SpoolingPackWriter(KEY)
    w.add(BlobType.DATA, b"x" * 32, b"payload", 8)
    # Unlinked at once: a crash or a kill -9 leaves nothing behind.
    assert not [n for n in set(os.listdir(tempfile.gettempdir())) - before if "drengine" in n]
    pack = w.finish()
    pack.close()
    assert _open_fds() == fds
    w2 = SpoolingPackWriter(KEY)
    w2.discard()
    assert _open_fds() == fds


def test_a_full_temporary_directory_fails_the_backup_without_a_snapshot(
    repo_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(3000))
    repo: Repository = repo_factory(LocalBackend(tmp_path / "repo"))
    real_write, real_writev = os.write, os.writev

    def full(fd: int) -> None:  # only the unlinked spool files are "full"
        if os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)"):
            raise OSError(errno.ENOSPC, "No space left on device")

    def write(fd: int, data: bytes) -> int:
        full(fd)
        return real_write(fd, data)

    def writev(fd: int, buffers: list[bytes]) -> int:
        full(fd)
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "writev", writev)
    fds = _open_fds()
    with pytest.raises(StorageError) as e:
        run_backup(repo, BackupOptions([FileSource([str(src)])]))
    msg = str(e.value)
    assert "cannot write a temporary pack file in" in msg and "No space left" in msg
    assert "TMPDIR" in msg
    assert repo.snapshot_ids() == []
    assert _open_fds() == fds  # every spool file closed, also those of the failed sealers
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "writev", real_writev)
    snap = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot
    assert snap is not None  # room again: the next backup works


def test_a_failed_upload_holding_a_view_reports_its_own_error() -> None:
    w = SpoolingPackWriter(KEY)
    w.add(BlobType.DATA, b"y" * 32, b"payload", 8)
    pack = w.finish()
    kept: list[memoryview] = []
    # The put's own error, not "cannot close exported pointers":
    with pytest.raises(OSError, match="disk full"), pack.view() as buf:
        kept.append(memoryview(buf)[4:])  # as a backend's write loop holds one
        raise OSError("disk full")
    pack.close()
    kept.clear()


def test_a_temporary_directory_that_cannot_map_files_is_read_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = SpoolingPackWriter(KEY)
    w.add(BlobType.DATA, b"z" * 32, os.urandom(3000), 3001)
    pack = w.finish()
    with pack.view() as buf:
        mapped = bytes(buf)

    def no_mmap(*_a: object, **_k: object) -> object:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(storage_base.mmap, "mmap", no_mmap)
    with pack.view() as buf:
        assert bytes(buf) == mapped
    pack.close()


def test_no_usable_temporary_directory_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    def nowhere(*_a: object, **_k: object) -> object:
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found")

    monkeypatch.setattr(pack_spool.tempfile, "TemporaryFile", nowhere)
    monkeypatch.setattr(pack_spool.tempfile, "gettempdir", nowhere)
    monkeypatch.setenv("TMPDIR", "/nonexistent/tmp")
    with pytest.raises(StorageError, match="temporary pack file in /nonexistent/tmp: "):
        SpoolingPackWriter(KEY)

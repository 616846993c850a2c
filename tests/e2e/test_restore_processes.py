"""Restore in writer processes: the same tree as an in-process restore, and nothing lost
when a worker dies, cannot start or is stopped. What a worker did not finish, the parent
writes itself; only files a worker reported verified and in place count as restored."""

from __future__ import annotations

import os
import pickle
import sys
import threading
from pathlib import Path

import pytest
from e2e_support import assert_same_tree, restored_path, scan_tree

from drengine.core.errors import Cancelled
from drengine.core.model import Node, Snapshot
from drengine.core.progress import Progress
from drengine.core.workers import Worker
from drengine.engine import restore_procs
from drengine.engine import restore_wire as wire
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.restore import run_restore
from drengine.engine.restore_batches import Batch
from drengine.engine.restore_plan import Entry
from drengine.engine.tree_paths import find_node
from drengine.repository import layout
from drengine.repository.index_entry import IndexEntry
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.local import LocalBackend
from drengine.storage.options import BackendSpec, S3Options
from drengine.storage.retry import RetryingBackend
from drengine.storage.url import open_backend, reopen_spec

FILES = 300


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Small files in many directories, a few multi-blob files, empty files, hard links,
    symlinks, odd modes and times."""
    root = tmp_path / "src"
    for d in range(12):
        sub = root / f"d{d:02}" / "deeper"
        sub.mkdir(parents=True)
        for i in range(FILES // 12):
            (sub / f"f{i}.txt").write_bytes(os.urandom(40 + (i * 97) % 3000))
        os.utime(sub / "f0.txt", ns=(1_500_000_000_000_000_000, 1_500_000_000_123_456_789))
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "zeros.bin").write_bytes(bytes(200_000))
    (root / "empty").write_bytes(b"")
    os.link(root / "big.bin", root / "big.link")
    os.symlink("d00/deeper/f1.txt", root / "sym")
    (root / "d01" / "deeper" / "f2.txt").chmod(0o600)
    return root


def _backup(repo: Repository, source: Path) -> Snapshot:
    snap = run_backup(repo, BackupOptions([FileSource([str(source)])])).snapshot
    assert snap is not None
    return snap


@pytest.fixture
def local_repo(repo_factory, tmp_path: Path) -> Repository:  # type: ignore[no-untyped-def]
    return repo_factory(LocalBackend(tmp_path / "repo"))


def test_processes_restore_the_same_tree(
    local_repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = _backup(local_repo, source)
    monkeypatch.setenv(restore_procs.ENV, "0")
    run_restore(local_repo, snap, str(tmp_path / "inproc"))
    monkeypatch.setenv(restore_procs.ENV, "2")
    started = _count_starts(monkeypatch)
    progress = Progress()
    result = run_restore(local_repo, snap, str(tmp_path / "procs"), progress=progress)
    assert started == [2]
    assert result.errors == []
    assert result.files == FILES + 3  # + big, zeros, empty (big.link is a hard link)
    assert progress.files_done == result.files
    assert progress.bytes_done == result.bytes
    expected = scan_tree(restored_path(tmp_path / "inproc", source))
    assert_same_tree(expected, scan_tree(restored_path(tmp_path / "procs", source)))
    assert_same_tree(scan_tree(source), scan_tree(restored_path(tmp_path / "procs", source)))
    assert not list((tmp_path / "procs").rglob(".drengine-*"))  # no temporary file left


def _count_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    started: list[int] = []
    real = restore_procs._start

    def counting(n: int) -> list[Worker]:
        started.append(n)
        return real(n)

    monkeypatch.setattr(restore_procs, "_start", counting)
    return started


# A worker that does real work, then dies: after its first finished item, or at once.
_DIE_AFTER_FIRST = """
import os, sys
from drengine.engine import restore_wire as w
real = w.send
def send(sock, obj):
    real(sock, obj)
    if isinstance(obj, w.Done):
        os._exit(9)
w.send = send
from drengine.engine.restore_worker import main
sys.exit(main(sys.argv))
"""


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-c", _DIE_AFTER_FIRST],
        [sys.executable, "-c", "import os; os._exit(3)"],
        ["/nonexistent/python"],
    ],
    ids=["dies-after-one-item", "dies-at-start", "cannot-start"],
)
def test_what_a_dead_worker_left_is_written_by_the_parent(
    local_repo: Repository,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    snap = _backup(local_repo, source)
    monkeypatch.setenv(restore_procs.ENV, "2")
    monkeypatch.setattr(restore_procs, "_BATCH_FILES", 8)  # many items: some are in flight
    monkeypatch.setattr(restore_procs, "_WORKER", command)
    result = run_restore(local_repo, snap, str(tmp_path / "t"))
    assert result.errors == []
    assert result.files == FILES + 3
    assert_same_tree(scan_tree(source), scan_tree(restored_path(tmp_path / "t", source)))


def test_damage_found_by_a_worker_is_reported_by_the_parent(
    local_repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's failed file is written again in-process; the failure is reported once,
    with the parent's message, and nothing unverified is under a final name."""
    snap = _backup(local_repo, source)
    victim = source / "d03" / "deeper" / "f5.txt"
    node = find_node(local_repo, snap, str(victim))
    assert node is not None
    entry = local_repo.lookup(node.content[0])
    pack = tmp_path / "repo" / layout.pack_name(entry.pack_id.hex())
    raw = bytearray(pack.read_bytes())
    raw[entry.offset + 3] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(raw))
    monkeypatch.setenv(restore_procs.ENV, "2")
    result = run_restore(local_repo, snap, str(tmp_path / "t"))
    bad = str(restored_path(tmp_path / "t", victim))
    assert [e["path"] for e in result.errors] == [bad]
    assert not os.path.lexists(bad)
    assert result.files == FILES + 3 - 1


def test_cancel_stops_the_workers_and_leaves_no_temporary_files(
    local_repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = _backup(local_repo, source)
    monkeypatch.setenv(restore_procs.ENV, "2")
    monkeypatch.setattr(restore_procs, "_BATCH_FILES", 4)
    cancel = threading.Event()
    progress = Progress()
    real = Progress.file_done

    def done_then_cancel(self: Progress, path: str = "") -> None:
        real(self, path)
        if self.files_done >= 20:
            cancel.set()

    monkeypatch.setattr(Progress, "file_done", done_then_cancel)
    from drengine.engine.restore import Restorer
    from drengine.repository.locks import locked

    with locked(local_repo, exclusive=False, operation="restore"):
        restorer = Restorer(local_repo, str(tmp_path / "t"), [], progress, cancel=cancel)
        with pytest.raises(Cancelled):
            restorer.run(snap)
    assert FILES + 3 > progress.files_done >= 20
    assert not list((tmp_path / "t").rglob(".drengine-*"))


def test_only_storage_another_process_can_open_is_used(
    mem_repo: Repository, tmp_path: Path
) -> None:
    assert reopen_spec(mem_repo.backend) is None
    assert restore_procs.process_count(mem_repo, 10**6) == 0
    local = LocalBackend(tmp_path / "r")
    assert reopen_spec(local) == BackendSpec("file://" + str(tmp_path / "r"))
    # S3 is opened again with the options it was opened with (so the same retry budget);
    # a retry wrapper built by hand (tests, fault injection) names no way to reopen.
    opts = S3Options(endpoint_url="http://127.0.0.1:1", retry_budget=7.0)
    s3 = open_backend("s3://bkt/pre", opts)
    assert reopen_spec(s3) == BackendSpec("s3://bkt/pre", opts)
    assert reopen_spec(RetryingBackend(local)) is None


def test_a_file_whose_blobs_the_index_cannot_place_costs_that_file_only(
    local_repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = _backup(local_repo, source)
    node = find_node(local_repo, snap, str(source / "big.bin"))
    assert node is not None and len(node.content) > 1
    local_repo.index.mark_missing(local_repo.lookup(node.content[0]).pack_id)
    monkeypatch.setenv(restore_procs.ENV, "2")
    result = run_restore(local_repo, snap, str(tmp_path / "t"))
    paths = {e["path"] for e in result.errors}
    assert str(restored_path(tmp_path / "t", source / "big.bin")) in paths
    assert result.files > 0


def test_a_batch_reaches_a_writer_with_every_field_it_writes() -> None:
    """``FlatBatch`` carries what ``FileWriter`` reads of a file, exactly."""
    pack = b"\x01" * 32
    items = []
    for i, (sparse, xattrs) in enumerate([(False, []), (True, [(b"user.a", b"\x00\xff")])]):
        node = Node(
            b"f\xff%d" % i, "file", 0o4755, 1000 + i, 2000, "u", "g", -5 + i, 7, 1 << 40,
            9, 10, 3, 0, None, xattrs, [bytes([i]) * 32], bytes([9 - i]) * 32, None, sparse,
        )  # fmt: skip
        ie = IndexEntry(pack, layout.BlobType.DATA, (1 << 33) + i, 4096, 1 << 20)
        items.append((Entry(i + 3, node.name, node), node, ie))
    sent = pickle.loads(pickle.dumps(wire.outgoing(wire.BatchItem(Batch(pack, 5, 9, items)))))
    got = wire.unflat(sent)
    assert (got.batch.pack_id, got.batch.start, got.batch.end) == (pack, 5, 9)
    used = ("name", "type", "mode", "uid", "gid", "mtime_ns", "size", "sparse", "xattrs")
    for (e, n, ie), (e2, n2, ie2) in zip(items, got.batch.items, strict=True):
        assert (e2.dir, e2.name, e2.node is n2, ie2) == (e.dir, e.name, True, ie)
        assert [getattr(n2, f) for f in used] == [getattr(n, f) for f in used]
        assert (n2.content, n2.content_hash) == (n.content, n.content_hash)

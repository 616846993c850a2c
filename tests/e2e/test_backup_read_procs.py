"""Small files read in worker processes (``files_read_procs``): the same snapshot as an
in-process walk, whatever the workers do (never start, die after a batch), and a worker
that reads each file exactly as the walk would."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from pathlib import Path

import blake3
import pytest

from drengine.core import workers as workers_mod
from drengine.core.model import Node, encode_node
from drengine.engine.backup import BackupOptions, BackupResult, run_backup
from drengine.engine.tree_paths import find_node
from drengine.pipeline.small_blobs import SmallBlobs
from drengine.repository.repo import Repository
from drengine.sources import files_read_procs
from drengine.sources.files import FileSource
from drengine.sources.files_meta import node_from_stat
from drengine.sources.files_read_procs import ENV
from drengine.sources.files_read_worker import FAILED, GREW, OK, read_one

_ONE_BATCH = """\
import sys
import time
from drengine.core.workers import recv, send
from drengine.sources import files_read_worker as w
import socket
sock = socket.socket(fileno=int(sys.argv[1]))
blobs = recv(sock)
number, files = recv(sock)
send(sock, (number, [w.read_one(blobs, p, i) for p, i in files]))
sys.exit(0)  # and read no more: what it was sent after that is the backup's to read
"""


def _tree(root: Path) -> Path:
    src = root / "src"
    for d in range(5):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(60):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(i * 37) + b"x" * (i % 7) * 100)
        (src / f"d{d}" / "same").write_bytes(b"duplicate content\n" * 50)  # dedup across dirs
    (src / "empty").write_bytes(b"")
    (src / "big").write_bytes(os.urandom(300_000))  # chunked by a reader thread
    (src / "link").symlink_to("d0/f1")
    os.link(src / "d1" / "f3", src / "hard")
    os.mkfifo(src / "fifo")
    with contextlib.suppress(OSError):  # a file system without user attributes: the rest holds
        os.setxattr(src / "d2" / "f5", b"user.note", b"kept")
    return src


def _backup(
    repo: Repository, src: Path, env: str, monkeypatch: pytest.MonkeyPatch, path: Path | None = None
) -> Node:
    """The node of ``path`` (default: ``src``) in a new snapshot of ``src``."""
    monkeypatch.setenv(ENV, env)
    result: BackupResult = run_backup(
        repo, BackupOptions([FileSource([str(src)])], use_files_cache=False)
    )
    assert result.errors == []
    node = find_node(repo, result.snapshot, str(path or src))
    assert node is not None
    return node


@pytest.fixture
def repo(repo_factory) -> Repository:  # type: ignore[no-untyped-def]
    r: Repository = repo_factory()
    return r


def test_workers_store_what_the_walk_would(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _tree(tmp_path)
    alone = _backup(repo, src, "0", monkeypatch)
    started: list[int] = []
    real = files_read_procs.workers_mod.start

    def counting(n: int, command: list[str]) -> list[workers_mod.Worker]:
        started.append(n)
        return real(n, command)

    monkeypatch.setattr(files_read_procs.workers_mod, "start", counting)
    helped = _backup(repo, src, "2", monkeypatch)
    assert started == [2]
    assert helped.subtree is not None
    assert helped.subtree == alone.subtree  # the same bytes of every tree below
    node = _backup(repo, src, "2", monkeypatch, src / "d2" / "f5")
    if os.listxattr(src / "d2" / "f5"):
        assert node.xattrs == [(b"user.note", b"kept")]


@pytest.mark.parametrize("worker", ["never starts", "dies after one batch", "missing"])
def test_what_no_worker_answers_for_is_read_here(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: str
) -> None:
    src = _tree(tmp_path)
    alone = _backup(repo, src, "0", monkeypatch)
    script = tmp_path / "one_batch.py"
    script.write_text(_ONE_BATCH)
    command = {
        "never starts": [sys.executable, "-c", "raise SystemExit(0)"],
        "dies after one batch": [sys.executable, str(script)],
        "missing": [str(tmp_path / "no-such-python")],
    }[worker]
    monkeypatch.setattr(files_read_procs, "_WORKER", command)
    monkeypatch.setattr(files_read_procs, "BATCH_FILES", 8)  # many batches to lose
    assert _backup(repo, src, "2", monkeypatch).subtree == alone.subtree


def test_a_worker_reads_as_the_walk_does(tmp_path: Path) -> None:
    blobs = SmallBlobs(b"k" * 32, 3, 1000)
    f = tmp_path / "f"
    f.write_bytes(b"hello " * 100)
    kind, size, blob_id, content_hash, payload, text, mtime, ctime = read_one(
        blobs, os.fsencode(f), f.stat().st_ino
    )
    assert (kind, size) == (OK, 600)
    assert blob_id == blake3.blake3(b"hello " * 100, key=b"k" * 32).digest()
    assert content_hash == blake3.blake3(b"hello " * 100).digest()
    assert payload[0] == 1  # zstd
    st = f.stat()
    assert (mtime, ctime) == (st.st_mtime_ns, st.st_ctime_ns)
    # The node the walk would have built, as its JSON.
    node = node_from_stat(b"f", os.fsencode(f), os.lstat(f))
    node.content, node.content_hash = [blob_id], content_hash
    assert text == encode_node(node).encode()
    # Replaced since it was listed: another inode.
    kind, code, msg = read_one(blobs, os.fsencode(f), f.stat().st_ino + 1)
    assert (kind, code, msg) == (FAILED, 0, "changed while being backed up")
    # A symlink swapped in is not followed.
    (tmp_path / "l").symlink_to(f)
    assert read_one(blobs, os.fsencode(tmp_path / "l"), f.stat().st_ino)[:2] == (
        FAILED,
        errno.ELOOP,
    )
    # Grown past the small-file size: the backup chunks it.
    f.write_bytes(b"x" * 1001)
    assert read_one(blobs, os.fsencode(f), f.stat().st_ino) == (GREW,)
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    answer = read_one(blobs, os.fsencode(empty), empty.stat().st_ino)
    assert answer[:5] == (OK, 0, b"", blake3.blake3(b"").digest(), b"")
    assert b'"content":[]' in answer[5]


def test_files_read_by_workers_are_cached_for_the_next_backup(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files cache rows and directory records of files a worker read give the next
    backup its hits: nothing is read again, and the trees are the same."""
    src = _tree(tmp_path)
    time.sleep(0.1)  # past the racy-clean margin: no file is too new to be cached
    monkeypatch.setenv(ENV, "2")
    first = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot
    (src / "d3" / "f9").write_bytes(b"changed")  # one change: its directory is walked
    second = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot
    assert first.summary["files_new"] == first.summary["files_total"] > 300
    assert (second.summary["files_new"], second.summary["files_changed"]) == (0, 1)
    # Both names of the hard-linked file count, in the walk as in a reused directory.
    assert second.summary["files_total"] == first.summary["files_total"]
    monkeypatch.setenv(ENV, "0")
    alone = run_backup(repo, BackupOptions([FileSource([str(src)])], use_files_cache=False))
    assert alone.snapshot.tree == second.tree

"""Backups that must not silently lose data: symlinked parents, deep trees, unreadable
inputs, lost packs, stale or removed locks, overlapping backups, repeated calls."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from drengine.core.errors import DrengineError, LockLost
from drengine.core.model import Node, Snapshot
from drengine.engine.backup import BackupOptions, NothingBackedUp, run_backup
from drengine.engine.prune import run_prune
from drengine.pipeline.saver import BlobSaver, PacksMissing
from drengine.repository import layout
from drengine.repository.locks import STALE_AFTER, HeldLock
from drengine.repository.repo import Repository
from drengine.sources import files_walk as walker
from drengine.sources.files import FileSource
from drengine.sources.files_meta import Place
from drengine.storage.local import LocalBackend


def entries(repo: Repository, snap: Snapshot) -> dict[bytes, Node]:
    """Every path of a snapshot (iteratively: trees may be deep)."""
    out: dict[bytes, Node] = {}
    stack = [(b"", snap.tree)]
    while stack:
        prefix, tree = stack.pop()
        for node in repo.load_tree(tree):
            path = prefix + b"/" + node.name
            out[path] = node
            if node.type == "dir" and node.subtree is not None:
                stack.append((path, node.subtree))
    return out


def content(repo: Repository, node: Node) -> bytes:
    return b"".join(repo.read_blob(b) for b in node.content)


def _reopen(repo: Repository, password: bytes) -> Repository:
    return Repository.open(repo.backend, password)


# ---- what a snapshot holds ------------------------------------------------------------------


def test_a_path_below_a_symlinked_directory_is_stored_under_that_path(
    mem_repo: Repository, tmp_path: Path
) -> None:
    real = tmp_path / "srv" / "data"
    (real / "docs").mkdir(parents=True)
    (real / "docs" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "srv" / "link").symlink_to("data")
    given = tmp_path / "srv" / "link" / "docs"
    snap = run_backup(mem_repo, BackupOptions([FileSource([str(given)])])).snapshot
    mem_repo.load_index()
    found = entries(mem_repo, snap)
    link = found[os.fsencode(tmp_path / "srv" / "link")]
    assert link.type == "dir"  # the parent is recorded as the directory it leads to
    node = found[os.fsencode(given / "a.txt")]
    assert content(mem_repo, node) == b"alpha"


def test_a_symlink_given_with_a_path_below_it_keeps_that_path(
    mem_repo: Repository, tmp_path: Path
) -> None:
    (tmp_path / "data" / "docs").mkdir(parents=True)
    (tmp_path / "data" / "docs" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "link").symlink_to("data")
    result = run_backup(
        mem_repo,
        BackupOptions([FileSource([str(tmp_path / "link"), str(tmp_path / "link" / "docs")])]),
    )
    mem_repo.load_index()
    found = entries(mem_repo, result.snapshot)
    assert os.fsencode(tmp_path / "link" / "docs" / "a.txt") in found
    # The symlink itself could not be stored at the same place: that is said, not hidden.
    assert [e["path"] for e in result.errors] == [str(tmp_path / "link")]


def test_a_tree_600_levels_deep_backs_up(mem_repo: Repository, tmp_path: Path) -> None:
    deep = tmp_path / "top"
    os.makedirs(deep)
    fd = os.open(deep, os.O_RDONLY)
    try:  # build it relative to fds: the full path would not need to fit PATH_MAX
        for _ in range(600):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"bottom")
    finally:
        os.close(fd)
    snap = run_backup(mem_repo, BackupOptions([FileSource([str(deep)])])).snapshot
    mem_repo.load_index()
    found = entries(mem_repo, snap)
    leaf = os.fsencode(deep) + b"/d" * 600 + b"/leaf"
    assert content(mem_repo, found[leaf]) == b"bottom"
    assert snap.summary["dirs_total"] == 601


def test_a_tree_deeper_than_path_max_backs_up(mem_repo: Repository, tmp_path: Path) -> None:
    # 2,500 levels: full paths of 7,500 bytes, far beyond what one system call takes.
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(2500):
            os.mkdir("dd", dir_fd=fd)
            nfd = os.open("dd", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.symlink("target", "link", dir_fd=fd)
        os.setxattr(f"/proc/self/fd/{fd}", "user.deep", b"yes")
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(os.urandom(300_000))  # read by a reader thread, through an anchor
            f.seek(0)
    finally:
        os.close(fd)
    open_before = len(os.listdir("/proc/self/fd"))
    result = run_backup(mem_repo, BackupOptions([FileSource([str(tmp_path / "dd")])]))
    assert result.errors == []
    assert len(os.listdir("/proc/self/fd")) <= open_before + 2  # anchors are closed again
    mem_repo.load_index()
    found = entries(mem_repo, result.snapshot)
    deepest = os.fsencode(tmp_path) + b"/dd" * 2500
    assert len(content(mem_repo, found[deepest + b"/leaf"])) == 300_000
    assert found[deepest + b"/link"].target == b"target"
    assert (b"user.deep", b"yes") in found[deepest].xattrs
    _rmtree_deep(tmp_path / "dd")


def _rmtree_deep(top: Path) -> None:
    """Remove a tree too deep for shutil.rmtree (it recurses) and for paths."""
    stack = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    names: list[list[str]] = [os.listdir(stack[0])]
    while stack:
        if not names[-1]:
            os.close(stack.pop())
            names.pop()
            continue
        name = names[-1].pop()
        try:
            os.unlink(name, dir_fd=stack[-1])
            continue
        except IsADirectoryError:
            pass
        try:
            os.rmdir(name, dir_fd=stack[-1])
        except OSError:  # not empty yet: empty it first, then come back to it
            names[-1].append(name)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=stack[-1])
            stack.append(fd)
            names.append(os.listdir(fd))
    os.rmdir(top)


def test_a_backed_up_path_hundreds_of_components_deep(mem_repo: Repository, tmp_path: Path) -> None:
    path = tmp_path.joinpath(*["p"] * 700)
    path.mkdir(parents=True)
    (path / "f").write_bytes(b"x")
    snap = run_backup(mem_repo, BackupOptions([FileSource([str(path / "f")])])).snapshot
    mem_repo.load_index()
    assert content(mem_repo, entries(mem_repo, snap)[os.fsencode(path / "f")]) == b"x"


def _unreadable(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """Make reads of these paths fail as for a user without permission (tests run as root)."""
    bad = {os.fsencode(p) for p in paths}
    real_open, real_scandir, real_listdir = walker.open_file, os.scandir, os.listdir

    def open_file(place: Place) -> int:
        if place.rel in bad:
            raise PermissionError(13, "Permission denied")
        return real_open(place)

    def scandir(path):  # type: ignore[no-untyped-def]
        if os.fsencode(path) in bad:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    def listdir(path):  # type: ignore[no-untyped-def]
        if not isinstance(path, int) and os.fsencode(path) in bad:
            raise PermissionError(13, "Permission denied")
        return real_listdir(path)

    monkeypatch.setattr(walker, "open_file", open_file)
    monkeypatch.setattr(walker.os, "scandir", scandir)
    monkeypatch.setattr(walker.os, "listdir", listdir)


@pytest.mark.parametrize("kind", ["file", "big file", "dir"])
def test_a_backup_whose_only_input_is_unreadable_fails_without_a_snapshot(
    mem_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    target = tmp_path / "input"
    if kind == "dir":
        target.mkdir()
        (target / "x").write_bytes(b"x")
    else:
        target.write_bytes(os.urandom(200_000 if kind == "big file" else 10))
    _unreadable(monkeypatch, target)
    with pytest.raises(NothingBackedUp, match="Permission denied") as e:
        run_backup(mem_repo, BackupOptions([FileSource([str(target)])]))
    assert e.value.exit_code == 1
    assert mem_repo.snapshot_ids() == []


def test_one_unreadable_input_of_two_gives_a_partial_snapshot(
    mem_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ok").write_bytes(b"fine")
    (tmp_path / "bad").write_bytes(b"secret")
    _unreadable(monkeypatch, tmp_path / "bad")
    result = run_backup(
        mem_repo, BackupOptions([FileSource([str(tmp_path / "ok"), str(tmp_path / "bad")])])
    )
    assert result.partial and [e["path"] for e in result.errors] == [str(tmp_path / "bad")]
    assert mem_repo.snapshot_ids() == [result.snapshot.id]


# ---- what a snapshot references -------------------------------------------------------------


def test_a_lost_pack_is_uploaded_again_by_the_next_backup(
    mem_repo: Repository, tmp_path: Path, repo_password: bytes
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(150_000))
    (src / "b.bin").write_bytes(os.urandom(150_000))
    run_backup(mem_repo, BackupOptions([FileSource([str(src)])]))
    for name in [o.name for o in mem_repo.backend.list(layout.DATA)]:
        mem_repo.backend.delete(name)  # every pack lost; the index still lists them
    repo = _reopen(mem_repo, repo_password)
    second = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot
    assert second.summary["files_unmodified"] == 0  # the files cache did not trust lost blobs
    reader = _reopen(mem_repo, repo_password)
    reader.load_index()
    found = entries(reader, second)
    assert content(reader, found[os.fsencode(src / "a.bin")]) == (src / "a.bin").read_bytes()
    assert content(reader, found[os.fsencode(src / "b.bin")]) == (src / "b.bin").read_bytes()


def _before_the_proof(monkeypatch: pytest.MonkeyPatch, what: Callable[[BlobSaver], None]) -> None:
    """Run ``what`` after the walk and the uploads, just before the backup proves its lock
    and what it references: where a prune or an unlock on another host would land."""
    real = HeldLock.prove
    savers: list[BlobSaver] = []
    real_close = BlobSaver.close

    def close(self: BlobSaver) -> None:
        savers.append(self)
        real_close(self)

    def meanwhile(self: HeldLock) -> None:
        if self.operation == "backup":
            what(savers[-1])
        real(self)

    monkeypatch.setattr(BlobSaver, "close", close)
    monkeypatch.setattr(HeldLock, "prove", meanwhile)


def test_a_pack_deleted_during_the_backup_fails_it_without_a_snapshot(
    mem_repo: Repository, tmp_path: Path, repo_password: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.bin").write_bytes(os.urandom(100_000))
    run_backup(mem_repo, BackupOptions([FileSource([str(src)])], use_files_cache=False))
    (src / "new.bin").write_bytes(os.urandom(10))
    repo = _reopen(mem_repo, repo_password)

    def delete_old_packs(saver: BlobSaver) -> None:
        assert saver.referenced_packs  # old.bin was deduplicated against the first backup
        for pack in saver.referenced_packs:
            saver.repo.delete_pack(pack)

    _before_the_proof(monkeypatch, delete_old_packs)
    with pytest.raises(PacksMissing, match="no longer in storage"):
        run_backup(repo, BackupOptions([FileSource([str(src)])], use_files_cache=False))
    assert len(repo.snapshot_ids()) == 1


def test_a_backup_whose_lock_was_removed_writes_no_snapshot(
    mem_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"data")

    def unlock_remove_all(saver: BlobSaver) -> None:
        for o in list(mem_repo.backend.list(layout.LOCKS)):
            mem_repo.backend.delete(o.name)

    _before_the_proof(monkeypatch, unlock_remove_all)
    with pytest.raises(LockLost, match="removed"):
        run_backup(mem_repo, BackupOptions([FileSource([str(tmp_path / "f")])]))
    assert mem_repo.snapshot_ids() == []


def test_a_paused_backup_whose_lock_went_stale_writes_no_snapshot(
    mem_repo: Repository, tmp_path: Path, repo_password: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup pauses past staleness; a prune runs meanwhile and deletes packs the backup
    deduplicated against; the backup resumes (its refresher would renew the lock) and must
    not commit a snapshot that references them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.bin").write_bytes(os.urandom(100_000))
    first = run_backup(
        mem_repo, BackupOptions([FileSource([str(src)])], use_files_cache=False)
    ).snapshot
    paused, resume = threading.Event(), threading.Event()
    real_drain = walker.Walker.drain

    def pause_once(self: walker.Walker, keep: int) -> None:
        if keep == 0 and not paused.is_set():  # the walk is done: pause before finishing
            paused.set()
            assert resume.wait(30)
        real_drain(self, keep)

    monkeypatch.setattr(walker.Walker, "drain", pause_once)
    outcome: list[BaseException | Snapshot] = []

    def backup() -> None:
        try:
            repo = _reopen(mem_repo, repo_password)
            outcome.append(run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=backup)
    t.start()
    assert paused.wait(30)
    # Half an hour passes: others see the backup's lock as stale, and so does its holder.
    real_age = HeldLock._age
    monkeypatch.setattr(
        HeldLock,
        "_age",
        lambda self: (
            STALE_AFTER + timedelta(minutes=1) if self.operation == "backup" else real_age(self)
        ),
    )
    monkeypatch.setattr(
        "drengine.repository.locks.Locks.stale", lambda self, lock: lock.operation == "backup"
    )
    pruner = _reopen(mem_repo, repo_password)
    pruner.delete_snapshot(first.id)
    run_prune(pruner)  # deletes the pack of shared.bin: no snapshot uses it now
    resume.set()
    t.join(30)
    (result,) = outcome
    assert isinstance(result, LockLost), result
    assert mem_repo.snapshot_ids() == []


# ---- the same operation many times, at the same time ----------------------------------------


def test_two_backups_from_one_host_at_once_both_succeed(
    tmp_path: Path,
    repo_factory,
    repo_password: bytes,  # type: ignore[no-untyped-def]
) -> None:
    repo = repo_factory(LocalBackend(tmp_path / "repo"))
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(300):  # several files-cache flushes each
            (src / f"d{d}" / f"f{f}").write_bytes(b"%d-%d" % (d, f))
    errors: list[BaseException] = []

    def backup() -> None:
        try:
            run_backup(_reopen(repo, repo_password), BackupOptions([FileSource([str(src)])]))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=backup) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(repo.snapshot_ids()) == 2


def test_load_index_twice_gives_what_a_fresh_process_gives(
    mem_repo: Repository, tmp_path: Path, repo_password: bytes
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(120_000))
    run_backup(mem_repo, BackupOptions([FileSource([str(src)])]))
    (src / "b.bin").write_bytes(os.urandom(120_000))
    run_backup(
        mem_repo, BackupOptions([FileSource([str(src)])])
    )  # the same repository object again
    mem_repo.load_index()
    mem_repo.load_index()
    fresh = _reopen(mem_repo, repo_password)
    fresh.load_index()
    assert len(mem_repo.index) == len(fresh.index)
    same = run_prune(mem_repo, dry_run=True)
    other = run_prune(fresh, dry_run=True)
    assert (same.blobs_removed, same.packs_repacked) == (other.blobs_removed, other.packs_repacked)
    assert same.blobs_removed == 0


def test_a_directory_too_large_for_one_tree_is_reported_not_lost_silently(
    mem_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "big").mkdir(parents=True)
    (src / "big" / "f").write_bytes(b"x")
    monkeypatch.setattr("drengine.repository.blobcodec.MAX_TREE_BLOB", 100)
    with pytest.raises(DrengineError):
        # The root trees exceed 100 bytes too: nothing can be stored, and that is an error.
        run_backup(mem_repo, BackupOptions([FileSource([str(src)])]))

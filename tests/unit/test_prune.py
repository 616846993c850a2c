"""Prune removes what no snapshot uses, repacks, and never loses a used blob."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drengine.core.errors import RepositoryLocked
from drengine.core.model import Snapshot
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import run_check
from drengine.engine.prune import PruneRefused, run_prune
from drengine.engine.restore import run_restore
from drengine.repository import layout
from drengine.repository.locks import locked
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource

TwoSnapshots = tuple[Repository, Path, Snapshot, Snapshot]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _reopen(repo: Repository, password: bytes) -> Repository:
    return Repository.open(repo.backend, password)


def _stored_bytes(repo: Repository) -> int:
    return sum(o.size for o in repo.backend.list(layout.DATA))


def _forget(repo: Repository, snap_id: str) -> None:
    repo.backend.delete(layout.SNAPSHOTS + snap_id)


@pytest.fixture
def two_snapshots(mem_repo: Repository, tmp_path: Path, repo_password: bytes) -> TwoSnapshots:
    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "a.bin").write_bytes(os.urandom(200_000))
    (src / "gone.bin").write_bytes(os.urandom(300_000))
    first = run_backup(
        mem_repo, BackupOptions([FileSource([str(src)])], use_files_cache=False)
    ).snapshot
    (src / "gone.bin").unlink()
    (src / "keep" / "b.bin").write_bytes(os.urandom(100_000))
    second = run_backup(
        _reopen(mem_repo, repo_password),
        BackupOptions([FileSource([str(src)])], use_files_cache=False),
    ).snapshot
    return mem_repo, src, first, second


def test_prune_frees_unused_data_and_keeps_snapshots_whole(
    two_snapshots: TwoSnapshots, tmp_path: Path, repo_password: bytes
) -> None:
    repo, src, first, second = two_snapshots
    before = _stored_bytes(repo)
    dry = run_prune(_reopen(repo, repo_password), dry_run=True)
    assert _stored_bytes(repo) == before  # a dry run changes nothing
    assert dry.blobs_removed == 0  # both snapshots still reference everything

    _forget(repo, first.id)
    res = run_prune(_reopen(repo, repo_password), max_unused=0.0)
    assert res.blobs_removed > 0
    assert _stored_bytes(repo) < before - 250_000  # gone.bin's ~300 KB are freed

    fresh = _reopen(repo, repo_password)
    check = run_check(fresh, 1.0)
    assert check.errors == [] and check.warnings == []
    fresh = _reopen(repo, repo_password)
    fresh.load_index()
    out = tmp_path / "out"
    result = run_restore(fresh, fresh.find_snapshot(second.id), str(out))
    assert result.errors == []
    assert _files(out / src.relative_to("/")) == _files(src)

    # Nothing left to do: a second prune deletes nothing.
    again = run_prune(_reopen(repo, repo_password))
    assert (again.packs_deleted, again.packs_repacked, again.packs_unindexed) == (0, 0, 0)


def test_prune_removes_packs_of_an_interrupted_backup(
    mem_repo: Repository, repo_password: bytes
) -> None:
    orphan = mem_repo.save_pack(b"not referenced by any index")
    res = run_prune(_reopen(mem_repo, repo_password))
    assert res.packs_unindexed == 1
    assert not list(mem_repo.backend.list(layout.pack_name(orphan.hex())))


def test_prune_interrupted_after_new_index_leaves_a_consistent_repository(
    two_snapshots: TwoSnapshots, repo_password: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _src, first, _second = two_snapshots
    _forget(repo, first.id)

    class Crash(Exception):
        pass

    def crash() -> None:
        raise Crash

    import drengine.repository.locks as locks

    monkeypatch.setattr(locks.HeldLock, "check_valid", lambda self: crash())
    with pytest.raises(Crash):
        run_prune(_reopen(repo, repo_password), max_unused=0.0)
    # New index and superseding object written, nothing deleted yet: old and new indexes
    # coexist, readers use only the new set, and everything still checks out.
    monkeypatch.undo()
    assert run_check(_reopen(repo, repo_password), 1.0).errors == []
    run_prune(_reopen(repo, repo_password), max_unused=0.0)
    assert run_check(_reopen(repo, repo_password), 1.0).errors == []


def test_prune_refuses_when_a_used_blob_is_missing(
    two_snapshots: TwoSnapshots, repo_password: bytes
) -> None:
    repo, *_ = two_snapshots
    victim = next(iter(repo.backend.list(layout.DATA)))
    repo.backend.delete(victim.name)
    with pytest.raises(PruneRefused, match="run drengine check"):
        run_prune(_reopen(repo, repo_password))


def test_prune_waits_for_no_one_while_a_backup_holds_its_lock(
    mem_repo: Repository, repo_password: bytes
) -> None:
    with locked(mem_repo, False, "backup"), pytest.raises(RepositoryLocked):
        run_prune(_reopen(mem_repo, repo_password))

"""Operations stop cleanly when their cancellation event is set (the daemon's SIGTERM):
no snapshot, no lock left, a repository that checks clean, and the next run reuses what the
cancelled one uploaded. Many operations in one process give what fresh processes give."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from drengine.core.errors import Cancelled
from drengine.core.model import Snapshot
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import run_check
from drengine.engine.forget import Policy
from drengine.engine.prune import run_prune
from drengine.engine.retention import ForgetOptions, run_forget
from drengine.repository.repo import Repository
from drengine.sources.base import BackupContext, Entry, Readable, StoredStream, StreamSource
from drengine.sources.command import stream_node
from drengine.sources.files import FileSource

MiB = 1 << 20


class _Stream(StreamSource):
    """A stream that sets ``cancel`` after ``after`` bytes, as a SIGTERM mid-backup would."""

    def __init__(self, data: bytes, cancel: threading.Event, after: int) -> None:
        super().__init__(kind="command")
        self.data, self.cancel, self.after = data, cancel, after

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        yield Entry(b"/stream", stream_node(b"/stream"), open=self._open)

    @contextmanager
    def _open(self) -> Iterator[Readable]:
        src, pos = self, [0]

        class R:
            def readinto(self, b: memoryview) -> int:
                n = min(len(b), len(src.data) - pos[0], 256 * 1024)
                b[:n] = src.data[pos[0] : pos[0] + n]
                pos[0] += n
                if pos[0] >= src.after:
                    src.cancel.set()
                return n

        yield R()

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        return {"kind": self.kind}


def test_a_cancelled_backup_writes_no_snapshot_and_leaves_the_repository_sound(
    mem_repo: Repository,
) -> None:
    data = os.urandom(24 * MiB)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        run_backup(mem_repo, BackupOptions([_Stream(data, cancel, 12 * MiB)], cancel=cancel))
    assert mem_repo.snapshots() == []
    assert not list(mem_repo.backend.list("locks/"))
    assert run_check(mem_repo, 1.0).errors == []
    # The next backup reuses what the cancelled one uploaded and indexed.
    again = run_backup(mem_repo, BackupOptions([_Stream(data, threading.Event(), 10**12)]))
    assert again.snapshot.summary["bytes_new"] < len(data) * 0.8


def test_a_cancelled_file_walk_stops(mem_repo: Repository, tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_backup(mem_repo, BackupOptions([FileSource([str(tmp_path)])], cancel=cancel))
    assert mem_repo.snapshots() == [] and not list(mem_repo.backend.list("locks/"))


def test_cancelled_prune_and_check_stop_before_changing_anything(
    mem_repo: Repository, tmp_path: Path
) -> None:
    (tmp_path / "a").write_bytes(os.urandom(MiB))
    first = run_backup(mem_repo, BackupOptions([FileSource([str(tmp_path)])])).snapshot
    run_forget(mem_repo, ForgetOptions(snapshot_ids=[first.id]))
    before = sorted(o.name for o in mem_repo.backend.list(""))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_prune(mem_repo, max_unused=0.0, cancel=cancel)
    with pytest.raises(Cancelled):
        run_check(mem_repo, 1.0, cancel=cancel)
    assert sorted(o.name for o in mem_repo.backend.list("")) == before
    assert run_prune(mem_repo, max_unused=0.0).packs_deleted >= 1


def _summary(snaps: list[Snapshot]) -> list[tuple[list[str], int]]:
    return [(s.paths, s.summary["files_total"]) for s in snaps]


def test_many_operations_in_one_process_match_fresh_ones(
    repo_factory: Any, tmp_path: Path, repo_password: bytes
) -> None:
    """Backup, forget, prune and check twenty times on one repository object, then the same
    on a repository opened afresh for every operation: the same snapshots and results."""
    src = tmp_path / "src"
    src.mkdir()

    def work(open_repo: Any) -> tuple[list[tuple[list[str], int]], list[int]]:
        results = []
        for i in range(20):
            (src / f"file{i % 7}").write_bytes(os.urandom(2000 + i))
            run_backup(open_repo(), BackupOptions([FileSource([str(src)])]))
            run_forget(open_repo(), ForgetOptions(policy=Policy(last=3)))
            if i % 5 == 4:
                results.append(run_prune(open_repo(), max_unused=0.0).packs_deleted >= 0)
                assert run_check(open_repo(), 1.0).errors == []
        return _summary(open_repo().snapshots()), [len(open_repo().snapshots())]

    one = repo_factory()
    same_object = work(lambda: one)
    fresh_repo = repo_factory()
    fresh = work(lambda: Repository.open(fresh_repo.backend, repo_password))
    assert same_object == fresh


def test_a_drill_cancelled_mid_restore_leaves_no_sandbox_lock_or_report(
    mem_repo: Repository, tmp_path: Path
) -> None:
    from drengine.drills.run import DrillOptions, run_drill
    from drengine.policy.model import PolicyFile
    from drengine.repository.reports import report_ids

    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"f{i}").write_bytes(os.urandom(1000 + i))
    run_backup(mem_repo, BackupOptions([FileSource([str(src)])], tags=["policy:p"]))
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    boxes = tmp_path / "boxes"
    p = PolicyFile.model_validate(
        {"name": "p", "repository": "/unused", "password_file": str(pw), "sources": [str(src)],
         "schedule": "1h", "retention": {"keep_last": 1},
         "drill": {"schedule": "1d", "sandbox_dir": str(boxes)}}
    )  # fmt: skip
    cancel = threading.Event()
    restored = list[Path]()

    def watch() -> None:  # SIGTERM in the daemon: the event is set while files are written
        while not cancel.is_set():
            restored.extend(boxes.glob("*/restore/**/f*"))
            if restored:
                cancel.set()

    t = threading.Thread(target=watch)
    t.start()
    try:
        with pytest.raises(Cancelled):
            run_drill(p, lambda: mem_repo, DrillOptions(cancel=cancel))
    finally:
        cancel.set()
        t.join()
    assert restored and not list(boxes.iterdir())
    assert not list(mem_repo.backend.list("locks/")) and report_ids(mem_repo) == []

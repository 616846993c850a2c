"""``check --read-data`` in worker processes: the same findings as in-process, every pack
read exactly once however workers die, and nothing left running when a check is stopped."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from drengine.core.errors import Cancelled
from drengine.core.workers import Worker
from drengine.engine import check_procs
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import CheckResult, run_check
from drengine.repository import layout
from drengine.repository.index_entry import IndexEntry
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.local import LocalBackend


@pytest.fixture
def repo(repo_factory, tmp_path: Path) -> Repository:  # type: ignore[no-untyped-def]
    """A local repository of small packs (the test settings): many packs to hand out."""
    repo = repo_factory(LocalBackend(tmp_path / "repo"))
    src = tmp_path / "src"
    for d in range(6):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(30):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(500 + i * 211))
    (src / "big").write_bytes(os.urandom(400_000))
    run_backup(repo, BackupOptions([FileSource([str(src)])]))
    return repo


def _packs(repo: Repository) -> list[Path]:
    root = Path(repo.backend.location)
    return sorted(p for p in (root / "data").rglob("*") if p.is_file())


def _check(repo: Repository, **kw: object) -> CheckResult:
    return run_check(repo, read_fraction=1.0, **kw)  # type: ignore[arg-type]


def _starts(monkeypatch: pytest.MonkeyPatch) -> list[list[Worker]]:
    started: list[list[Worker]] = []
    real = check_procs.workers_mod.start

    def recording(n: int, command: list[str]) -> list[Worker]:
        started.append(real(n, command))
        return started[-1]

    monkeypatch.setattr(check_procs.workers_mod, "start", recording)
    return started


def _damage_a_blob(repo: Repository) -> None:
    """One byte of a data blob flipped in its pack: reading that pack finds it."""
    repo.load_index()
    _, entry = next((b, e) for b, e in repo.index.entries() if e.type.name == "DATA")
    path = Path(repo.backend.location) / layout.pack_name(entry.pack_id.hex())
    data = bytearray(path.read_bytes())
    data[entry.offset + 3] ^= 0x40
    path.write_bytes(bytes(data))


def test_workers_find_what_an_in_process_check_finds(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    _damage_a_blob(repo)
    monkeypatch.setenv(check_procs.ENV, "0")
    here = _check(repo)
    monkeypatch.setenv(check_procs.ENV, "2")
    started = _starts(monkeypatch)
    there = _check(repo)
    assert [len(ws) for ws in started] == [2]
    assert all(w.proc.returncode == 0 for w in started[0])
    assert here.errors and there.errors == here.errors
    assert (there.packs_read, there.blobs_read) == (here.packs_read, here.blobs_read)
    assert there.packs_read == len(_packs(repo)) > 4


# A worker that verifies one pack for real, then dies before answering the next.
_DIE_AFTER_FIRST = """
import os, sys
from drengine.engine import check_worker as cw
real = cw.send
def send(sock, obj):
    real(sock, obj)
    if isinstance(obj, cw.PackDone):
        os._exit(9)
cw.send = send
sys.exit(cw.main(sys.argv))
"""


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-c", _DIE_AFTER_FIRST],
        [sys.executable, "-c", "import os; os._exit(3)"],
        ["/nonexistent/python"],
    ],
    ids=["dies-after-one-pack", "dies-at-start", "cannot-start"],
)
def test_packs_a_dead_worker_left_are_read_in_process(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    _damage_a_blob(repo)
    monkeypatch.setenv(check_procs.ENV, "0")
    here = _check(repo)
    monkeypatch.setenv(check_procs.ENV, "2")
    monkeypatch.setattr(check_procs, "_WORKER", command)
    there = _check(repo)
    assert there.errors == here.errors  # each pack's findings once, in pack order
    assert (there.packs_read, there.blobs_read) == (here.packs_read, here.blobs_read)


def test_a_cancelled_check_leaves_no_worker(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(check_procs.ENV, "2")
    started = _starts(monkeypatch)
    cancel = threading.Event()
    real = check_procs.PackWorkers._receive

    def cancel_after_first(self: check_procs.PackWorkers, w: Worker, queue: object) -> bool:
        cancel.set()
        return real(self, w, queue)  # type: ignore[arg-type]

    monkeypatch.setattr(check_procs.PackWorkers, "_receive", cancel_after_first)
    with pytest.raises(Cancelled):
        _check(repo, cancel=cancel)
    assert started and all(w.proc.poll() is not None for w in started[0])


def test_which_checks_use_workers(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(check_procs.ENV, raising=False)
    assert check_procs.process_count(repo, 10, 10 << 20) == 0  # too little to read
    big = check_procs.process_count(repo, 10, 1 << 30)
    assert big == (0 if len(os.sched_getaffinity(0)) < 2 else min(len(os.sched_getaffinity(0)), 4))
    monkeypatch.setenv(check_procs.ENV, "3")
    assert check_procs.process_count(repo, 2, 1) == 2  # never more than there are packs
    assert check_procs.process_count(repo, 0, 0) == 0


def test_a_pack_item_carries_every_blob_unchanged(repo: Repository) -> None:
    repo.load_index()
    by_pack: dict[bytes, list[tuple[bytes, IndexEntry]]] = {}
    for bid, e in repo.index.entries():
        by_pack.setdefault(e.pack_id, []).append((bid, e))
    # Offsets and lengths beyond 32 bits, as a damaged or crafted index may claim.
    pid = next(iter(by_pack))
    huge = [(b"\xaa" * 32, IndexEntry(pid, layout.BlobType.TREE, 1 << 40, 1 << 33, 7))]
    for pack_id, blobs in [*by_pack.items(), (pid, huge), (pid, [])]:
        item = check_procs.PackItem.of(pack_id, blobs)
        assert item.blobs() == blobs

"""Locks: shared and exclusive conflicts, staleness by time and by dead pid, refresh."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from drengine.core.errors import LockLost, RepositoryLocked
from drengine.repository import layout
from drengine.repository.locks import REFRESH_EVERY, STALE_AFTER, Locks, acquire, locked
from drengine.repository.repo import Repository


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _lock_names(repo: Repository) -> list[str]:
    return [o.name for o in repo.backend.list(layout.LOCKS)]


def test_shared_locks_coexist_and_are_released(mem_repo: Repository) -> None:
    a = acquire(mem_repo, False, "backup")
    b = acquire(mem_repo, False, "backup")
    assert len(_lock_names(mem_repo)) == 2
    a.release()
    b.release()
    assert _lock_names(mem_repo) == []


def test_exclusive_conflicts_with_shared_and_names_the_holder(mem_repo: Repository) -> None:
    with locked(mem_repo, False, "backup"):
        with pytest.raises(RepositoryLocked, match=r"shared lock .* held by backup"):
            acquire(mem_repo, True, "prune")
        assert len(_lock_names(mem_repo)) == 1  # the failed attempt removed its own lock
    with locked(mem_repo, True, "prune"), pytest.raises(RepositoryLocked, match="exclusive"):
        acquire(mem_repo, False, "backup")


def test_lock_is_stale_after_time_without_refresh(mem_repo: Repository) -> None:
    clock = FakeClock()
    held = acquire(mem_repo, False, "backup", clock)
    clock.now += STALE_AFTER + timedelta(seconds=1)
    locks = Locks(mem_repo, clock)
    (info,) = locks.list()
    assert locks.stale(info)
    # A stale lock is ignored (with a warning), so prune can proceed ...
    acquire(mem_repo, True, "prune", clock).release()
    # ... and the holder notices it may no longer be trusted before deleting anything.
    with pytest.raises(LockLost, match="not refreshed for 30 minutes"):
        held.check_valid()
    held.release()


def test_a_paused_holder_does_not_refresh_its_lock_back_to_life(mem_repo: Repository) -> None:
    # The refresher wakes after the pause: renewing now would make a lock that others have
    # already treated as stale look valid again, and the backup would commit a snapshot
    # referencing packs a prune deleted meanwhile.
    clock = FakeClock()
    held = acquire(mem_repo, False, "backup", clock)
    clock.now += STALE_AFTER + timedelta(minutes=10)
    with pytest.raises(LockLost):
        held.refresh()
    clock.now += timedelta(seconds=1)
    with pytest.raises(LockLost):
        held.prove()
    held.release()


def test_prove_fails_when_the_lock_object_was_removed(mem_repo: Repository) -> None:
    held = acquire(mem_repo, False, "backup")
    held.prove()
    for name in _lock_names(mem_repo):  # drengine unlock --remove-all
        mem_repo.backend.delete(name)
    with pytest.raises(LockLost, match="removed"):
        held.prove()
    with pytest.raises(LockLost):  # and it stays lost: a refresh does not resurrect it
        held.refresh()
    assert _lock_names(mem_repo) == []
    held.release()


def test_prove_fails_when_the_lock_object_was_replaced(mem_repo: Repository) -> None:
    held = acquire(mem_repo, False, "backup")
    (name,) = _lock_names(mem_repo)
    other = acquire(mem_repo, False, "backup")
    mem_repo.backend.put(name, mem_repo.backend.get(layout.LOCKS + other.oid))
    with pytest.raises(LockLost):
        held.prove()
    other.release()
    held.release()


def test_prove_passes_after_a_timely_refresh(mem_repo: Repository) -> None:
    clock = FakeClock()
    held = acquire(mem_repo, False, "backup", clock)
    for _ in range(10):  # an hour of refreshes every five minutes
        clock.now += REFRESH_EVERY
        held.refresh()
    held.prove()
    held.release()


def test_refresh_replaces_the_lock_object(mem_repo: Repository) -> None:
    clock = FakeClock()
    held = acquire(mem_repo, True, "prune", clock)
    before = _lock_names(mem_repo)
    clock.now += REFRESH_EVERY
    held.refresh()
    after = _lock_names(mem_repo)
    assert len(after) == 1 and after != before
    clock.now += STALE_AFTER - timedelta(minutes=1)
    (info,) = Locks(mem_repo, clock).list()
    assert info.time == clock.now - (STALE_AFTER - timedelta(minutes=1))
    held.release()


def test_lock_of_a_dead_process_on_this_host_is_stale(mem_repo: Repository) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    locks = Locks(mem_repo)
    oid = locks.create(True, "prune")
    (info,) = [i for i in locks.list() if i.id == oid]
    assert not locks.stale(info)
    dead = type(info)(**{**info.__dict__, "pid": pid})
    assert locks.stale(dead)


def test_retry_lock_waits_for_the_holder(mem_repo: Repository) -> None:
    holder = acquire(mem_repo, False, "backup")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            holder.release()  # the backup finishes while prune waits

    mem_repo.lock_wait = 60
    acquire(mem_repo, True, "prune", sleep=sleep).release()
    assert slept == [1.0, 2.0, 4.0]
    mem_repo.lock_wait = 0
    with locked(mem_repo, False, "backup"), pytest.raises(RepositoryLocked):
        acquire(mem_repo, True, "prune", sleep=slept.append)

"""Repository locks: shared for writers that only add (backup), exclusive for prune.

A lock is a sealed object ``locks/<random ID>`` created with put-if-absent (an S3 conditional
write), holding who took it and when. Objects are immutable, so a holder refreshes its lock by
writing a new lock object and then deleting the old one. A lock is *stale* when it has not
been refreshed for ``STALE_AFTER``, or when it belongs to this host and its process is gone;
stale locks never block anyone, are reported, and are removed by ``drengine unlock``.

Taking a lock: write ours first, then list the others. If a conflicting live lock exists,
delete ours and fail (``RepositoryLocked``, exit 11). Two processes racing may both back off;
neither can proceed past the other unseen, because each writes before it looks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from drengine.core.errors import DrengineError, LockLost, ObjectNotFound, RepositoryLocked
from drengine.core.model import load_json
from drengine.crypto.aead import seal, unseal
from drengine.repository import layout
from drengine.repository.listing import list_objects
from drengine.repository.repo import Repository

log = logging.getLogger(__name__)

_LOCK_AAD = b"drengine lock"
# A holder refreshes every REFRESH_EVERY; others treat it as stale after STALE_AFTER without a
# refresh. The gap allows for clock skew between hosts and a slow storage round trip.
REFRESH_EVERY = timedelta(minutes=5)
STALE_AFTER = timedelta(minutes=30)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LockInfo:
    id: str
    host: str
    pid: int
    username: str
    time: datetime
    exclusive: bool
    operation: str

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        return (
            f"{kind} lock {self.id[:8]} held by {self.operation or 'a process'} "
            f"(pid {self.pid} on {self.host}, since {self.time.isoformat(timespec='seconds')})"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Locks:
    """Reads and writes lock objects of one repository."""

    def __init__(self, repo: Repository, clock: Clock = _utcnow) -> None:
        self.repo = repo
        self.clock = clock
        self.host = socket.gethostname()
        self.unreadable: list[str] = []  # lock IDs the last ``list`` could not read

    def _write(self, info: dict[str, object]) -> tuple[str, bytes]:
        data = seal(self.repo.keys.encryption, json.dumps(info).encode(), _LOCK_AAD)
        oid = layout.object_id(data)
        self.repo.backend.put_if_absent(layout.LOCKS + oid, data)
        return oid, data

    def create(self, exclusive: bool, operation: str) -> str:
        return self.create_object(exclusive, operation)[0]

    def create_object(self, exclusive: bool, operation: str) -> tuple[str, bytes]:
        """A new lock object: (its ID, its stored bytes)."""
        return self._write(
            {
                "host": self.host,
                "pid": os.getpid(),
                "username": _username(),
                "time": self.clock().isoformat(),
                "exclusive": exclusive,
                "operation": operation,
                "nonce": os.urandom(8).hex(),  # two locks never share a name
            }
        )

    def delete(self, oid: str) -> None:
        self.repo.backend.delete(layout.LOCKS + oid)

    def read(self, oid: str) -> bytes | None:
        """The stored bytes of a lock object, or None if it is gone."""
        try:
            return self.repo.backend.get(layout.LOCKS + oid)
        except ObjectNotFound:
            return None

    def list(self) -> list[LockInfo]:
        """Every readable lock. One that cannot be read blocks no one (a holder rewrites its
        lock every few minutes, so a damaged object is not a live lock for long); it is
        reported, and kept in ``unreadable`` for ``drengine unlock``."""
        out = []
        self.unreadable = []
        for item in list_objects(self.repo.backend, layout.LOCKS, self.repo.strays):
            oid = item.oid
            try:
                plain = unseal(
                    self.repo.keys.encryption,
                    self.repo.backend.get(layout.LOCKS + oid),
                    _LOCK_AAD,
                    f"lock {oid}",
                )
                d = load_json(plain)
                pid, when = int(d["pid"]), datetime.fromisoformat(d["time"])
                if not 0 < pid < 1 << 31:  # os.kill would overflow, or signal a whole group
                    raise ValueError(f"pid {pid} is out of range")
                out.append(
                    LockInfo(
                        oid,
                        str(d["host"]),
                        pid,
                        str(d.get("username", "")),
                        # Read as UTC, as snapshots are: compared with an aware clock.
                        when if when.tzinfo else when.replace(tzinfo=UTC),
                        bool(d["exclusive"]),
                        str(d.get("operation", "")),
                    )
                )
            except ObjectNotFound:
                continue  # released while we listed
            except (DrengineError, ValueError, KeyError, TypeError, OverflowError) as e:
                log.warning("ignoring unreadable lock %s: %s", oid, e)
                self.unreadable.append(oid)
        return out

    def stale(self, lock: LockInfo) -> bool:
        if self.clock() - lock.time > STALE_AFTER:
            return True
        return lock.host == self.host and not _pid_alive(lock.pid)


class HeldLock:
    """A lock we hold, refreshed in the background until released.

    Others judge a lock stale by the time written in it, so a holder that was paused (SIGSTOP,
    a suspended VM) past ``STALE_AFTER - REFRESH_EVERY`` must assume a prune went ahead
    meanwhile: the lock is then *lost*. It is never refreshed back to life, and every later
    ``check_valid`` or ``prove`` fails with ``LockLost``. So is a lock whose object was
    removed (``unlock --remove-all``) or replaced.
    """

    def __init__(
        self, locks: Locks, oid: str, data: bytes, exclusive: bool, operation: str
    ) -> None:
        self.locks, self.oid, self.exclusive, self.operation = locks, oid, exclusive, operation
        self._data = data
        self.refreshed = locks.clock()
        self._refreshed_mono = time.monotonic()
        self.lost = ""
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="lock-refresh", daemon=True)
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_EVERY.total_seconds()):
            try:
                self.refresh()
            except LockLost as e:
                log.warning("%s", e)
                return
            except DrengineError as e:
                log.warning("could not refresh lock %s: %s", self.oid[:8], e)

    def _age(self) -> timedelta:
        # Wall time is what others compare with; monotonic time also counts a pause of ours
        # while the wall clock was stepped back.
        wall = self.locks.clock() - self.refreshed
        mono = timedelta(seconds=time.monotonic() - self._refreshed_mono)
        return max(wall, mono)

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost = f"lock {self.oid[:8]} of this {self.operation} was lost: {why}"
        raise LockLost(self.lost)

    def check_valid(self) -> None:
        """Raise ``LockLost`` unless the lock is certainly still ours by time: before any
        destructive step. Costs no storage request (see ``prove``)."""
        if self.lost:
            raise LockLost(self.lost)
        age = self._age()
        if age > STALE_AFTER - REFRESH_EVERY:
            minutes = age.total_seconds() / 60
            self._lose(
                f"not refreshed for {minutes:.0f} minutes (was the process paused?), so "
                "others may have treated it as stale"
            )

    def prove(self) -> None:
        """``check_valid``, and the lock object is still in storage, unchanged: before a
        backup writes its snapshot, and before prune or forget delete."""
        with self._mutex:
            self.check_valid()
            if self.locks.read(self.oid) != self._data:
                self._lose("its object was removed from the repository (drengine unlock?)")

    def refresh(self) -> None:
        with self._mutex:
            self.check_valid()
            if self.locks.read(self.oid) != self._data:
                self._lose("its object was removed from the repository (drengine unlock?)")
            new, data = self.locks.create_object(self.exclusive, self.operation)
            old, self.oid, self._data = self.oid, new, data
            self.refreshed = self.locks.clock()
            self._refreshed_mono = time.monotonic()
            self.locks.delete(old)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.locks.delete(self.oid)
        except DrengineError as e:
            log.warning("could not remove lock %s: %s (drengine unlock removes it)", self.oid, e)


def acquire(
    repo: Repository,
    exclusive: bool,
    operation: str,
    clock: Clock = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> HeldLock:
    """Take a lock, waiting up to ``repo.lock_wait`` seconds for conflicting ones to go."""
    deadline = time.monotonic() + repo.lock_wait
    delay = 1.0
    waiting = False
    while True:
        try:
            return _try_acquire(repo, exclusive, operation, clock)
        except RepositoryLocked as e:
            if time.monotonic() + delay > deadline:
                raise
            if not waiting:  # say once why nothing seems to happen
                log.warning("%s; waiting up to %.0f s", e, repo.lock_wait)
                waiting = True
            sleep(delay)
            delay = min(delay * 2, 10.0)


def _try_acquire(repo: Repository, exclusive: bool, operation: str, clock: Clock) -> HeldLock:
    locks = Locks(repo, clock)
    oid, data = locks.create_object(exclusive, operation)
    try:
        for other in locks.list():
            if other.id == oid or not (exclusive or other.exclusive):
                continue
            if locks.stale(other):
                log.warning("ignoring stale %s (drengine unlock removes it)", other.describe())
                continue
            raise RepositoryLocked(f"the repository is locked: {other.describe()}")
    except BaseException:
        locks.delete(oid)
        raise
    return HeldLock(locks, oid, data, exclusive, operation)


@contextmanager
def locked(
    repo: Repository, exclusive: bool, operation: str, clock: Clock = _utcnow
) -> Iterator[HeldLock]:
    held = acquire(repo, exclusive, operation, clock)
    try:
        yield held
    finally:
        held.release()


def _username() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""

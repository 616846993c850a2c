"""Read, hash and compress a first backup's small files in worker processes.

A tree of many small files (``/usr/share``: 45,000 of its 47,000 files are under 64 KiB)
kept the walking thread busy with six system calls per file (``lstat``, ``listxattr``,
open, ``fstat``, read, close), and after each it had to take the interpreter lock back from
the threads that compress and encrypt: most of its time went to waiting for the lock, not
to the calls (``docs/performance.md``). So once a walk has read ``START_AFTER`` small files
itself, it hands the rest to worker processes (``files_read_worker``), each with a lock of
its own, in batches of paths: the walk then makes one system call per file (``lstat``) and
the workers open, check, read, hash, compress and build the node. Their answers (blob ID,
content hash, payload, the node's JSON) are taken by a thread of this process, which claims
each blob for dedup and completes the file's ``Item``; encryption and packing stay here.

Nothing is ever lost to a worker: a batch counts as done only when its answer arrived, and
what a dead or unstartable worker left is read in this process, as it would have been
without workers. ``DRENGINE_BACKUP_PROCESSES``: 0 reads everything in-process; N starts N
workers at the first small file (the tests use it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from drengine.core import workers as workers_mod
from drengine.core.workers import Worker, recv, send
from drengine.pipeline.small_blobs import SmallBlobs

log = logging.getLogger(__name__)

ENV = "DRENGINE_BACKUP_PROCESSES"
# Small files a walk reads itself before it starts workers: a re-backup that reads a few
# hundred changed files is not worth two interpreters (~0.1 s of CPU each to start).
START_AFTER = 2000
_MAX_PROCESSES = 4
BATCH_FILES = 64
BATCH_BYTES = 1 << 20
_IN_FLIGHT = 8  # batches sent to a worker before it answers: it never waits for the next
_WORKER = workers_mod.module_command("drengine.sources.files_read_worker")  # + the socket's fd


@dataclass(slots=True)
class Item:
    """One small file handed out, until its result is in (``ReadProcs.wait``). Lighter
    than a ``Future`` (which holds a lock and a condition): tens of thousands of them
    wait at once in a large directory."""

    path: bytes  # absolute: it is also where the file is for system calls
    inode: int  # as listed: a file with another one is not what was listed
    started_ns: int
    result: Any = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


@dataclass
class _Batch:
    number: int
    items: list[Item]


@dataclass
class _Live:
    worker: Worker
    pending: list[_Batch] = field(default_factory=list)  # sent, not yet answered
    dead: bool = False


def read_plan() -> tuple[int, int] | None:
    """(small files read in-process first, workers to start then), or None for none."""
    given = os.environ.get(ENV, "").strip()
    if given.isdigit():
        return (0, min(int(given), 16)) if int(given) > 0 else None
    cpus = workers_mod.cpus()
    return (START_AFTER, min(cpus, _MAX_PROCESSES)) if cpus >= 2 else None


class ReadProcs:
    """``answered(item, answer)`` is called in this object's thread for each file a
    worker answered for (``files_read_worker``'s answers) and returns its result, or None
    if it went to ``in_process(items)``, which takes the files no worker will answer for
    (from whichever thread found that out) and ``complete``s each."""

    def __init__(
        self,
        blobs: SmallBlobs,
        n: int,
        answered: Callable[[Item, tuple[Any, ...]], Any],
        in_process: Callable[[list[Item]], None],
    ) -> None:
        self._answered, self._in_process = answered, in_process
        self._lock = threading.Lock()
        self._done = threading.Condition(threading.Lock())
        self._live: list[_Live] = []
        self._batch: list[Item] = []
        self._batch_bytes = 0
        self._numbers = 0
        self._closed = False
        workers = workers_mod.start(n, _WORKER)
        self._workers = workers
        for w in workers:
            with contextlib.suppress(OSError):
                send(w.sock, blobs)
                self._live.append(_Live(w))
        self._running = bool(self._live)
        self._slots = threading.Semaphore(len(self._live) * _IN_FLIGHT)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()  # ``close`` wakes the serving thread
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        for live in self._live:
            self._sel.register(live.worker.sock, selectors.EVENT_READ, live)
        self._thread = threading.Thread(target=self._serve, name="read-procs", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether any worker still takes files (else the walk reads them itself)."""
        return self._running and not self._closed

    def add(self, item: Item, size: int) -> None:
        """Hand out a file (its batch goes once full, or at ``flush``)."""
        self._batch.append(item)
        self._batch_bytes += size
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Send the files added since the last batch (the walk is about to wait on one)."""
        items, self._batch, self._batch_bytes = self._batch, [], 0
        if not items:
            return
        self._slots.acquire()
        batch = _Batch(self._numbers, items)
        self._numbers += 1
        with self._lock:
            live = min(
                (lv for lv in self._live if not lv.dead),
                key=lambda lv: len(lv.pending),
                default=None,
            )
            if live is not None:
                live.pending.append(batch)
        if live is None:
            self._slots.release()
            self._in_process(items)
            return
        # If it died, the serving thread sees it close and takes its batches back.
        with contextlib.suppress(OSError):
            send(live.worker.sock, (batch.number, [(it.path, it.inode) for it in items]))

    def wait(self, item: Item) -> Any:
        """The item's result (``complete``), once it is in; what failed it, raised."""
        if not item.done:
            self.flush()  # it may be in the batch not sent yet
            with self._done:
                while not item.done:
                    self._done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def complete(self, items: list[Item], results: list[Any]) -> None:
        with self._done:
            for item, result in zip(items, results, strict=True):
                item.result = result
            self._done.notify_all()

    def fail(self, item: Item, e: BaseException) -> None:
        with self._done:
            item.error = e
            self._done.notify_all()

    def close(self) -> None:
        """Stop the workers; files not answered for go to ``in_process`` unless the
        backup is ending anyway (the walk waits on none of them)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join()
        workers_mod.stop(self._workers, wait=5.0)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- the serving thread --------------------------------------------------------------

    def _serve(self) -> None:
        try:
            # A socket closed by ``close`` leaves the selector without a word: hence the flag.
            while self._running and not self._closed:
                for key, _ in self._sel.select(0.5):
                    live = key.data
                    if live is None:  # woken by ``close``
                        return
                    if not self._receive(live):
                        self._bury(live)
        except Exception:
            log.debug("serving the read workers failed", exc_info=True)
        finally:
            for live in self._live:
                self._bury(live)

    def _receive(self, live: _Live) -> bool:
        """Handle one answer; False once the worker is gone or answered out of turn."""
        try:
            msg = recv(live.worker.sock)
        except (EOFError, OSError):
            return False
        number, answers = cast(tuple[int, list[tuple[Any, ...]]], msg)
        with self._lock:
            batch = live.pending[0] if live.pending else None
            if batch is None or batch.number != number or len(answers) != len(batch.items):
                return False
            live.pending.pop(0)
        self._slots.release()
        items, results = [], []
        for item, answer in zip(batch.items, answers, strict=True):
            try:
                result = self._answered(item, answer)
            except BaseException as e:  # the saver failed: the walk raises it
                self.fail(item, e)
                continue
            if result is not None:
                items.append(item)
                results.append(result)
        self.complete(items, results)
        return True

    def _bury(self, live: _Live) -> None:
        """A worker that is gone: what it was sent is read in this process."""
        with self._lock:
            if live.dead:
                return
            live.dead = True
            left, live.pending = live.pending, []
            self._running = any(not lv.dead for lv in self._live)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(live.worker.sock)
        for batch in left:
            self._slots.release()
            if not self._closed:
                self._in_process(batch.items)

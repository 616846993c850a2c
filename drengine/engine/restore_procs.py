"""Write a restore's files in writer processes, each with an interpreter lock of its own.

A restore of many small files is bound by the Python work around each file's dozen system
calls; in threads of one process every call hands the interpreter lock over, and two writer
threads were measured slower than one (``docs/performance.md``). Writer processes
(``restore_worker``) each restore a share of the files with the same ``FileWriter``, so the
guarantees do not change: temporary name, every byte read back, whole-content hash, rename.

The parent plans, creates the directories, holds the repository's lock and hands out work
items (the files of one range of a pack, or one large file) a few at a time, so the
processes stay busy until the end. Whatever a worker did not finish, because a file failed
or the worker died, is written again by the parent in-process (where a damaged blob is read
from another copy if the index has one), and only the parent's outcome is reported. A file
is counted as restored only once a worker said it is in place, verified.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable

from drengine.core import workers as workers_mod
from drengine.core.errors import Cancelled, DrengineError
from drengine.core.phases import Phases
from drengine.core.progress import Progress
from drengine.core.workers import Worker
from drengine.engine import restore_wire as wire
from drengine.engine.restore_batches import Batch
from drengine.engine.restore_plan import Entry
from drengine.repository.repo import Repository
from drengine.storage.url import reopen_spec

ENV = "DRENGINE_RESTORE_PROCESSES"  # 0: write in-process; N: exactly N writer processes
_MIN_FILES = 1000  # below this a process start costs more than it saves
_MAX_PROCESSES = 4
_BATCH_FILES = 128  # files per work item at most: small items keep every process busy
_IN_FLIGHT = 2  # items sent ahead to each process
_STOP_WAIT = 30.0  # seconds a cancelled worker gets to finish its file
_WORKER = workers_mod.module_command("drengine.engine.restore_worker")  # + the socket's fd

Item = wire.BatchItem | wire.FileItem
Note = Callable[[Entry, str], None]


def process_count(repo: Repository, files: int) -> int:
    """Writer processes for a restore of ``files`` files with content; 0 for in-process."""
    if reopen_spec(repo.backend) is None:
        return 0
    given = os.environ.get(ENV, "").strip()
    if given.isdigit():
        return min(int(given), 16)
    if files < _MIN_FILES:
        return 0
    cpus = workers_mod.cpus()
    return 0 if cpus < 2 else min(cpus, _MAX_PROCESSES)


def work_items(
    batches: list[Batch[Entry]], large: list[Entry], repo: Repository
) -> tuple[list[Item], list[Entry]]:
    """(items for the workers, files the parent writes itself). Large files first (they
    take longest), then the batches split to ``_BATCH_FILES``. A file with a blob the index
    cannot place stays with the parent, which reports it as an in-process restore does."""
    items: list[Item] = []
    here: list[Entry] = []
    for e in large:
        try:
            items.append(wire.FileItem(e, [(b, repo.lookup(b)) for b in e.node.content]))
        except DrengineError:
            here.append(e)
    for b in batches:
        for i in range(0, len(b.items), _BATCH_FILES):
            part = b.items[i : i + _BATCH_FILES]
            start = min(ie.offset for _, _, ie in part)
            end = max(ie.offset + ie.length for _, _, ie in part)
            items.append(wire.BatchItem(Batch(b.pack_id, start, end, part)))
    return items, here


def start_workers(n: int) -> list[Worker]:
    """Start ``n`` workers (fewer if an interpreter cannot start); they wait for ``run``."""
    return _start(n) if n > 0 else []


def stop_workers(workers: list[Worker]) -> None:
    workers_mod.stop(workers, _STOP_WAIT)


def _start(n: int) -> list[Worker]:
    return workers_mod.start(n, _WORKER)


class WriterProcesses:
    """Hand out work items to started workers; ``run`` returns the entries that are not
    done (to be written in-process)."""

    def __init__(
        self,
        repo: Repository,
        setup: wire.Setup,
        root_fd: int,
        progress: Progress,
        phases: Phases,
        note: Note,
        cancel: threading.Event | None,
    ) -> None:
        self.repo = repo
        self.setup = setup
        self.root_fd = root_fd
        self.progress = progress
        self.phases = phases
        self.note = note
        self.cancel = cancel

    def run(self, workers: list[Worker], items: list[Item]) -> list[Entry]:
        """Serve ``items`` to ``workers`` and stop them."""
        left: list[Entry] = []
        try:
            self._serve(workers, deque(items), left)
        finally:
            stop_workers(workers)
        return [e for e in left if not e.done]

    def _serve(self, workers: list[Worker], queue: deque[Item], left: list[Entry]) -> None:
        sel = selectors.DefaultSelector()
        live = []
        for w in workers:
            try:
                wire.send(w.sock, self.setup)
                socket.send_fds(w.sock, [b"f"], [self.root_fd])
            except OSError:
                continue
            sel.register(w.sock, selectors.EVENT_READ, w)
            live.append(w)
        while live:
            for w in live:
                while len(w.pending) < _IN_FLIGHT and queue:
                    item = queue.popleft()
                    w.pending.append(item)
                    try:
                        wire.send(w.sock, wire.outgoing(item))
                    except OSError:
                        break  # it died: its messages so far, then EOF, come below
                if not queue and not w.pending and not w.closing:
                    w.closing = True
                    with contextlib.suppress(OSError):
                        wire.send(w.sock, None)
            for key, _ in sel.select(0.2):
                w = key.data
                if not self._receive(w, left):
                    sel.unregister(w.sock)
                    live.remove(w)
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("the restore was cancelled")
        for item in queue:  # every worker stopped early
            left.extend(wire.entries_of(item))

    def _receive(self, w: Worker, left: list[Entry]) -> bool:
        """Handle one message; False once the worker has finished or died."""
        try:
            msg = wire.recv(w.sock)
        except (EOFError, OSError):
            for item in w.pending:
                left.extend(wire.entries_of(item))
            w.pending.clear()
            return False
        if isinstance(msg, wire.Progress):
            self.progress.add_bytes(msg.nbytes)
        elif isinstance(msg, wire.Done):
            entries = wire.entries_of(w.pending.popleft())
            for i, text in msg.notes:
                self.note(entries[i], text)
            for entry, done in zip(entries, msg.done, strict=True):
                if done:
                    entry.done = True
                    self.progress.file_done()
                else:
                    left.append(entry)
        elif isinstance(msg, wire.Finished):
            for name, wall, busy in msg.phases:
                self.phases.merge(name, wall, busy)
            w.finished = True
            return False
        return True

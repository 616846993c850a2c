"""Verify the packs of ``check --read-data`` in worker processes (``check_worker``).

Verifying a pack of many small blobs is Python per blob around C calls (decryption, zstd,
keyed BLAKE3) too short to let the interpreter lock go; three reader threads of one process
kept one core busy and left the other idle (``docs/performance.md``). Workers each verify
whole packs with the same code (``check_packs.read_pack``) while the checking process walks
the snapshots' trees, which is Python as well.

A thread of the checking process hands out the packs a few at a time and collects each
pack's errors. A pack counts as read only when a worker has answered for it; whatever no
worker answered for (one died, none could start, the serving thread failed) is read again
in-process, so no pack is ever left out or reported twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from drengine.core import workers as workers_mod
from drengine.core.phases import Phases
from drengine.core.workers import Finished, Worker, recv, send
from drengine.crypto.keys import MasterKeys
from drengine.engine.check_packs import PackBlobs
from drengine.repository.config import Config
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.repo import Repository
from drengine.storage.options import BackendSpec
from drengine.storage.url import reopen_spec

ENV = "DRENGINE_CHECK_PROCESSES"  # 0: verify in-process; N: exactly N worker processes
# Less to read than this: starting interpreters (~0.3 s each here) costs more than it saves.
_MIN_BYTES = 64 << 20
_MAX_PROCESSES = 4
# Packs sent to a worker before it answers. One: the next goes out once the worker answered,
# when it is reading again. With two, a worker sending a large answer (a pack of thousands of
# damaged blobs) and this process sending it a large item could each wait for the other.
# The round trip it costs is small against verifying a pack.
_IN_FLIGHT = 1
_WORKER = workers_mod.module_command("drengine.engine.check_worker")  # + the socket's fd

log = logging.getLogger(__name__)


@dataclass
class Setup:
    storage: BackendSpec  # the packs' storage, opened again by the worker
    keys: MasterKeys
    config: Config


# A blob's index fields on the wire: type, offset, length, raw length.
_RECORD = struct.Struct("<BQQQ")


@dataclass
class PackItem:
    """A pack to verify with its indexed blobs, packed flat: pickling tens of thousands of
    ``IndexEntry`` tuples cost the checking process ~2.5 µs of interpreter time per blob,
    which its tree walk needs."""

    pack_id: bytes
    ids: bytes  # the blob IDs, 32 bytes each
    records: bytes  # ``_RECORD`` per blob, in the same order

    @classmethod
    def of(cls, pack_id: bytes, blobs: PackBlobs) -> PackItem:
        ids = b"".join([bid for bid, _ in blobs])
        records = b"".join(
            [_RECORD.pack(e.type, e.offset, e.length, e.raw_length) for _, e in blobs]
        )
        return cls(pack_id, ids, records)

    def blobs(self) -> PackBlobs:
        ids, pack_id = self.ids, self.pack_id
        return [
            (ids[32 * i : 32 * i + 32], IndexEntry(pack_id, BlobType(t), off, length, raw))
            for i, (t, off, length, raw) in enumerate(_RECORD.iter_unpack(self.records))
        ]


@dataclass
class PackDone:
    pack_id: bytes
    errors: list[str]
    blobs_read: int


def process_count(repo: Repository, packs: int, nbytes: int) -> int:
    """Worker processes for reading ``packs`` packs of ``nbytes`` bytes in all; 0 to read
    them in-process."""
    if reopen_spec(repo.backend) is None or packs == 0:
        return 0
    given = os.environ.get(ENV, "").strip()
    if given.isdigit():
        return min(int(given), 16, packs)
    if nbytes < _MIN_BYTES:
        return 0
    cpus = workers_mod.cpus()
    return 0 if cpus < 2 else min(cpus, _MAX_PROCESSES, packs)


class PackWorkers:
    """Started with ``start``; ``results`` waits for them; ``stop`` always, at the end."""

    def __init__(self, repo: Repository, phases: Phases, cancelled: Callable[[], bool]) -> None:
        self.repo = repo
        self.phases = phases
        self.cancelled = cancelled
        self.workers: list[Worker] = []
        self.done: dict[bytes, PackDone] = {}
        self._thread: threading.Thread | None = None

    def start(self, n: int, packs: list[tuple[bytes, PackBlobs]]) -> None:
        spec = reopen_spec(self.repo.backend)
        assert spec is not None  # ``process_count`` said so
        self.workers = workers_mod.start(n, _WORKER)
        setup = Setup(spec, self.repo.keys, self.repo.config)
        items = deque(PackItem.of(p, blobs) for p, blobs in packs)
        self._thread = threading.Thread(
            target=self._serve, args=(setup, items), name="check-workers", daemon=True
        )
        self._thread.start()

    def results(self) -> dict[bytes, PackDone]:
        """Each pack a worker answered for (the others are the caller's to read)."""
        if self._thread is not None:
            self._thread.join()
        return self.done

    def stop(self) -> None:
        workers_mod.stop(self.workers)
        if self._thread is not None:
            self._thread.join()

    def _serve(self, setup: Setup, queue: deque[PackItem]) -> None:
        try:
            self._serve_until_done(setup, queue)
        except Exception:  # what no worker answered for is read in-process
            log.debug("serving the check workers failed", exc_info=True)
        finally:
            workers_mod.stop(self.workers)

    def _serve_until_done(self, setup: Setup, queue: deque[PackItem]) -> None:
        sel = selectors.DefaultSelector()
        live = []
        for w in self.workers:
            with contextlib.suppress(OSError):
                send(w.sock, setup)
                sel.register(w.sock, selectors.EVENT_READ, w)
                live.append(w)
        while live and not self.cancelled():
            for w in live:
                while len(w.pending) < _IN_FLIGHT and queue:
                    item = queue.popleft()
                    w.pending.append(item)
                    try:
                        send(w.sock, item)
                    except OSError:
                        break  # it died: its answers so far, then EOF, come below
                if not queue and not w.pending and not w.closing:
                    w.closing = True
                    with contextlib.suppress(OSError):
                        send(w.sock, None)
            for key, _ in sel.select(0.2):
                w = key.data
                if not self._receive(w, queue):
                    sel.unregister(w.sock)
                    live.remove(w)

    def _receive(self, w: Worker, queue: deque[PackItem]) -> bool:
        """Handle one message; False once the worker has finished or died."""
        try:
            msg = recv(w.sock)
        except (EOFError, OSError):
            queue.extend(w.pending)  # another worker (or the caller) reads them
            w.pending.clear()
            return False
        if isinstance(msg, PackDone):
            item = w.pending.popleft()
            if item.pack_id == msg.pack_id:
                self.done[msg.pack_id] = msg
            else:  # not the answer to what was asked: the pack is read again
                queue.append(item)
        elif isinstance(msg, Finished):
            for name, wall, busy in msg.phases:
                self.phases.merge(name, wall, busy)
            w.finished = True
            return False
        return True

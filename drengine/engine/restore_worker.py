"""A restore's writer process: ``python -m drengine.engine.restore_worker FD``.

Started by ``restore_procs`` with one end of a socket pair as ``FD``. It opens the pack
storage again, receives the target's descriptor and the plan's directories, and writes the
files it is sent exactly as an in-process restore does (``FileWriter``: temporary name,
every byte read back, whole-content hash, then rename), reporting per entry whether it is
done. It reads nothing but packs and holds no lock: the parent holds the repository's lock
for the whole restore and outlives it.

SIGINT is ignored (the parent decides what a Ctrl-C stops); SIGTERM cancels between
files, so no temporary file is left behind. A worker whose parent went away sees the socket
close and stops.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from drengine.core.errors import Cancelled
from drengine.core.phases import Phases
from drengine.core.progress import Progress
from drengine.core.workers import worker_main
from drengine.engine import restore_wire as wire
from drengine.engine.restore_dirs import DirFds, default_limit
from drengine.engine.restore_files import FileWriter, TempNames
from drengine.engine.restore_plan import Entry
from drengine.repository.index_entry import IndexEntry
from drengine.repository.pack import BlobRecord
from drengine.repository.repo import Repository
from drengine.storage.url import open_backend

_FETCH_WORKERS = 4
_PROGRESS_EVERY = 0.25  # seconds between progress messages while bytes are written


class _Link:
    """The socket, shared by the writing thread and the progress thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, obj: object) -> None:
        with self._lock:
            wire.send(self.sock, obj)


def _report_progress(link: _Link, progress: Progress, stop: threading.Event) -> None:
    sent = 0
    try:
        while not stop.wait(_PROGRESS_EVERY):
            now = progress.bytes_done
            if now != sent:
                link.send(wire.Progress(now - sent))
                sent = now
        if progress.bytes_done != sent:
            link.send(wire.Progress(progress.bytes_done - sent))
    except OSError:
        return  # the parent went away: the writing thread finds out on its next message


def _index(repo: Repository, blobs: list[tuple[bytes, IndexEntry]]) -> None:
    """Make the items' blobs known to this process's index (it starts empty)."""
    for blob_id, ie in blobs:
        repo.index.add_pack(
            ie.pack_id, [BlobRecord(ie.type, blob_id, ie.offset, ie.length, ie.raw_length)]
        )


def serve(sock: socket.socket) -> None:
    setup = wire.recv(sock)
    assert isinstance(setup, wire.Setup)
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    root_fd = fds[0]
    repo = Repository(open_backend(setup.storage.url, setup.storage.s3), setup.keys, setup.config)
    dirs = DirFds(root_fd, setup.parents, setup.names, default_limit())
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    link = _Link(sock)
    progress = Progress()
    phases = Phases()
    notes: list[tuple[Entry, str]] = []
    writer = FileWriter(
        repo, dirs, TempNames(), progress, lambda e, m: None, is_root=setup.is_root,
        phases=phases, cancel=cancel, note=lambda e, m: notes.append((e, m)),
    )  # fmt: skip
    stop = threading.Event()
    reporter = threading.Thread(target=_report_progress, args=(link, progress, stop), daemon=True)
    reporter.start()
    try:
        with ThreadPoolExecutor(_FETCH_WORKERS, thread_name_prefix="fetch") as fetch:
            while (got := wire.recv(sock)) is not None:
                item = wire.unflat(got) if isinstance(got, wire.FlatBatch) else got
                entries = wire.entries_of(item)  # type: ignore[arg-type]
                notes.clear()
                if isinstance(item, wire.BatchItem):
                    _index(repo, [(n.content[0], ie) for _, n, ie in item.batch.items])
                    writer.write_batch(item.batch)
                elif isinstance(item, wire.FileItem):
                    _index(repo, item.blobs)
                    writer.write(item.entry, fetch, None)
                pos = {id(e): i for i, e in enumerate(entries)}
                done = wire.Done([e.done for e in entries], [(pos[id(e)], m) for e, m in notes])
                link.send(done)
    except Cancelled:
        pass
    finally:
        stop.set()
        reporter.join()
        dirs.close()
    link.send(wire.Finished.of(phases))


def main(argv: list[str]) -> int:
    return worker_main(argv, serve, "a restore writer process")


if __name__ == "__main__":
    sys.exit(main(sys.argv))

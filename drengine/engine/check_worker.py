"""A check's worker process: ``python -m drengine.engine.check_worker FD``.

Started by ``check_procs`` with one end of a socket pair as ``FD``. It opens the pack
storage again and verifies each pack it is sent exactly as the checking process would
(``check_packs.read_pack``: the pack's name against its hash, its trailer against the index,
every blob decrypted, decompressed and hashed against its ID), answering with the pack's
errors. It holds no lock and writes nothing: the checking process holds the repository's
lock and outlives it.

SIGINT is ignored (the checking process decides what a Ctrl-C stops); SIGTERM stops it
after its pack. A worker whose parent went away sees the socket close and stops.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from drengine.core.phases import Phases
from drengine.core.workers import Finished, recv, send, worker_main
from drengine.engine.check_packs import read_pack
from drengine.engine.check_procs import PackDone, PackItem, Setup
from drengine.repository.repo import Repository
from drengine.storage.url import open_backend


def serve(sock: socket.socket) -> None:
    setup = recv(sock)
    assert isinstance(setup, Setup)
    repo = Repository(open_backend(setup.storage.url, setup.storage.s3), setup.keys, setup.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    phases = Phases()
    while not stop.is_set() and (item := recv(sock)) is not None:
        assert isinstance(item, PackItem)
        errors, n = read_pack(repo, item.pack_id, item.blobs(), phases)
        send(sock, PackDone(item.pack_id, errors, n))
    send(sock, Finished.of(phases))


def main(argv: list[str]) -> int:
    return worker_main(argv, serve, "a check worker process")


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Read a file's blobs in order while the next few are fetched in parallel."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from drengine.core.phases import NO_PHASES, Phases
from drengine.repository.repo import Repository

_AHEAD = 8

# Called in a pool thread with (offset of the blob in the file, its verified plaintext):
# restore writes there, so writes of one large file run in parallel.
Sink = Callable[[int, bytes], None]


def blob_stream(
    repo: Repository,
    ids: list[bytes],
    pool: ThreadPoolExecutor | None,
    sink: Sink | None = None,
    phases: Phases = NO_PHASES,
) -> Iterator[bytes]:
    """Verified plaintext of each blob of ``ids``, in order.

    With a ``sink``, each blob is also handed to it (in the fetching thread) before it is
    yielded. ``pool`` must never wait on this caller.
    """

    def fetch(bid: bytes, offset: int) -> bytes:
        data = repo.read_blob(bid, phases)
        if sink is not None:
            sink(offset, data)
        return data

    offsets = []
    pos = 0
    for bid in ids:
        offsets.append(pos)
        pos += repo.lookup(bid).raw_length
    if pool is None or len(ids) <= 1:
        for bid, off in zip(ids, offsets, strict=True):
            yield fetch(bid, off)
        return
    window: deque[Future[bytes]] = deque()
    todo = iter(zip(ids, offsets, strict=True))
    try:
        for bid, off in todo:
            window.append(pool.submit(fetch, bid, off))
            if len(window) >= _AHEAD:
                break
        while window:
            data = window.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                window.append(pool.submit(fetch, *nxt))
            yield data
    finally:
        for f in window:
            f.cancel()
        for f in window:
            if not f.cancelled():
                f.exception()  # a running write must finish before the file is closed

"""Read a file's blobs in order while the next few are fetched in parallel."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from drengine.repository.repo import Repository

_AHEAD = 6


def blob_stream(
    repo: Repository, ids: list[bytes], pool: ThreadPoolExecutor | None
) -> Iterator[bytes]:
    """Verified plaintext of each blob of ``ids``; ``pool`` must never wait on this caller."""
    if pool is None or len(ids) <= 1:
        for bid in ids:
            yield repo.read_blob(bid)
        return
    window: deque[Future[bytes]] = deque()
    it = iter(ids)
    try:
        for bid in it:
            window.append(pool.submit(repo.read_blob, bid))
            if len(window) >= _AHEAD:
                break
        while window:
            data = window.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.submit(repo.read_blob, nxt))
            yield data
    finally:
        for f in window:
            f.cancel()

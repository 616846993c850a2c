"""Read a file's blobs in order while the next few are fetched in parallel.

Blobs that a backup stored one after the other lie next to each other in a pack, so a large
file's content is read in *segments*: one ranged read spanning several neighbouring blobs
(up to ``_SEGMENT`` bytes), then each blob is split off, decrypted and verified. On S3 that
is one GET per few MiB instead of one per ~1 MiB blob, with several segments in flight. A
blob that does not verify from its segment is read again alone, through ``read_blob``,
which passes over a damaged copy for another one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from drengine.core.errors import DrengineError
from drengine.core.phases import NO_PHASES, Phases
from drengine.repository.index import IndexEntry
from drengine.repository.repo import Repository

_AHEAD = 8  # reads in flight at most
_AHEAD_BYTES = 24 << 20  # and no more bytes than this (while at least two are in flight)
_SEGMENT = 4 << 20  # at most this many bytes per ranged read
_GAP = 64 << 10  # read across this much of other blobs rather than issue another request

# Called in a pool thread with (offset of the blob in the file, its verified plaintext):
# restore writes there, so writes of one large file run in parallel.
Sink = Callable[[int, bytes], None]


@dataclass
class _Segment:
    pack_id: bytes
    start: int
    end: int
    blobs: list[tuple[bytes, IndexEntry, int]] = field(default_factory=list)  # id, entry, offset


def segments(repo: Repository, ids: list[bytes]) -> list[_Segment]:
    """The file's blobs in order, grouped into runs that one ranged read covers."""
    out: list[_Segment] = []
    pos = 0
    for bid in ids:
        e = repo.lookup(bid)
        cur = out[-1] if out else None
        end = e.offset + e.length
        if (
            cur is None
            or cur.pack_id != e.pack_id
            or not cur.end <= e.offset <= cur.end + _GAP
            or end - cur.start > _SEGMENT
        ):
            cur = _Segment(e.pack_id, e.offset, end)
            out.append(cur)
        cur.blobs.append((bid, e, pos))
        cur.end = end
        pos += e.raw_length
    return out


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

    def fetch(seg: _Segment) -> list[bytes]:
        buf = None
        if len(seg.blobs) > 1:
            try:
                with phases.span("fetch"):
                    buf = memoryview(repo.read_pack(seg.pack_id, seg.start, seg.end - seg.start))
            except DrengineError:
                buf = None  # each blob alone, through every copy there is
        out = []
        for bid, e, offset in seg.blobs:
            data = None
            if buf is not None:
                rel = e.offset - seg.start
                try:
                    with phases.span("decrypt"):
                        data = repo.open_blob(bid, e, buf[rel : rel + e.length])
                except DrengineError:
                    data = None
            if data is None:
                data = repo.read_blob(bid, phases)
            if sink is not None:
                sink(offset, data)
            out.append(data)
        return out

    segs = segments(repo, ids)
    if pool is None or len(segs) <= 1:
        for seg in segs:
            yield from fetch(seg)
        return
    window: deque[tuple[Future[list[bytes]], int]] = deque()
    todo = deque(segs)
    in_flight = 0
    try:
        while window or todo:
            while todo and (len(window) < 2 or (len(window) < _AHEAD and in_flight < _AHEAD_BYTES)):
                seg = todo.popleft()
                window.append((pool.submit(fetch, seg), seg.end - seg.start))
                in_flight += seg.end - seg.start
            future, size = window.popleft()
            blobs = future.result()
            in_flight -= size
            yield from blobs
    finally:
        for f, _ in window:
            f.cancel()
        for f, _ in window:
            if not f.cancelled():
                f.exception()  # a running write must finish before the file is closed

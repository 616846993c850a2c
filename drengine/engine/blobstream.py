"""Read a file's blobs in order while the next few are fetched in parallel.

Blobs that a backup stored one after the other lie next to each other in a pack, so a large
file's content is read in *segments*: one ranged read spanning several neighbouring blobs
(up to ``_SEGMENT`` bytes), then each blob is split off, decrypted and verified. On S3 that
is one GET per few MiB instead of one per ~1 MiB blob, with several segments in flight. A
blob that does not verify from its segment is read again alone, through ``read_blob``,
which passes over a damaged copy for another one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from drengine.core.errors import DrengineError
from drengine.core.phases import NO_PHASES, Phases
from drengine.repository.index_entry import IndexEntry
from drengine.repository.repo import Repository

_AHEAD = 8  # reads in flight at most
# and no more plaintext than this (while at least two are in flight): a run's blobs are held
# decrypted until the file gets past them, and text decompresses to ~4x what was read (a
# restore of a 76 MB text file peaked with 46 MB of them when this counted stored bytes).
_AHEAD_BYTES = 24 << 20
_SEGMENT = 4 << 20  # at most this many bytes per ranged read
_GAP = 256 << 10  # read across this much of other blobs rather than issue another request
_OPEN_PACKS = 4  # packs whose last run a later blob of the file may continue

# Called in a pool thread with (offset of the blob in the file, its verified plaintext):
# restore writes there, so writes of one large file run in parallel.
Sink = Callable[[int, bytes], None]


@dataclass
class _Segment:
    pack_id: bytes
    start: int
    end: int
    blobs: list[tuple[bytes, IndexEntry, int]] = field(default_factory=list)  # id, entry, offset
    plain: int = 0  # the blobs' plaintext bytes


def segments(repo: Repository, ids: list[bytes]) -> tuple[list[_Segment], list[tuple[int, int]]]:
    """The file's blobs grouped into runs that one ranged read covers, each run in one pack,
    ordered by their first blob; and per blob in file order (its run, its place in it).

    Two sealer threads fill a pack each, so the blobs of one large file alternate between
    two packs, lying next to each other within each: a run goes on in its pack across the
    blobs of the other (63 blobs took 33 reads one run at a time, 6 so). Only the
    ``_OPEN_PACKS`` packs used last may continue a run, which bounds the runs read but not
    yet used up.
    """
    out: list[_Segment] = []
    order: list[tuple[int, int]] = []
    open_runs: OrderedDict[bytes, int] = OrderedDict()  # pack -> index of its last run
    pos = 0
    for bid in ids:
        e = repo.lookup(bid)
        end = e.offset + e.length
        k = open_runs.get(e.pack_id, -1)
        cur = out[k] if k >= 0 else None
        if cur is None or not cur.end <= e.offset <= cur.end + _GAP or end - cur.start > _SEGMENT:
            k = len(out)
            cur = _Segment(e.pack_id, e.offset, end)
            out.append(cur)
        open_runs[e.pack_id] = k
        open_runs.move_to_end(e.pack_id)
        if len(open_runs) > _OPEN_PACKS:
            open_runs.popitem(last=False)
        order.append((k, len(cur.blobs)))
        cur.blobs.append((bid, e, pos))
        cur.plain += e.raw_length
        cur.end = end
        pos += e.raw_length
    return out, order


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

    segs, order = segments(repo, ids)
    if pool is None or len(segs) <= 1:
        got: dict[int, list[bytes]] = {}
        for k, j in order:
            if k not in got:
                got[k] = fetch(segs[k])
            yield got[k][j]
            if j == len(segs[k].blobs) - 1:
                del got[k]  # a run's blobs are yielded in its order: this was its last
        return
    # Runs read or being read and not used up, and their bytes: at least two in flight, then
    # up to ``_AHEAD`` and ``_AHEAD_BYTES``; the run the next blob needs is always started.
    window: dict[int, Future[list[bytes]]] = {}
    in_flight = 0
    started = 0
    try:
        for k, j in order:
            while started < len(segs) and (
                started <= k
                or len(window) < 2
                or (len(window) < _AHEAD and in_flight < _AHEAD_BYTES)
            ):
                seg = segs[started]
                window[started] = pool.submit(fetch, seg)
                in_flight += seg.plain
                started += 1
            yield window[k].result()[j]
            if j == len(segs[k].blobs) - 1:
                del window[k]
                in_flight -= segs[k].plain
    finally:
        for f in window.values():
            f.cancel()
        for f in window.values():
            if not f.cancelled():
                f.exception()  # a running write must finish before the file is closed

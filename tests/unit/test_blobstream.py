"""``blob_stream``: a file's blobs in file order, read in runs per pack (the blobs of one
file alternate between the packs of two sealers), damaged copies read alone, memory bounded."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from drengine.core.errors import IntegrityError
from drengine.engine import blobstream
from drengine.engine.blobstream import blob_stream, segments
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType


class FakeRepo:
    """Packs as byte strings; a blob's "ciphertext" is its plaintext."""

    def __init__(self) -> None:
        self.packs: dict[bytes, bytearray] = {}
        self.index: dict[bytes, IndexEntry] = {}
        self.damaged: set[bytes] = set()  # blobs whose copy in the pack does not verify
        self.reads: list[tuple[bytes, int, int]] = []
        self.alone: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, pack: bytes, blob_id: bytes, data: bytes, gap: int = 0) -> None:
        buf = self.packs.setdefault(pack, bytearray())
        buf += b"\0" * gap  # other files' blobs
        self.index[blob_id] = IndexEntry(pack, BlobType.DATA, len(buf), len(data), len(data))
        buf += data

    def lookup(self, blob_id: bytes) -> IndexEntry:
        return self.index[blob_id]

    def read_pack(self, pack_id: bytes, offset: int, length: int) -> bytes:
        with self.lock:
            self.reads.append((pack_id, offset, length))
        return bytes(self.packs[pack_id][offset : offset + length])

    def open_blob(self, blob_id: bytes, e: IndexEntry, ct: memoryview) -> bytes:
        if blob_id in self.damaged:
            raise IntegrityError("damaged")
        return bytes(ct)

    def read_blob(self, blob_id: bytes, phases: object = None) -> bytes:
        with self.lock:
            self.alone.append(blob_id)
        e = self.index[blob_id]
        return bytes(self.packs[e.pack_id][e.offset : e.offset + e.length])


def _file(repo: FakeRepo, n: int, seed: int, packs: int = 2, gaps: bool = False) -> list[bytes]:
    """A file of ``n`` blobs spread over ``packs`` packs the way sealers spread them."""
    rng = random.Random(seed)
    ids = []
    for i in range(n):
        bid = i.to_bytes(4, "big") + bytes(28)
        data = bytes([i % 251]) * rng.randint(1, 300_000)
        gap = rng.choice([0, 0, 1000, 200_000, 2_000_000]) if gaps else 0
        repo.add(b"P%d" % rng.randrange(packs), bid, data, gap)
        ids.append(bid)
    return ids


@pytest.mark.parametrize("threads", [0, 1, 4])
@pytest.mark.parametrize("seed", range(6))
def test_blobs_come_in_file_order_whatever_the_packs(threads: int, seed: int) -> None:
    repo = FakeRepo()
    ids = _file(repo, 60, seed, packs=1 + seed % 5, gaps=seed % 2 == 1)
    repo.damaged = {ids[7], ids[31]}
    written: dict[int, bytes] = {}
    pool = ThreadPoolExecutor(threads) if threads else None
    got = list(
        blob_stream(repo, ids, pool, lambda off, d: written.__setitem__(off, d))  # type: ignore[arg-type]
    )
    want = [repo.read_blob(b) for b in ids]
    assert got == want
    offsets = [0]
    for d in want[:-1]:
        offsets.append(offsets[-1] + len(d))
    assert written == dict(zip(offsets, want, strict=True))
    assert set(repo.alone) >= {ids[7], ids[31]}  # read alone after failing in their run


def test_alternating_packs_are_read_in_few_runs() -> None:
    repo = FakeRepo()
    ids = []
    for i in range(40):  # blob i in pack i % 2, each pack's blobs back to back
        bid = bytes([i]) * 32
        repo.add(b"AB"[i % 2 : i % 2 + 1], bid, bytes([i]) * 100_000)
        ids.append(bid)
    segs, order = segments(repo, ids)  # type: ignore[arg-type]
    assert len(segs) <= 2 * -(-40 * 100_000 // (2 * blobstream._SEGMENT)) + 2
    assert [segs[k].blobs[j][0] for k, j in order] == ids


def test_runs_read_ahead_stay_bounded() -> None:
    repo = FakeRepo()
    ids = _file(repo, 300, 1, packs=3)
    live = 0
    peak = 0
    lock = threading.Lock()
    real = repo.read_pack

    def counted(pack_id: bytes, offset: int, length: int) -> bytes:
        nonlocal live, peak
        with lock:
            live += length
            peak = max(peak, live)
        return real(pack_id, offset, length)

    repo.read_pack = counted  # type: ignore[method-assign]
    segs, _ = segments(repo, ids)  # type: ignore[arg-type]
    sizes = {(s.pack_id, s.start): s.end - s.start for s in segs}
    stream = blob_stream(repo, ids, ThreadPoolExecutor(4))  # type: ignore[arg-type]
    ends = {segs[k].blobs[-1][0]: (segs[k].pack_id, segs[k].start) for k in range(len(segs))}
    for bid in ids:
        next(stream)
        if bid in ends:
            with lock:
                live -= sizes[ends[bid]]
    # The window's bytes, plus the runs that later blobs of open packs still need.
    assert peak <= blobstream._AHEAD_BYTES + (blobstream._OPEN_PACKS + 2) * blobstream._SEGMENT

"""The in-memory index: blob ID -> (pack, type, offset, length, raw length).

Held as a few sorted *runs* of numpy columns plus a small dict of blobs added since the last
run was made. A run stores a blob in 49 bytes: the ID's first 8 bytes as a uint64 sort key,
the other 24 bytes, a pack number and four small integers; 10^7 blobs take ~490 MB rather
than several GB of Python objects. IDs are keyed hashes, so their prefixes are uniform and a
binary search on the key finds a blob; equal keys are resolved by comparing the rest.

A look-up is a ``bisect`` over a memoryview of each run's keys (C code, no numpy scalar per
step), so it costs a few microseconds whatever the index size. Additions go to the dict;
every ``_RUN_AT`` of them become a new run (sorting those only), and runs of similar size
are merged, outside the lock, so the number of runs stays logarithmic and no addition ever
re-sorts the whole index while look-ups wait. The object format is in ``index_format``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord

if TYPE_CHECKING:
    from drengine.repository.pack_blobs import BlobsByPack

_RUN_AT = 1 << 16
_TAIL = 24  # bytes of an ID after its 8-byte key
_TYPES = {int(t): t for t in BlobType}  # BlobType(n) costs an enum call per look-up
_DTYPES = {
    "pack": np.uint32,
    "type": np.uint8,
    "offset": np.uint32,
    "length": np.uint32,
    "raw": np.uint32,
}
_COLUMNS = tuple(_DTYPES)
_NONE: frozenset[bytes] = frozenset()


class _Run:
    """One immutable run sorted by key, with memoryviews for look-ups without numpy calls."""

    __slots__ = ("_f", "_k", "_l", "_o", "_p", "_r", "_shift", "_t", "_y", "cols", "keys", "tails")

    def __init__(self, keys: np.ndarray, tails: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.keys, self.tails, self.cols = keys, tails, cols
        self._k = keys.data
        self._t = tails.data.cast("B") if len(tails) else memoryview(b"")
        self._p = cols["pack"].data
        self._y = cols["type"].data
        self._o = cols["offset"].data
        self._l = cols["length"].data
        self._r = cols["raw"].data
        # A fence of 2**bits start positions by the key's top bits: the bisect then walks
        # ~64 keys instead of all (4 bytes per 64 blobs).
        bits = min(max(len(keys).bit_length() - 6, 0), 24)
        self._shift = 64 - bits
        bounds = np.arange(1 << bits, dtype=np.uint64) << np.uint64(self._shift)
        fence = np.append(np.searchsorted(keys, bounds), len(keys)).astype(np.uint32)
        self._f = fence.data

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def build(cls, ids: np.ndarray, cols: dict[str, np.ndarray]) -> _Run:
        """From unsorted IDs (a V32 array) and their columns."""
        raw = np.frombuffer(ids.tobytes(), dtype=np.uint8).reshape(-1, 32)
        keys = raw[:, :8].copy().view(">u8").ravel().astype(np.uint64)
        order = np.argsort(keys, kind="stable")
        tails = np.ascontiguousarray(raw[order, 8:]).view(f"V{_TAIL}").ravel()
        return cls(keys[order], tails, {c: np.ascontiguousarray(a[order]) for c, a in cols.items()})

    @classmethod
    def merge(cls, a: _Run, b: _Run) -> _Run:
        keys = np.concatenate([a.keys, b.keys])
        order = np.argsort(keys, kind="stable")  # timsort: two sorted runs merge in O(n)
        tails = np.concatenate([a.tails, b.tails])[order]
        cols = {c: np.concatenate([a.cols[c], b.cols[c]])[order] for c in _COLUMNS}
        return cls(keys[order], tails, cols)

    def find(self, key: int, tail: bytes) -> int:
        """The first position of the ID (key and tail) at or after the start, or -1."""
        k, t, b = self._k, self._t, key >> self._shift
        hi = self._f[b + 1]
        i = bisect_left(k, key, self._f[b], hi)
        while i < hi and k[i] == key:
            if t[i * _TAIL : (i + 1) * _TAIL] == tail:
                return i
            i += 1
        return -1

    def find_all(self, key: int, tail: bytes) -> Iterator[int]:
        """Every position of the ID: more than one if stored in several packs."""
        k, t, b = self._k, self._t, key >> self._shift
        hi = self._f[b + 1]
        i = bisect_left(k, key, self._f[b], hi)
        while i < hi and k[i] == key:
            if t[i * _TAIL : (i + 1) * _TAIL] == tail:
                yield i
            i += 1

    def row(self, i: int) -> tuple[int, int, int, int, int]:
        return self._p[i], self._y[i], self._o[i], self._l[i], self._r[i]


def _key(blob_id: bytes) -> int:
    return int.from_bytes(blob_id[:8], "big")


class Index:
    """Thread-safe look-ups; additions from pack uploads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._merge_lock = threading.Lock()  # one merge at a time, never holding _lock
        self._pack_ids: list[bytes] = []
        self._pack_no: dict[bytes, int] = {}
        self._runs: tuple[_Run, ...] = ()  # largest first
        self._overlay: dict[bytes, tuple[int, int, int, int, int]] = {}
        self._staged: list[tuple[int, np.ndarray]] = []
        # Packs found missing from storage: their entries are skipped, so a look-up finds
        # another copy of the blob if there is one, and a backup stores the blob again.
        self._missing: set[int] = set()

    def _pack_number(self, pack_id: bytes) -> int:
        no = self._pack_no.get(pack_id)
        if no is None:
            no = len(self._pack_ids)
            self._pack_ids.append(pack_id)
            self._pack_no[pack_id] = no
        return no

    def stage_pack_array(self, pack_id: bytes, records: np.ndarray) -> None:
        """Add a pack's records (``index_format.RECORD_DTYPE`` array) in bulk; call ``build``
        when done (loading an index sorts once, not once per pack)."""
        with self._lock:
            self._staged.append((self._pack_number(pack_id), records))

    def build(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, []
        if not staged:
            return
        records = np.concatenate([r for _, r in staged])
        packs = np.concatenate([np.full(len(r), no, dtype=np.uint32) for no, r in staged])
        del staged
        cols = {c: records[c].astype(t) for c, t in _DTYPES.items() if c != "pack"}
        cols["pack"] = packs
        self._add_run(_Run.build(records["id"], cols))

    def add_pack(self, pack_id: bytes, records: Iterable[BlobRecord]) -> None:
        with self._lock:
            no = self._pack_number(pack_id)
            for r in records:
                self._overlay[r.id] = (no, int(r.type), r.offset, r.length, r.raw_length)
            if len(self._overlay) < _RUN_AT:
                return
            # Sorting these few blobs under the lock keeps the overlay and the runs
            # consistent for readers; merging with the big runs happens outside it.
            items = self._overlay.items()
            ids = np.frombuffer(b"".join(bid for bid, _ in items), dtype="V32")
            vals = np.array([v for _, v in items], dtype=np.uint64)
            cols = {c: vals[:, n].astype(t) for n, (c, t) in enumerate(_DTYPES.items())}
            self._runs = (*self._runs, _Run.build(ids, cols))
            self._overlay = {}
        self._merge()

    def _add_run(self, run: _Run) -> None:
        with self._lock:
            self._runs = (*self._runs, run)
        self._merge()

    def _merge(self) -> None:
        """Merge the two smallest runs while they are of equal size or the newer is larger
        (a binary counter: O(log n) runs, each blob merged O(log n) times), computing each
        merge without holding the look-up lock."""
        with self._merge_lock:
            while True:
                runs = self._runs
                if len(runs) < 2 or len(runs[-2]) > len(runs[-1]):
                    return
                merged = _Run.merge(runs[-2], runs[-1])
                with self._lock:
                    # Runs are only appended meanwhile: the two merged are still at n-2, n-1.
                    n = len(runs)
                    self._runs = (*self._runs[: n - 2], merged, *self._runs[n:])

    def mark_missing(self, pack_id: bytes) -> bool:
        """Skip this pack's entries from now on; False if it was not indexed or already
        skipped."""
        with self._lock:
            no = self._pack_no.get(pack_id)
            if no is None or no in self._missing:
                return False
            self._missing.add(no)
            return True

    def _rows(self, blob_id: bytes) -> Iterator[tuple[int, int, int, int, int]]:
        """Every stored (pack number, type, offset, length, raw) of the blob; hold _lock."""
        hit = self._overlay.get(blob_id)
        if hit is not None:
            yield hit
        key, tail = _key(blob_id), blob_id[8:]
        for run in self._runs:
            for i in run.find_all(key, tail):
                yield run.row(i)

    def _first(self, blob_id: bytes) -> tuple[int, int, int, int, int] | None:
        """The fast path of ``_rows``: its first row, if not in a missing pack; hold _lock."""
        hit = self._overlay.get(blob_id)
        if hit is not None and hit[0] not in self._missing:
            return hit
        key, tail = int.from_bytes(blob_id[:8], "big"), blob_id[8:]
        for run in self._runs:
            i = run.find(key, tail)
            if i >= 0:
                row = run.row(i)
                if row[0] not in self._missing:
                    return row
        return None

    def lookup(self, blob_id: bytes, skip: frozenset[bytes] = frozenset()) -> IndexEntry | None:
        """The entry of a blob in a pack not marked missing and not in ``skip``."""
        with self._lock:
            if not skip:
                row = self._first(blob_id)
                if row is None and not self._missing:
                    return None
            if skip or row is None:  # rare: look at every copy
                row = next((r for r in self._rows(blob_id) if self._usable(r[0], skip)), None)
            if row is None:
                return None
            no, t, off, ln, raw = row
            return IndexEntry(self._pack_ids[no], _TYPES[t], off, ln, raw)

    def lookup_many(self, blob_ids: list[bytes]) -> list[IndexEntry | None]:
        """``lookup`` of each blob, searched in every run at once (a restore plans tens of
        thousands: one at a time they cost ~12 µs each in Python). What the vectorised
        search cannot settle (in the overlay, a key shared with another ID at the found
        position, a pack marked missing) is looked up one by one."""
        n = len(blob_ids)
        if n < 64 or any(len(b) != 32 for b in blob_ids):
            return [self.lookup(b) for b in blob_ids]
        raw = np.frombuffer(b"".join(blob_ids), dtype=np.uint8).reshape(n, 32)
        keys = raw[:, :8].copy().view(">u8").ravel().astype(np.uint64)
        tails = raw[:, 8:]
        out: list[IndexEntry | None] = [None] * n
        alone: list[int] = []  # settled by ``lookup``
        with self._lock:
            run_of = np.full(n, -1, dtype=np.int64)
            pos_of = np.zeros(n, dtype=np.int64)
            unsettled = np.ones(n, dtype=bool)  # no run has shown a key match yet
            for r, run in enumerate(self._runs):
                m = len(run)
                if m == 0:
                    continue
                pos = np.searchsorted(run.keys, keys)
                clipped = np.minimum(pos, m - 1)
                same_key = (pos < m) & (run.keys[clipped] == keys) & unsettled
                run_tails = run.tails.view(np.uint8).reshape(m, _TAIL)
                same_id = same_key & (run_tails[clipped] == tails).all(axis=1)
                run_of[same_id] = r
                pos_of[same_id] = clipped[same_id]
                # A key match with another tail: ``find`` would walk on; so does ``lookup``.
                run_of[same_key & ~same_id] = -2
                unsettled &= ~same_key
            runs, overlay, missing = self._runs, self._overlay, self._missing
            for i in range(n):
                r = int(run_of[i])
                if r == -2 or (overlay and blob_ids[i] in overlay):
                    alone.append(i)
                    continue
                if r < 0:
                    if missing:  # a copy in a missing pack may hide another
                        alone.append(i)
                    continue
                no, t, off, ln, rl = runs[r].row(int(pos_of[i]))
                if no in missing:
                    alone.append(i)
                    continue
                out[i] = IndexEntry(self._pack_ids[no], _TYPES[t], off, ln, rl)
        for i in alone:
            out[i] = self.lookup(blob_ids[i])
        return out

    def _usable(self, no: int, skip: frozenset[bytes]) -> bool:
        return no not in self._missing and self._pack_ids[no] not in skip

    def packs_of(self, blob_ids: list[bytes]) -> list[bytes] | None:
        """A usable pack of every blob, or None if one has none (the files cache's test)."""
        out = []
        with self._lock:
            for bid in blob_ids:
                row = self._first(bid)
                if row is None and self._missing:
                    row = next((r for r in self._rows(bid) if self._usable(r[0], _NONE)), None)
                if row is None:
                    return None
                out.append(self._pack_ids[row[0]])
        return out

    def missing_pack_of(self, blob_id: bytes) -> bytes | None:
        """The pack, marked missing, that held the blob (for messages naming what was
        lost), or None."""
        with self._lock:
            for no, *_ in self._rows(blob_id):
                if no in self._missing:
                    return self._pack_ids[no]
        return None

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self.lookup(blob_id) is not None

    def __len__(self) -> int:
        with self._lock:
            staged = sum(len(r) for _, r in self._staged)
            return sum(len(r) for r in self._runs) + len(self._overlay) + staged

    def memory_bytes(self) -> int:
        """Bytes held by the runs' arrays (what the per-blob figure of the docs counts)."""
        with self._lock:
            runs = self._runs
        return sum(
            r.keys.nbytes + r.tails.nbytes + sum(a.nbytes for a in r.cols.values()) for r in runs
        )

    def blob_counts(self) -> dict[bytes, int]:
        """Index entries per pack, packs marked missing left out: the files cache compares
        them between backups to know the index still covers the blobs its rows name."""
        self.build()
        with self._lock:
            counts = np.zeros(len(self._pack_ids), dtype=np.int64)
            for r in self._runs:
                counts += np.bincount(r.cols["pack"], minlength=len(counts))[: len(counts)]
            for v in self._overlay.values():
                counts[v[0]] += 1
            return {
                self._pack_ids[n]: int(counts[n])
                for n in np.flatnonzero(counts).tolist()
                if n not in self._missing
            }

    def pack_ids(self) -> set[bytes]:
        with self._lock:
            used = {int(n) for r in self._runs for n in np.unique(r.cols["pack"])}
            used |= {v[0] for v in self._overlay.values()}
            used |= {no for no, _ in self._staged}
            return {self._pack_ids[n] for n in used if n not in self._missing}

    def by_pack(self, blob_type: BlobType) -> BlobsByPack:
        """Every blob of one type, grouped by pack and sorted by offset, packs marked
        missing left out (``pack_blobs.py``): one pass over the index."""
        from drengine.repository.pack_blobs import BlobsByPack  # it imports IndexEntry

        self.build()
        with self._lock:
            runs, overlay = self._runs, list(self._overlay.items())
            pack_ids, missing = list(self._pack_ids), np.array(sorted(self._missing), np.uint32)
        t = int(blob_type)
        ids: list[np.ndarray] = []
        cols: dict[str, list[np.ndarray]] = {c: [] for c in ("pack", "offset", "length", "raw")}
        for run in runs:
            hit = np.flatnonzero(run.cols["type"] == t)
            raw = np.empty((len(hit), 32), dtype=np.uint8)
            raw[:, :8] = run.keys[hit].astype(">u8").view(np.uint8).reshape(-1, 8)
            raw[:, 8:] = run.tails[hit].view(np.uint8).reshape(-1, _TAIL)
            ids.append(raw.reshape(-1).view("V32"))
            for c, got in cols.items():
                got.append(run.cols[c][hit])
        extra = [(b, v) for b, v in overlay if v[1] == t]
        if extra:
            ids.append(np.frombuffer(b"".join(b for b, _ in extra), dtype="V32"))
            for k, c in enumerate(("pack", "type", "offset", "length", "raw")):
                if c != "type":
                    cols[c].append(np.array([v[k] for _, v in extra], dtype=_DTYPES[c]))
        all_ids = np.concatenate(ids) if ids else np.empty(0, dtype="V32")
        arr = {c: np.concatenate(v) if v else np.empty(0, _DTYPES[c]) for c, v in cols.items()}
        keep = ~np.isin(arr["pack"], missing)
        order = np.lexsort((arr["offset"][keep], arr["pack"][keep]))
        return BlobsByPack(
            blob_type,
            pack_ids,
            arr["pack"][keep][order],
            all_ids[keep][order],
            arr["offset"][keep][order],
            arr["length"][keep][order],
            arr["raw"][keep][order],
        )

    def entries(self) -> Iterator[tuple[bytes, IndexEntry]]:
        """Every (blob ID, entry) outside missing packs; for check and prune, not hot paths."""
        self.build()
        with self._lock:
            runs, overlay = self._runs, list(self._overlay.items())
            pack_ids, missing = list(self._pack_ids), set(self._missing)
        for run in runs:
            keys = run.keys.astype(">u8").tobytes()
            tails = run.tails.tobytes()
            rows = zip(*(run.cols[c].tolist() for c in _COLUMNS), strict=True)
            for i, (no, t, off, ln, raw) in enumerate(rows):
                if no not in missing:
                    bid = keys[i * 8 : i * 8 + 8] + tails[i * _TAIL : (i + 1) * _TAIL]
                    yield bid, IndexEntry(pack_ids[no], _TYPES[t], off, ln, raw)
        for bid, (no, t, off, ln, raw) in overlay:
            if no not in missing:
                yield bid, IndexEntry(pack_ids[no], _TYPES[t], off, ln, raw)

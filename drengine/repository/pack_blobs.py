"""The index's blobs of one type, grouped by pack and sorted by offset (``Index.by_pack``).

Made with one pass over the index for a walk that reads many blobs of a kind together with
their neighbours (a restore reads trees in runs of their pack): a pack's blobs are then a
slice, found by binary search, and a run is built from the arrays without touching the
other blobs of the pack. ~20 bytes per blob of the type.
"""

from __future__ import annotations

import numpy as np

from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType


class BlobsByPack:
    def __init__(
        self,
        blob_type: BlobType,
        pack_ids: list[bytes],
        packs: np.ndarray,  # pack number per blob; blobs sorted by (pack, offset)
        ids: np.ndarray,  # V32
        offsets: np.ndarray,
        lengths: np.ndarray,
        raws: np.ndarray,
    ) -> None:
        self.blob_type = blob_type
        self._pack_no = {p: i for i, p in enumerate(pack_ids)}
        self._pack_ids = pack_ids
        self._packs, self._ids = packs, ids
        self._offsets, self._lengths, self._raws = offsets, lengths, raws

    def _span(self, pack_id: bytes) -> tuple[int, int]:
        no = self._pack_no.get(pack_id)
        if no is None:
            return 0, 0
        lo, hi = np.searchsorted(self._packs, [no, no + 1])
        return int(lo), int(hi)

    def _entries(self, lo: int, hi: int, pack_id: bytes) -> list[tuple[bytes, IndexEntry]]:
        ids = self._ids[lo:hi].tobytes()
        cols = (self._offsets[lo:hi].tolist(), self._lengths[lo:hi].tolist())
        raws = self._raws[lo:hi].tolist()
        return [
            (ids[32 * i : 32 * i + 32], IndexEntry(pack_id, self.blob_type, off, n, raw))
            for i, (off, n, raw) in enumerate(zip(*cols, raws, strict=True))
        ]

    def of(self, pack_id: bytes) -> list[tuple[bytes, IndexEntry]]:
        """Every blob of the type in the pack, by offset."""
        lo, hi = self._span(pack_id)
        return self._entries(lo, hi, pack_id)

    def around(
        self, blob_id: bytes, e: IndexEntry, max_bytes: int, max_gap: int
    ) -> list[tuple[bytes, IndexEntry]]:
        """The run of the pack's blobs that holds ``blob_id`` (at ``e``): neighbours that do
        not overlap, each at most ``max_gap`` bytes from the next, all within ``max_bytes``,
        reaching back first (a backup writes subtrees before their parents). Empty if the
        blob is not where ``e`` says."""
        lo, hi = self._span(e.pack_id)
        offsets, lengths = self._offsets, self._lengths
        i = lo + int(np.searchsorted(offsets[lo:hi], e.offset))
        if i >= hi or int(offsets[i]) != e.offset or self._ids[i].tobytes() != blob_id:
            return []

        def end(k: int) -> int:
            return int(offsets[k]) + int(lengths[k])

        def joins(a: int, b: int) -> bool:  # b follows a in the pack
            return end(a) <= int(offsets[b]) <= end(a) + max_gap

        first = last = i
        while (
            first > lo
            and joins(first - 1, first)
            and end(last) - int(offsets[first - 1]) <= max_bytes
        ):
            first -= 1
        while (
            last + 1 < hi
            and joins(last, last + 1)
            and end(last + 1) - int(offsets[first]) <= max_bytes
        ):
            last += 1
        return self._entries(first, last + 1, e.pack_id)

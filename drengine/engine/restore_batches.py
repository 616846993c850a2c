"""Group one-blob files by pack so restore reads ranges of packs, not one blob at a time.

On S3 a request costs a round trip and about a millisecond of client CPU: restoring 9,000
small files blob by blob took 9,263 GETs where 18 carry the same bytes. Blobs of one pack
that lie close together are read with one ranged GET and then split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from drengine.core.model import Node
from drengine.repository.index_entry import IndexEntry
from drengine.repository.repo import Repository

# Read across a gap of unneeded blobs up to this size rather than issue another request;
# cap one read so memory stays bounded.
_MAX_GAP = 1 << 20
_MAX_RANGE = 32 << 20
T = TypeVar("T")


@dataclass
class Batch(Generic[T]):
    pack_id: bytes
    start: int
    end: int
    items: list[tuple[T, Node, IndexEntry]] = field(default_factory=list)


def pack_batches(
    repo: Repository, files: list[tuple[T, Node]]
) -> tuple[list[Batch[T]], list[tuple[T, Node]]]:
    """Batches for files of exactly one blob, in pack order, and the files whose blob is
    not indexed (the caller reads those alone and reports them)."""
    by_pack: dict[bytes, list[tuple[T, Node, IndexEntry]]] = defaultdict(list)
    unindexed = []
    entries = repo.index.lookup_many([node.content[0] for _, node in files])
    for (item, node), entry in zip(files, entries, strict=True):
        if entry is None:
            unindexed.append((item, node))
            continue
        by_pack[entry.pack_id].append((item, node, entry))
    batches: list[Batch[T]] = []
    for pack_id, items in by_pack.items():
        items.sort(key=lambda it: it[2].offset)
        cur: Batch[T] | None = None
        for it in items:
            e = it[2]
            end = e.offset + e.length
            if cur is None or e.offset - cur.end > _MAX_GAP or end - cur.start > _MAX_RANGE:
                cur = Batch(pack_id, e.offset, end)
                batches.append(cur)
            cur.items.append(it)
            cur.end = max(cur.end, end)
    return batches, unindexed

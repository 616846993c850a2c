"""Messages between a restore and its writer processes (``workers``: a private socket pair,
length-prefixed pickles).

Parent to worker: ``Setup``, then the target's descriptor (``SCM_RIGHTS``), then work
items (``BatchItem``, sent as a ``FlatBatch``, or ``FileItem``), then ``None`` (no more
work). Worker to parent:
for each item in order a ``Done``, ``Progress`` messages meanwhile, and
``workers.Finished`` with its phase timings before it exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drengine.core.model import Node
from drengine.core.workers import Finished, recv, send
from drengine.crypto.keys import MasterKeys
from drengine.engine.restore_batches import Batch
from drengine.engine.restore_plan import Entry
from drengine.repository.config import Config
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.storage.options import BackendSpec

__all__ = [
    "BatchItem",
    "Done",
    "FileItem",
    "Finished",
    "FlatBatch",
    "Progress",
    "Setup",
    "entries_of",
    "flat",
    "outgoing",
    "recv",
    "send",
    "unflat",
]


@dataclass
class Setup:
    storage: BackendSpec  # the packs' storage, opened again by the worker
    keys: MasterKeys
    config: Config
    parents: list[int]  # the plan's directories, as ``DirFds`` takes them
    names: list[bytes]
    is_root: bool


@dataclass
class BatchItem:
    """One-blob files whose blobs lie in one range of one pack."""

    batch: Batch[Entry]


# What the writer uses of a one-blob file, in this order: directory index, name, mode,
# uid, gid, mtime_ns, size, sparse, content hash, xattrs, blob ID, blob type, offset,
# length, raw length.
FlatFile = tuple[
    int, bytes, int, int, int, int, int, bool, bytes | None, list[tuple[bytes, bytes]],
    bytes, int, int, int, int,
]  # fmt: skip


@dataclass
class FlatBatch:
    """A ``BatchItem`` as sent: plain tuples, not ``Entry`` and ``Node`` objects, whose
    pickling cost ~11 µs per file on each side (a fifth of a writer's time per file)."""

    pack_id: bytes
    start: int
    end: int
    files: list[FlatFile]


def flat(item: BatchItem) -> FlatBatch:
    b = item.batch
    files: list[FlatFile] = []
    for e, n, ie in b.items:
        kept = (n.mode, n.uid, n.gid, n.mtime_ns, n.size, n.sparse, n.content_hash, n.xattrs)
        files.append((e.dir, e.name, *kept, n.content[0], ie.type, *ie[2:]))
    return FlatBatch(b.pack_id, b.start, b.end, files)


def unflat(fb: FlatBatch) -> BatchItem:
    """The item again, with nodes that hold what the writer uses (owner names, inode and
    the like stay with the parent, which links and reports)."""
    pid = fb.pack_id
    items: list[tuple[Entry, Node, IndexEntry]] = []
    for f in fb.files:
        d, name, mode, uid, gid, mtime, size, sparse, chash, xattrs, bid, t, off, n, raw = f
        node = Node(
            name, "file", mode, uid, gid, "", "", mtime, 0, size, 0, 0, 1, 0, None, xattrs,
            [bid], chash, None, sparse,
        )  # fmt: skip
        items.append((Entry(d, name, node), node, IndexEntry(pid, BlobType(t), off, n, raw)))
    return BatchItem(Batch(pid, fb.start, fb.end, items))


def outgoing(item: BatchItem | FileItem) -> FlatBatch | FileItem:
    """What is sent for a work item."""
    return flat(item) if isinstance(item, BatchItem) else item


@dataclass
class FileItem:
    """A file of several blobs (or one read alone): its entry and each blob's location."""

    entry: Entry
    blobs: list[tuple[bytes, IndexEntry]]


@dataclass
class Done:
    """Per entry of the item, in order: whether it is written, verified and in place.
    ``notes`` are messages the parent reports as they are (a temporary file that could not
    be removed); an entry not done is written again by the parent, which reports why."""

    done: list[bool]
    notes: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Progress:
    nbytes: int


def entries_of(item: BatchItem | FileItem) -> list[Entry]:
    if isinstance(item, BatchItem):
        return [entry for entry, _, _ in item.batch.items]
    return [item.entry]

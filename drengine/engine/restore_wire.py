"""Messages between a restore and its writer processes (``workers``: a private socket pair,
length-prefixed pickles).

Parent to worker: ``Setup``, then the target's descriptor (``SCM_RIGHTS``), then work
items (``BatchItem`` or ``FileItem``), then ``None`` (no more work). Worker to parent:
for each item in order a ``Done``, ``Progress`` messages meanwhile, and
``workers.Finished`` with its phase timings before it exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drengine.crypto.keys import MasterKeys
from drengine.engine.restore_batches import Batch
from drengine.engine.restore_plan import Entry
from drengine.engine.workers import Finished, recv, send
from drengine.repository.config import Config
from drengine.repository.index import IndexEntry
from drengine.storage.options import BackendSpec

__all__ = [
    "BatchItem",
    "Done",
    "FileItem",
    "Finished",
    "Progress",
    "Setup",
    "entries_of",
    "recv",
    "send",
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

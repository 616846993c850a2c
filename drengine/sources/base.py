"""The ``Source`` protocol: what every kind of backup input gives the engine.

A source yields entries: a top-level item of the snapshot tree (a walked directory, a
database dump, a disk image, a command's output) with its metadata and, for a stream, an
opener for its content, which the engine turns into blobs with ``ContentStore``. After the
last entry, ``finish`` gives the source's record for the snapshot (what a restore drill
needs to prove the copy good) or raises ``SourceFailed`` — a dump whose command failed after
its last byte fails the backup, and no snapshot is written. One module per kind
(``files``, ``command``, ``postgres``, ``mysql``, ``sqlite``, ``block``), in the manner of
borgmatic's data-source hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drengine.core.errors import SourceFailed
from drengine.core.model import Node
from drengine.core.phases import NO_PHASES, Phases
from drengine.pipeline.content import ContentStore

__all__ = ["SourceFailed"]  # raised by sources; defined with the other errors


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


# Where an entry's content comes from: a context manager, so that whatever produced the
# stream (a process, a connection, a file) is cleaned up however the read ends.
Opener = Callable[[], AbstractContextManager[Readable]]


@dataclass
class Entry:
    path: bytes  # absolute, "/"-separated: where it appears in the snapshot tree
    node: Node  # complete for walked trees; for a stream, content is stored by the engine
    open: Opener | None = None
    # Whether the directories above ``path`` exist on this host (their metadata is then
    # recorded); a stream's parents are made-up directories.
    real_parents: bool = False


@dataclass
class BackupContext:
    store: ContentStore
    cache_dir: Path | None  # the repository's local cache (files cache), None for none
    # The packs in storage when the backup began (what the index was loaded with).
    present_packs: Collection[bytes] = ()


@dataclass
class StoredStream:
    """What the engine learnt storing a stream entry: it goes into the source's record."""

    path: bytes
    size: int
    sha256: bytes


class Source(Protocol):
    kind: str
    # Inputs that could not be read (the backup then exits 3): {"path": ..., "error": ...}.
    errors: list[dict[str, str]]

    def entries(self, ctx: BackupContext) -> Iterator[Entry]: ...

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        """After the last entry's last byte: the record, or ``SourceFailed``."""
        ...

    def summary(self) -> dict[str, int]:
        """Counters added into the snapshot's summary (files_new, dirs_total, ...)."""
        ...

    def close(self, ok: bool) -> None:
        """Release what the source holds (threads, processes, connections); ``ok`` when
        the snapshot is about to be written."""
        ...


@dataclass
class StreamSource:
    """Base for sources of streams: no counters of their own, nothing to close."""

    kind: str = ""
    errors: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {}

    def close(self, ok: bool) -> None:
        return None


# restore --to: an entry path's verified content, chunk by chunk (``engine/restore_to.py``).
ChunksOf = Callable[[str], Iterator[bytes]]


@dataclass
class LoadOptions:
    """``restore --to`` options; each loader uses those that apply to its kind."""

    jobs: int = 1  # parallel loaders (pg_restore --jobs)
    clean: bool = False  # drop the dump's objects in the target first
    no_owner: bool = False  # leave out owners and privileges
    confirm_device: str = ""  # a block device's path, repeated: consent to overwrite it
    tmp_dir: str | None = None  # scratch space where a loader needs a seekable file
    phases: Phases = NO_PHASES  # timings of the load and of its verification


def stored_entries(stored: list[StoredStream]) -> list[dict[str, Any]]:
    """The record's ``entries``: each stream's path, size and SHA-256."""
    return [
        {
            "path": s.path.decode("utf-8", "surrogateescape"),
            "size": s.size,
            "sha256": s.sha256.hex(),
        }
        for s in stored
    ]

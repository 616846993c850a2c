"""Turn content into blobs: the one way every source stores what it reads.

A file, a database dump, a disk image and a command's output all go through
``ContentStore.store_stream``: content-defined chunks, keyed IDs, dedup and the saver's
compress-encrypt-pack-upload threads, with the size and hashes of the whole stream computed
on the way (per chunk, never per byte). Sources see this object only, not the repository.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import blake3

from drengine.core.errors import Cancelled
from drengine.core.model import Node, encode_tree, encode_tree_parts
from drengine.core.progress import Progress
from drengine.pipeline.chunker import Chunker
from drengine.pipeline.saver import BlobSaver
from drengine.pipeline.small_blobs import SmallBlobs
from drengine.repository.layout import BlobType
from drengine.repository.repo import Repository

# Files up to this size fit one chunk (FastCDC never cuts below its minimum chunk size).
_SMALL_FILE = 64 * 1024

ReadInto = Callable[[memoryview], int]


@dataclass
class Content:
    ids: list[bytes]
    size: int
    content_hash: bytes  # unkeyed BLAKE3 of the whole stream, as stored in file nodes
    sha256: bytes | None = None  # when asked for: what ``sha256sum`` prints for the stream


class ContentStore:
    def __init__(
        self,
        repo: Repository,
        saver: BlobSaver,
        progress: Progress,
        cancel: threading.Event | None = None,
    ) -> None:
        s = repo.settings
        self._repo, self._saver, self.progress = repo, saver, progress
        self._cancel = cancel
        self.chunker = Chunker(s.chunker_min, s.chunker_avg, s.chunker_max, repo.keys.chunker_seed)
        # Content this small is read whole by the caller: one chunk, no chunker.
        self.small = min(_SMALL_FILE, s.chunker_min)

    def store_stream(self, read_into: ReadInto, *, first: int = 0, sha256: bool = False) -> Content:
        """Read ``read_into`` to its end (``first``: a size hint for the first read)."""
        hasher = blake3.blake3()
        sha = hashlib.sha256() if sha256 else None
        ids: list[bytes] = []
        size = 0
        for chunk in self.chunker.chunks(read_into, first=first):
            self.check_cancel()
            bid = self._repo.blob_id(chunk)
            hasher.update(chunk)
            if sha is not None:
                sha.update(chunk)
            self._saver.save(BlobType.DATA, bid, chunk)
            ids.append(bid)
            size += len(chunk)
            self.progress.add_bytes(len(chunk))
        return Content(ids, size, hasher.digest(), sha.digest() if sha else None)

    def check_cancel(self) -> None:
        """``Cancelled`` once the operation's cancellation event is set: sources call it
        between entries, and it is checked before every chunk."""
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("the backup was cancelled; no snapshot written")

    def store_bytes(self, data: bytes) -> Content:
        """Content read whole (at most ``small`` bytes): one blob, or none when empty."""
        ids = []
        if data:
            bid = self._repo.blob_id(data)
            self._saver.save(BlobType.DATA, bid, data)
            ids.append(bid)
        self.progress.add_bytes(len(data))
        return Content(ids, len(data), blake3.blake3(data).digest())

    def small_blobs(self) -> SmallBlobs:
        """What a read worker process needs to seal small files (``store_sealed``)."""
        s = self._repo.settings
        return SmallBlobs(self._repo.keys.chunk_id, s.compression_level, self.small)

    def store_sealed(
        self, blob_id: bytes, content_hash: bytes, payload: bytes, size: int
    ) -> Content:
        """Content read whole and sealed by ``SmallBlobs.seal`` in a worker process."""
        ids = []
        if size:
            self._saver.save(BlobType.DATA, blob_id, payload, size)
            ids.append(blob_id)
        self.progress.add_bytes(size)
        return Content(ids, size, content_hash)

    def save_tree(self, nodes: list[Node]) -> bytes:
        """Store a directory's listing; its tree ID. ``DrengineError`` if too large."""
        return self._saver.save_blob(BlobType.TREE, encode_tree(nodes))

    def save_tree_parts(self, parts: list[tuple[bytes, bytes]]) -> bytes:
        """``save_tree`` of nodes already encoded: (name, JSON) each."""
        return self._saver.save_blob(BlobType.TREE, encode_tree_parts(parts))

    def has_all(self, blob_ids: list[bytes]) -> bool:
        """Whether every blob is stored or being stored (a files-cache hit may be reused)."""
        return self._saver.has_all(blob_ids)

    def rely_on_packs(self, packs: Iterable[bytes]) -> None:
        """Packs the snapshot references without this backup looking up each blob (reused
        directory trees): proved still in storage before the snapshot is written."""
        self._saver.add_referenced(packs)

    def indexed_blob_counts(self) -> dict[bytes, int]:
        """The index's entries per pack (``Index.blob_counts``)."""
        return self._repo.index.blob_counts()

    @property
    def uploaded_packs(self) -> frozenset[bytes]:
        return frozenset(self._saver.uploaded_packs)

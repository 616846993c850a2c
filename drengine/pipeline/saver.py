"""Blob saving: dedup, then compress + encrypt + pack in worker threads, then upload.

    producers --save()--> [bounded queue] --> sealer threads --> [bounded queue] --> uploaders
    (dedup claim)                           (compress, encrypt,                (put pack, add to
                                             one open pack per                 index; an index
                                             thread and type)                  object every N packs)

A blob counts as present once it is claimed, so concurrent producers store it once. Index
objects are written every ``index_every`` packs, not only at the end, so a killed backup
leaves most of its uploaded packs indexed and the next backup reuses them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import TypeVar

from drengine.repository import blobcodec
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord, PackWriter
from drengine.repository.repo import Repository

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = None
_POLL = 0.2


@dataclass
class SaverStats:
    blobs_new: int = 0
    bytes_new: int = 0  # raw bytes of new blobs
    bytes_stored: int = 0  # bytes of packs uploaded
    packs: int = 0


class BlobSaver:
    def __init__(
        self,
        repo: Repository,
        sealers: int | None = None,
        uploaders: int = 2,
        index_every: int = 16,
    ) -> None:
        self.repo = repo
        self.stats = SaverStats()
        self._level = repo.settings.compression_level
        self._pack_size = repo.settings.pack_size
        self._index_every = index_every
        n = sealers or max(2, os.cpu_count() or 2)
        self._blobs: queue.Queue[tuple[BlobType, bytes, memoryview | bytes] | None] = queue.Queue(
            maxsize=2 * n + 2
        )
        self._packs: queue.Queue[tuple[bytearray, list[BlobRecord]] | None] = queue.Queue(
            maxsize=uploaders + 1
        )
        self._lock = threading.Lock()
        self._inflight: set[bytes] = set()
        self._unindexed: list[tuple[bytes, list[BlobRecord]]] = []
        self._error: BaseException | None = None
        self._sealers = [
            threading.Thread(target=self._seal_loop, name=f"sealer-{i}", daemon=True)
            for i in range(n)
        ]
        self._uploaders = [
            threading.Thread(target=self._upload_loop, name=f"uploader-{i}", daemon=True)
            for i in range(uploaders)
        ]
        for t in self._sealers + self._uploaders:
            t.start()

    # ---- producer side ------------------------------------------------------------------

    def save(self, blob_type: BlobType, blob_id: bytes, data: memoryview | bytes) -> bool:
        """Store a blob unless the repository has it or it is on its way; True if new."""
        self._raise_if_failed()
        with self._lock:
            if blob_id in self._inflight:
                return False
            if self.repo.index.lookup(blob_id) is not None:
                return False
            self._inflight.add(blob_id)
            self.stats.blobs_new += 1
            self.stats.bytes_new += len(data)
        self._put(self._blobs, (blob_type, blob_id, data))
        return True

    def save_blob(self, blob_type: BlobType, data: bytes) -> bytes:
        blob_id = self.repo.blob_id(data, blob_type)
        self.save(blob_type, blob_id, data)
        return blob_id

    def close(self) -> None:
        """Flush every open pack, wait for uploads, write the last index object."""
        try:
            for _ in self._sealers:
                self._put(self._blobs, _STOP)
            self._join(self._sealers)
            for _ in self._uploaders:
                self._put(self._packs, _STOP)
            self._join(self._uploaders)
            self._raise_if_failed()
            self._write_index(force=True)
        finally:
            self._error = self._error or RuntimeError("saver closed")

    def stop(self) -> None:
        """Make every further ``save`` fail and the workers wind down."""
        if self._error is None:
            self._error = RuntimeError("backup aborted")

    def abort(self) -> None:
        """Stop the workers (after a failure elsewhere, or an interrupt), then index the packs
        that did reach storage, so the next backup reuses them instead of uploading again."""
        self.stop()
        self._join(self._sealers)
        self._join(self._uploaders)
        try:
            self._write_index(force=True)
        except Exception as e:  # best effort: the original failure is what matters
            log.warning("could not index the packs of the aborted backup: %s", e)

    # ---- internals ----------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _put(self, q: queue.Queue[T], item: T) -> None:
        while True:
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                self._raise_if_failed()

    def _get(self, q: queue.Queue[T | None]) -> T | None:
        while True:
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                if self._error is not None:
                    return None

    def _join(self, threads: list[threading.Thread]) -> None:
        for t in threads:
            t.join()

    def _fail(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e

    def _seal_loop(self) -> None:
        writers: dict[BlobType, PackWriter] = {}
        try:
            while True:
                item = self._get(self._blobs)
                if item is None:
                    break
                blob_type, blob_id, data = item
                payload = blobcodec.encode(data, self._level)
                w = writers.get(blob_type)
                if w is None:
                    w = writers[blob_type] = PackWriter(self.repo.keys.encryption)
                w.add(blob_type, blob_id, payload, len(data))
                if len(w) >= self._pack_size:
                    self._put(self._packs, (w.finish(), w.records))
                    del writers[blob_type]
            if self._error is None:
                for w in writers.values():
                    self._put(self._packs, (w.finish(), w.records))
        except BaseException as e:
            self._fail(e)

    def _upload_loop(self) -> None:
        try:
            while True:
                packed = self._get(self._packs)
                if packed is None:
                    break
                buf, records = packed
                pack_id = self.repo.save_pack(buf)
                self.repo.index.add_pack(pack_id, records)
                with self._lock:
                    for r in records:
                        self._inflight.discard(r.id)
                    self._unindexed.append((pack_id, records))
                    self.stats.bytes_stored += len(buf)
                    self.stats.packs += 1
                self._write_index(force=False)
        except BaseException as e:
            self._fail(e)

    def _write_index(self, force: bool) -> None:
        with self._lock:
            if not self._unindexed or (not force and len(self._unindexed) < self._index_every):
                return
            batch, self._unindexed = self._unindexed, []
        self.repo.save_index(batch)

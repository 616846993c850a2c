"""Blob saving: dedup, then compress + encrypt + pack in worker threads, then upload.

    producers --save()--> [bounded queue] --> sealer threads --> [bounded queue] --> uploaders
    (dedup claim)                           (compress, encrypt,                (put pack, add to
                                             one open pack per                 index; an index
                                             thread and type)                  object every N packs)

A blob counts as present once it is claimed, so concurrent producers store it once. Claimed
blobs go to the sealers in batches (up to ``_BATCH_BLOBS`` or ``_BATCH_BYTES``): one queue
hand-off per small file cost ~6 % of a first backup's interpreter time. Index
objects are written every ``index_every`` packs, not only at the end, so a killed backup
leaves most of its uploaded packs indexed and the next backup reuses them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from drengine.core.errors import DrengineError
from drengine.repository import blobcodec
from drengine.repository.index_split import BLOBS_PER_INDEX, index_batches
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord
from drengine.repository.pack_spool import SpooledPack, SpoolingPackWriter
from drengine.repository.repo import Repository

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = None
_POLL = 0.2
_BATCH_BLOBS = 256  # small payloads from read workers: 32 a batch cost ~4 % more wall time
_BATCH_BYTES = 1 << 20

# (type, ID, plaintext or payload, raw length: -1 for plaintext still to be encoded)
_Blob = tuple[BlobType, bytes, memoryview | bytes, int]


class PacksMissing(DrengineError):
    pass


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
        # Batches of claimed blobs: a bound on the memory they hold (with the one being filled).
        self._blobs: queue.Queue[list[_Blob] | None] = queue.Queue(maxsize=n + 1)
        self._batch: list[_Blob] = []
        self._batch_bytes = 0
        # Sealed packs waiting for an uploader: one is enough to keep them busy. Packs fill
        # in temporary files (``pack_spool``), not in memory.
        self._packs: queue.Queue[tuple[SpooledPack, list[BlobRecord]] | None] = queue.Queue(
            maxsize=1
        )
        self._lock = threading.Lock()
        self._inflight: set[bytes] = set()
        # Packs the saved blobs live in: those deduplicated against, and those uploaded. A
        # backup proves they all still exist before it writes its snapshot.
        self.referenced_packs: set[bytes] = set()
        self.uploaded_packs: set[bytes] = set()
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

    def save(
        self, blob_type: BlobType, blob_id: bytes, data: memoryview | bytes, raw_length: int = -1
    ) -> bool:
        """Store a blob unless the repository has it or it is on its way; True if new.
        ``raw_length`` >= 0: ``data`` is the blob's payload already (``blobcodec.encode``
        of ``raw_length`` bytes, by a read worker), sealed without encoding again."""
        self._raise_if_failed()
        with self._lock:
            if blob_id in self._inflight:
                return False
            entry = self.repo.index.lookup(blob_id)
            if entry is not None:
                self.referenced_packs.add(entry.pack_id)
                return False
            self._inflight.add(blob_id)
            self.stats.blobs_new += 1
            self.stats.bytes_new += len(data) if raw_length < 0 else raw_length
            self._batch.append((blob_type, blob_id, data, raw_length))
            self._batch_bytes += len(data)
            full = len(self._batch) >= _BATCH_BLOBS or self._batch_bytes >= _BATCH_BYTES
            batch = self._take_batch() if full else None
        if batch:
            self._put(self._blobs, batch)
        return True

    def _take_batch(self) -> list[_Blob]:
        """The blobs claimed since the last batch (hold ``_lock``)."""
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        return batch

    def save_blob(self, blob_type: BlobType, data: bytes) -> bytes:
        limit = blobcodec.max_raw_length(blob_type == BlobType.TREE)
        if len(data) > limit:
            raise DrengineError(
                f"{len(data)} bytes are more than one {blob_type.name.lower()} blob may hold "
                f"({limit})"
            )
        blob_id = self.repo.blob_id(data, blob_type)
        self.save(blob_type, blob_id, data)
        return blob_id

    def has_all(self, blob_ids: list[bytes]) -> bool:
        """Whether the repository holds every blob (a files cache hit stays valid only
        then); their packs count as referenced."""
        packs = self.repo.index.packs_of(blob_ids)
        if packs is None:
            return False
        with self._lock:
            self.referenced_packs.update(packs)
        return True

    def add_referenced(self, packs: Iterable[bytes]) -> None:
        with self._lock:
            self.referenced_packs.update(packs)

    def prove_references(self) -> None:
        """After ``close``: every pack the saved blobs live in is still in storage (a prune
        that ran while we were paused could have deleted what we deduplicated against)."""
        needed = self.referenced_packs | self.uploaded_packs
        if not needed:
            return
        present = self.repo.list_packs()
        missing = [p for p in needed if p not in present]
        if missing:
            raise PacksMissing(
                f"{len(missing)} packs this operation references are no longer in storage "
                f"(first: {missing[0].hex()}): a prune may have run while it was paused, or "
                "data was lost; no snapshot was written. Run it again (and drengine check)"
            )

    def close(self) -> None:
        """Flush every open pack, wait for uploads, write the last index object."""
        try:
            with self._lock:
                batch = self._take_batch()
            if batch:
                self._put(self._blobs, batch)
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
        writers: dict[BlobType, SpoolingPackWriter] = {}
        try:
            while True:
                batch = self._get(self._blobs)
                if batch is None:
                    break
                for blob_type, blob_id, data, raw_length in batch:
                    if raw_length < 0:
                        payload, raw_length = blobcodec.encode(data, self._level), len(data)
                    else:
                        payload = data if isinstance(data, bytes) else bytes(data)
                    w = writers.get(blob_type)
                    if w is None:
                        w = writers[blob_type] = SpoolingPackWriter(self.repo.keys.encryption)
                    w.add(blob_type, blob_id, payload, raw_length)
                    if len(w) >= self._pack_size or len(w.records) >= BLOBS_PER_INDEX:
                        del writers[blob_type]
                        self._hand_over(w)
                del batch  # its memory, before waiting for the next
            while self._error is None and writers:
                self._hand_over(writers.popitem()[1])
        except BaseException as e:
            self._fail(e)
        finally:
            for w in writers.values():  # a failure: their temporary files go now
                w.discard()

    def _hand_over(self, w: SpoolingPackWriter) -> None:
        try:
            pack = w.finish()
        except BaseException:
            w.discard()
            raise
        try:
            self._put(self._packs, (pack, w.records))
        except BaseException:
            pack.close()
            raise

    def _upload_loop(self) -> None:
        try:
            while True:
                packed = self._get(self._packs)
                if packed is None:
                    break
                pack, records = packed
                try:
                    pack_id = self.repo.save_spooled(pack)
                finally:
                    pack.close()
                self.repo.index.add_pack(pack_id, records)
                with self._lock:
                    for r in records:
                        self._inflight.discard(r.id)
                    self._unindexed.append((pack_id, records))
                    self.uploaded_packs.add(pack_id)
                    self.stats.bytes_stored += len(pack)
                    self.stats.packs += 1
                self._write_index(force=False)
        except BaseException as e:
            self._fail(e)
        finally:
            self._drop_waiting()

    def _drop_waiting(self) -> None:
        """After a failure: close the sealed packs no uploader will take."""
        if self._error is None:
            return
        while True:
            try:
                item = self._packs.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[0].close()

    def _write_index(self, force: bool) -> None:
        with self._lock:
            blobs = sum(len(r) for _, r in self._unindexed)
            enough = len(self._unindexed) >= self._index_every or blobs >= BLOBS_PER_INDEX
            if not self._unindexed or not (force or enough):
                return
            batch, self._unindexed = self._unindexed, []
        for part in index_batches(batch):
            self.repo.save_index(part)

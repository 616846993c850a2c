"""What a read worker process needs to turn a small file into a blob, and nothing more.

``ContentStore.small_blobs()`` hands one of these to the files source's worker processes
(``sources/files_read_procs.py``): the keyed-ID key and the compression level. A worker
hashes and compresses what it read; encryption, dedup and packing stay in the backup's
process, where the nonces and the pack offsets are. Only ``blake3`` and ``zstandard`` are
imported, so a worker starts in a few tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from drengine.repository import blobcodec


@dataclass(frozen=True)
class SmallBlobs:
    chunk_key: bytes  # the repository's data-blob ID key (``MasterKeys.chunk_id``)
    level: int  # zstd level of new blobs
    small: int  # content up to this size is one blob (``ContentStore.small``)

    def seal(self, data: bytes) -> tuple[bytes, bytes, bytes]:
        """(blob ID, content hash, payload) of content read whole; no ID or payload for
        empty content, which is no blob at all."""
        content_hash = blake3.blake3(data).digest()
        if not data:
            return b"", content_hash, b""
        blob_id = blake3.blake3(data, key=self.chunk_key).digest()
        return blob_id, content_hash, blobcodec.encode(data, self.level)

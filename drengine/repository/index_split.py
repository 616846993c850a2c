"""How many blobs an index object holds, and packs split into groups of that many.

Apart from ``index_format`` (which needs numpy) so that writers import it without numpy:
a backup derives its key before the index is loaded, and every library loaded by then
adds to the 64 MiB the key derivation needs at that moment.
"""

from __future__ import annotations

from collections.abc import Iterator

from drengine.repository.pack import BlobRecord

# Writers start a new index object after this many blobs (about 4.5 MB of plaintext).
BLOBS_PER_INDEX = 100_000


def index_batches(
    packs: list[tuple[bytes, list[BlobRecord]]],
) -> Iterator[list[tuple[bytes, list[BlobRecord]]]]:
    """Split packs into groups of at most ``BLOBS_PER_INDEX`` blobs (a pack holds at most
    that many), one index object each, so none outgrows the format's limit."""
    part: list[tuple[bytes, list[BlobRecord]]] = []
    count = 0
    for pack in packs:
        if part and count + len(pack[1]) > BLOBS_PER_INDEX:
            yield part
            part, count = [], 0
        part.append(pack)
        count += len(pack[1])
    if part:
        yield part

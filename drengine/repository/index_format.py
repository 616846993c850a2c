"""Index objects on storage: the layout of the sealed ``index/`` objects (repository-format
§6) and the 45-byte blob records they share with pack trailers, as numpy arrays.

An index object's plaintext is zstd-compressed::

    "DRI\\x01" | u32 pack count | u32 superseded count | superseded index IDs (32 each)
    per pack: pack ID (32) | u32 blob count | blob records (45 bytes each, as in pack trailers)
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from drengine.core.errors import IntegrityError
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord, records_to_bytes

INDEX_MAGIC = b"DRI\x01"
_U32 = struct.Struct("<I")
# One blob record, as in pack trailers (pack.RECORD).
RECORD_DTYPE = np.dtype(
    [("type", "u1"), ("id", "V32"), ("offset", "<u4"), ("length", "<u4"), ("raw", "<u4")]
)
assert RECORD_DTYPE.itemsize == 45
# Format limit (repository-format §11): an index object's plaintext is at most this large.
# Checked while decompressing, so a small crafted object cannot inflate to gigabytes.
MAX_INDEX_PLAINTEXT = 256 << 20


def records_from_array(arr: np.ndarray) -> list[BlobRecord]:
    return [
        BlobRecord(BlobType(int(t)), bytes(i), int(o), int(n), int(r))
        for t, i, o, n, r in arr.tolist()
    ]


def encode_index(
    packs: list[tuple[bytes, list[BlobRecord]]], supersedes: list[bytes] | None = None
) -> bytes:
    supersedes = supersedes or []
    out = [INDEX_MAGIC, _U32.pack(len(packs)), _U32.pack(len(supersedes)), *supersedes]
    for pack_id, records in packs:
        out += [pack_id, _U32.pack(len(records)), records_to_bytes(records)]
    return zstandard.ZstdCompressor(level=3).compress(b"".join(out))


def _decompress_bounded(data: bytes, what: str) -> bytes:
    """One zstd frame, refused before allocating when it would exceed ``MAX_INDEX_PLAINTEXT``.
    A frame with its content size in the header is checked against the limit first (and zstd
    checks the size it declares); one without is decoded with the limit as the bound."""
    try:
        declared = zstandard.frame_content_size(data)
        if declared > MAX_INDEX_PLAINTEXT:
            raise IntegrityError(f"{what} declares {declared} bytes, more than an index may hold")
        dctx = zstandard.ZstdDecompressor()
        if declared >= 0:
            return dctx.decompress(data)
        return dctx.decompress(data, max_output_size=MAX_INDEX_PLAINTEXT)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"{what} does not decompress: {e}") from None


def decode_index(data: bytes, what: str) -> tuple[list[tuple[bytes, np.ndarray]], list[bytes]]:
    """(list of (pack ID, RECORD_DTYPE array)), superseded index IDs)."""
    plain = _decompress_bounded(data, what)
    try:
        if not plain.startswith(INDEX_MAGIC):
            raise ValueError("bad magic")
        pos = len(INDEX_MAGIC)
        (npacks,) = _U32.unpack_from(plain, pos)
        (nsup,) = _U32.unpack_from(plain, pos + 4)
        pos += 8
        if 32 * nsup > len(plain) - pos:
            # Checked first: 2**32-1 IDs claimed by 12 bytes meant minutes and a 34 GB list.
            raise ValueError(f"{nsup} superseded IDs do not fit")
        supersedes = [plain[pos + 32 * i : pos + 32 * (i + 1)] for i in range(nsup)]
        pos += 32 * nsup
        packs = []
        for _ in range(npacks):
            pack_id = plain[pos : pos + 32]
            (count,) = _U32.unpack_from(plain, pos + 32)
            pos += 36
            arr = np.frombuffer(plain, dtype=RECORD_DTYPE, count=count, offset=pos)
            if (arr["type"] > max(BlobType)).any():  # look-ups would fail on it later
                raise ValueError("a blob of unknown type")
            pos += count * RECORD_DTYPE.itemsize
            packs.append((pack_id, arr))
        if pos != len(plain):
            raise ValueError("trailing bytes")
    except (ValueError, struct.error) as e:
        raise IntegrityError(f"{what} is malformed: {e}") from None
    return packs, supersedes

"""A blob's plaintext inside its AEAD: one compression byte, then the body.

Compression 0 stores the body raw; 1 is a zstd frame (with its content size). Compressed is
kept only when it saves at least 1/32 of the size: random or already-compressed data is stored
raw so restore does not pay for a useless decompression.
"""

from __future__ import annotations

import threading

import zstandard

from drengine.core.errors import IntegrityError

RAW = 0
ZSTD = 1
# Format limits (repository-format §11), checked before anything is allocated: a data blob
# is one chunk (chunker_max is at most 16 MiB); a tree blob is one directory.
MAX_DATA_BLOB = 16 << 20
MAX_TREE_BLOB = 1 << 30
_local = threading.local()


def compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor of ``level`` (a fresh context per call costs more)."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor."""
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def encode(data: bytes | memoryview, level: int) -> bytes:
    if level > 0 and len(data) >= 64:
        packed = compressor(level).compress(data)
        if len(packed) + len(packed) // 32 < len(data):
            return b"\x01" + packed
    return b"\x00" + bytes(data)


def max_raw_length(is_tree: bool) -> int:
    return MAX_TREE_BLOB if is_tree else MAX_DATA_BLOB


def decode(payload: bytes, raw_length: int, what: str, is_tree: bool = False) -> bytes:
    """The plaintext of a blob payload that must be ``raw_length`` bytes long."""
    if not payload:
        raise IntegrityError(f"{what} is empty")
    limit = max_raw_length(is_tree)
    if not 0 <= raw_length <= limit:
        raise IntegrityError(f"{what} claims {raw_length} bytes; its type allows at most {limit}")
    kind = payload[0]
    body = memoryview(payload)[1:]
    if kind == RAW:
        out = bytes(body)
    elif kind == ZSTD:
        try:
            # The frame's declared size must be the index's: zstd would allocate whatever the
            # header claims before decoding a byte.
            declared = zstandard.frame_content_size(body)
            if declared not in (-1, raw_length):
                raise IntegrityError(
                    f"{what} declares {declared} bytes, the index says {raw_length}"
                )
            out = decompressor().decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{what} does not decompress: {e}") from None
    else:
        raise IntegrityError(f"{what} has unknown compression {kind}")
    if len(out) != raw_length:
        raise IntegrityError(f"{what} has {len(out)} bytes, the index says {raw_length}")
    return out

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
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def encode(data: bytes | memoryview, level: int) -> bytes:
    if level > 0 and len(data) >= 64:
        packed = _compressor(level).compress(data)
        if len(packed) + len(packed) // 32 < len(data):
            return b"\x01" + packed
    return b"\x00" + bytes(data)


def decode(payload: bytes, raw_length: int, what: str) -> bytes:
    if not payload:
        raise IntegrityError(f"{what} is empty")
    kind = payload[0]
    body = memoryview(payload)[1:]
    if kind == RAW:
        out = bytes(body)
    elif kind == ZSTD:
        try:
            out = _decompressor().decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{what} does not decompress: {e}") from None
    else:
        raise IntegrityError(f"{what} has unknown compression {kind}")
    if len(out) != raw_length:
        raise IntegrityError(f"{what} has {len(out)} bytes, the index says {raw_length}")
    return out

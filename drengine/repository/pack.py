"""Packs: many encrypted blobs and an encrypted trailer that lists them.

Layout (all integers little-endian)::

    "DRP\\x01" | salt (32) | blob ciphertexts ... | trailer ciphertext | trailer length (u32)

A blob's ciphertext is AES-256-GCM under the pack's subkey with nonce (domain 0, counter =
its byte offset in the pack) and AAD = type byte + blob ID; its plaintext is a compression
byte (0 raw, 1 zstd) followed by the body. The trailer (domain 1, counter 0, AAD
``b"drengine pack trailer"``) holds u32 count and one 45-byte record per blob: type (u8),
ID (32), offset (u32), stored length (u32), raw length (u32).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from drengine.core.errors import IntegrityError
from drengine.crypto.aead import (
    DOMAIN_BLOB,
    DOMAIN_TRAILER,
    SALT_SIZE,
    TAG_SIZE,
    ObjectCipher,
    new_salt,
    pack_cipher,
)
from drengine.repository.layout import BlobType

PACK_MAGIC = b"DRP\x01"
HEADER_SIZE = len(PACK_MAGIC) + SALT_SIZE
_TRAILER_AAD = b"drengine pack trailer"
_FOOTER = struct.Struct("<I")
# One blob record: type, ID, offset, stored length, raw length (index_format.RECORD_DTYPE).
RECORD = struct.Struct("<B32sIII")
assert RECORD.size == 45
_TYPES = {int(t): t for t in BlobType}


class BlobRecord(NamedTuple):
    """A named tuple: a pack trailer makes thousands, and a frozen dataclass costs 5x more."""

    type: BlobType
    id: bytes
    offset: int
    length: int
    raw_length: int


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    return bytes((blob_type,)) + blob_id


def records_to_bytes(records: list[BlobRecord]) -> bytes:
    pack = RECORD.pack
    return b"".join([pack(r.type, r.id, r.offset, r.length, r.raw_length) for r in records])


def records_from_bytes(data: bytes | memoryview, what: str) -> list[BlobRecord]:
    """Records packed back to back; ``IntegrityError`` on a blob type the format lacks."""
    try:
        return [BlobRecord(_TYPES[t], i, o, n, r) for t, i, o, n, r in RECORD.iter_unpack(data)]
    except KeyError:
        raise IntegrityError(f"{what} lists a blob of unknown type") from None


class PackBuilder:
    """Encrypts blobs into one pack; where the bytes go is the subclass's ``_append``.
    Not thread-safe: one owner at a time."""

    def __init__(self, encryption_key: bytes) -> None:
        salt = new_salt()
        self._cipher = ObjectCipher(encryption_key, salt)
        self._size = 0
        self.records: list[BlobRecord] = []
        self._append(PACK_MAGIC + salt)

    def __len__(self) -> int:
        return self._size

    def _append(self, data: bytes) -> None:
        raise NotImplementedError

    def add(self, blob_type: BlobType, blob_id: bytes, payload: bytes, raw_length: int) -> None:
        offset = self._size
        ct = self._cipher.encrypt(DOMAIN_BLOB, offset, payload, blob_aad(blob_type, blob_id))
        self._append(ct)
        self.records.append(BlobRecord(blob_type, blob_id, offset, len(ct), raw_length))

    def _finish(self) -> None:
        plain = _FOOTER.pack(len(self.records)) + records_to_bytes(self.records)
        ct = self._cipher.encrypt(DOMAIN_TRAILER, 0, plain, _TRAILER_AAD)
        self._append(ct + _FOOTER.pack(len(ct)))


class PackWriter(PackBuilder):
    """A pack built in memory (prune and repair, which write few)."""

    def __init__(self, encryption_key: bytes) -> None:
        self._buf = bytearray()
        super().__init__(encryption_key)

    def _append(self, data: bytes) -> None:
        self._buf += data
        self._size += len(data)

    def finish(self) -> bytearray:
        self._finish()
        return self._buf


def decrypt_blob(
    encryption_key: bytes, salt: bytes, rec: BlobRecord, ciphertext: bytes | memoryview, what: str
) -> bytes:
    cipher = pack_cipher(encryption_key, salt)
    return cipher.decrypt(DOMAIN_BLOB, rec.offset, ciphertext, blob_aad(rec.type, rec.id), what)


def parse_trailer(encryption_key: bytes, pack: bytes, what: str) -> tuple[bytes, list[BlobRecord]]:
    """(salt, records) from a whole pack; ``IntegrityError`` if anything does not add up."""
    return parse_trailer_parts(encryption_key, pack[:HEADER_SIZE], pack, len(pack), what)


def trailer_length(tail: bytes | memoryview) -> int:
    """The trailer ciphertext's length, from the pack's last bytes (at least 4)."""
    return int(_FOOTER.unpack_from(tail, len(tail) - _FOOTER.size)[0])


def parse_trailer_parts(
    encryption_key: bytes, head: bytes, tail: bytes | memoryview, size: int, what: str
) -> tuple[bytes, list[BlobRecord]]:
    """(salt, records) from a pack's first ``HEADER_SIZE`` bytes and its last bytes (which
    must hold the trailer and its length), without reading the rest: ``repair index``
    rebuilds the index from trailers alone."""
    if size < HEADER_SIZE + TAG_SIZE + _FOOTER.size or not head.startswith(PACK_MAGIC):
        raise IntegrityError(f"{what} is truncated or not a drengine pack")
    salt = head[len(PACK_MAGIC) : HEADER_SIZE]
    tlen = trailer_length(tail)
    start = size - _FOOTER.size - tlen
    if tlen < TAG_SIZE + 4 or start < HEADER_SIZE or tlen + _FOOTER.size > len(tail):
        raise IntegrityError(f"{what} has an impossible trailer length")
    cipher = ObjectCipher(encryption_key, salt)
    end = len(tail) - _FOOTER.size
    plain = cipher.decrypt(
        DOMAIN_TRAILER, 0, memoryview(tail)[end - tlen : end], _TRAILER_AAD, f"{what} trailer"
    )
    (count,) = _FOOTER.unpack_from(plain, 0)
    if len(plain) != 4 + count * RECORD.size:
        raise IntegrityError(f"{what} trailer has the wrong length for {count} blobs")
    records = records_from_bytes(memoryview(plain)[4:], f"{what} trailer")
    for r in records:
        if r.offset < HEADER_SIZE or r.offset + r.length > start:
            raise IntegrityError(f"{what} trailer lists a blob outside the pack")
    return salt, records

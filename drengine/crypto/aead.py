"""AES-256-GCM with a fresh subkey per object, so nonces never repeat.

Every encrypted object (a pack, an index, a snapshot, the sealed part of the config) carries a
random 32-byte salt. Its subkey is ``HKDF-SHA256(ikm=master encryption key, salt=salt,
info=b"drengine v1 object key")``. Under one subkey the 96-bit nonce is a 4-byte big-endian
domain (0 blob, 1 pack trailer, 2 sealed object) followed by an 8-byte big-endian counter
(the blob's byte offset in its pack), so no two messages under one subkey share a nonce. Two objects
share a subkey only if their random salts collide: at 10^10 objects the chance is about
2^-190 (birthday bound on 256 bits), and each object holds at most a few thousand messages,
far inside GCM's limits per key.
"""

from __future__ import annotations

import functools
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drengine.core.errors import IntegrityError

SALT_SIZE = 32
TAG_SIZE = 16
DOMAIN_BLOB = 0
DOMAIN_TRAILER = 1
DOMAIN_OBJECT = 2
_HKDF_INFO = b"drengine v1 object key"
_NONCE = struct.Struct(">IQ")


def new_salt() -> bytes:
    return os.urandom(SALT_SIZE)


class ObjectCipher:
    """The AEAD for one object: a subkey derived from the master key and the object's salt."""

    __slots__ = ("_aead",)

    def __init__(self, master_key: bytes, salt: bytes) -> None:
        subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(
            master_key
        )
        self._aead = AESGCM(subkey)

    def encrypt(self, domain: int, counter: int, data: bytes | memoryview, aad: bytes) -> bytes:
        return self._aead.encrypt(_NONCE.pack(domain, counter), data, aad)

    def decrypt(
        self, domain: int, counter: int, data: bytes | memoryview, aad: bytes, what: str
    ) -> bytes:
        try:
            return self._aead.decrypt(_NONCE.pack(domain, counter), data, aad)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication (damaged or forged)") from None


@functools.lru_cache(maxsize=4096)
def pack_cipher(master_key: bytes, salt: bytes) -> ObjectCipher:
    """The cipher of a pack, derived once: restore and check open thousands of blobs per
    pack, and an HKDF per blob cost a tenth of ``check --read-data``."""
    return ObjectCipher(master_key, salt)


OBJECT_MAGIC = b"DRE\x01"


def seal(master_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """A single-message object: magic, salt, ciphertext with tag (domain 2, counter 0)."""
    salt = new_salt()
    ct = ObjectCipher(master_key, salt).encrypt(DOMAIN_OBJECT, 0, plaintext, aad)
    return OBJECT_MAGIC + salt + ct


def unseal(master_key: bytes, data: bytes, aad: bytes, what: str) -> bytes:
    head = len(OBJECT_MAGIC) + SALT_SIZE
    if len(data) < head + TAG_SIZE or not data.startswith(OBJECT_MAGIC):
        raise IntegrityError(f"{what} is truncated or not a drengine object")
    salt = data[len(OBJECT_MAGIC) : head]
    cipher = ObjectCipher(master_key, salt)
    return cipher.decrypt(DOMAIN_OBJECT, 0, memoryview(data)[head:], aad, what)

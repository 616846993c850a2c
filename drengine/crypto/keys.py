"""Master keys, and key files that wrap them under a password.

The master keys are random: ``encryption`` (32 bytes, input to the per-object HKDF),
``chunk_id`` (32 bytes, the BLAKE3 key for blob IDs) and ``chunker_seed`` (a 63-bit integer
that permutes FastCDC's gear table). A key file holds them encrypted with AES-256-GCM under a
key derived from the password with Argon2id; the Argon2id parameters and salt are stored
beside it in plain JSON so a reader can derive the same key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from drengine.core.errors import IntegrityError, WrongPassword
from drengine.core.model import load_json
from drengine.crypto.kdf_defaults import (
    DEFAULT_KDF_ITERATIONS,
    DEFAULT_KDF_MEMORY_KIB,
    DEFAULT_KDF_PARALLELISM,
)

KEYFILE_VERSION = 1
_KEYFILE_AAD = b"drengine key file v1"


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    """Strict base64: only the canonical encoding of some bytes is accepted, so no two
    strings (say, differing in unused padding bits) decode to the same key material."""
    if not isinstance(text, str):  # a JSON number or list where base64 belongs
        raise ValueError("not a base64 string")
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return data


@dataclass(frozen=True)
class MasterKeys:
    encryption: bytes
    chunk_id: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), secrets.randbits(63) | 1)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "encryption": b64e(self.encryption),
                "chunk_id": b64e(self.chunk_id),
                "chunker_seed": self.chunker_seed,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> MasterKeys:
        d = load_json(data)
        keys = cls(b64d(d["encryption"]), b64d(d["chunk_id"]), int(d["chunker_seed"]))
        # BLAKE3 takes only a 32-byte key, and the chunker a seed of 63 bits.
        if len(keys.encryption) != 32 or len(keys.chunk_id) != 32:
            raise ValueError("a master key is not 32 bytes")
        if not 1 <= keys.chunker_seed < 1 << 63:
            raise ValueError("the chunker seed is out of range")
        return keys


@dataclass(frozen=True)
class KdfParams:
    memory_kib: int = DEFAULT_KDF_MEMORY_KIB
    iterations: int = DEFAULT_KDF_ITERATIONS
    parallelism: int = DEFAULT_KDF_PARALLELISM

    def derive(self, password: bytes, salt: bytes) -> bytes:
        return hash_secret_raw(
            secret=password,
            salt=salt,
            time_cost=self.iterations,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            type=Type.ID,
        )


def make_key_file(
    keys: MasterKeys, password: bytes, params: KdfParams, meta: dict[str, Any]
) -> bytes:
    """Serialize a key file: the master keys wrapped under the password-derived key."""
    check_kdf(params)  # never write a key file that no reader would open
    salt = os.urandom(32)
    nonce = os.urandom(12)  # one message per derived key: a random nonce is safe here
    wrapped = AESGCM(params.derive(password, salt)).encrypt(nonce, keys.to_json(), _KEYFILE_AAD)
    doc = {
        "version": KEYFILE_VERSION,
        **meta,
        "kdf": {
            "algorithm": "argon2id",
            "memory_kib": params.memory_kib,
            "iterations": params.iterations,
            "parallelism": params.parallelism,
            "salt": b64e(salt),
        },
        "nonce": b64e(nonce),
        "data": b64e(wrapped),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def open_key_file(data: bytes, password: bytes, name: str) -> MasterKeys:
    """Unwrap a key file; ``WrongPassword`` if the password does not open it."""
    try:
        doc = load_json(data)
        kdf = doc["kdf"]
        if doc["version"] != KEYFILE_VERSION or kdf["algorithm"] != "argon2id":
            raise IntegrityError(f"key file {name} has an unsupported version or KDF")
        params = KdfParams(int(kdf["memory_kib"]), int(kdf["iterations"]), int(kdf["parallelism"]))
        salt, nonce, wrapped = b64d(kdf["salt"]), b64d(doc["nonce"]), b64d(doc["data"])
        _check_params(params, salt, nonce)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        raise IntegrityError(f"key file {name} is damaged: {e}") from None
    try:
        plain = AESGCM(params.derive(password, salt)).decrypt(nonce, wrapped, _KEYFILE_AAD)
    except InvalidTag:
        raise WrongPassword("wrong password") from None
    try:
        return MasterKeys.from_json(plain)
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise IntegrityError(f"key file {name} holds malformed keys: {e}") from None


# Bounds on what a key file may ask of us: a damaged (or hostile) file must not make the
# KDF fail obscurely or allocate without limit.
_MAX_MEMORY_KIB = 4 * 1024 * 1024
_MAX_ITERATIONS = 1000
_MAX_PARALLELISM = 64
# memory x passes: 64 MiB x 3 is the default; 4 GiB x 16 takes minutes. More is refused, so
# a key file planted by someone who can write keys/ cannot make every open take hours.
MAX_KDF_COST_KIB = 4 * 1024 * 1024 * 16


def kdf_cost(data: bytes) -> int:
    """What opening a key file costs (memory KiB x passes), for trying cheap ones first;
    0 when it cannot be read (it is then skipped at once)."""
    try:
        kdf = load_json(data)["kdf"]
        return max(0, int(kdf["memory_kib"]) * int(kdf["iterations"]))
    except (ValueError, KeyError, TypeError, OverflowError):
        return 0


def check_kdf(p: KdfParams) -> None:
    """``ValueError`` unless a reader will accept a key file made with these parameters."""
    _check_params(p, bytes(32), bytes(12))


def _check_params(p: KdfParams, salt: bytes, nonce: bytes) -> None:
    if not 1 <= p.parallelism <= _MAX_PARALLELISM:
        raise ValueError(f"parallelism {p.parallelism} out of range")
    if not 8 * p.parallelism <= p.memory_kib <= _MAX_MEMORY_KIB:
        raise ValueError(f"memory {p.memory_kib} KiB out of range")
    if not 1 <= p.iterations <= _MAX_ITERATIONS:
        raise ValueError(f"iterations {p.iterations} out of range")
    if p.memory_kib * p.iterations > MAX_KDF_COST_KIB:
        raise ValueError(f"memory x iterations {p.memory_kib * p.iterations} KiB is too costly")
    if len(salt) != 32 or len(nonce) != 12:
        raise ValueError("salt or nonce has the wrong length")


def key_file_meta(data: bytes) -> dict[str, Any]:
    """The plain fields of a key file (no secrets), for ``key list``; ``ValueError`` if it is
    not a JSON object."""
    doc = load_json(data)
    if not isinstance(doc, dict):
        raise ValueError("not a key file")
    return {k: v for k, v in doc.items() if k not in ("data", "nonce", "kdf")}

"""Key files, sealed objects and per-object subkeys (``drengine/crypto``), against the format
document: where it states a construction, the test rebuilds it independently."""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drengine.core.errors import DrengineError, IntegrityError, WrongPassword
from drengine.crypto.aead import (
    DOMAIN_BLOB,
    DOMAIN_OBJECT,
    DOMAIN_TRAILER,
    OBJECT_MAGIC,
    SALT_SIZE,
    TAG_SIZE,
    ObjectCipher,
    new_salt,
    seal,
    unseal,
)
from drengine.crypto.keys import KdfParams, MasterKeys, make_key_file, open_key_file

PASSWORD = b"correct horse battery staple"
KDF = KdfParams(memory_kib=1024, iterations=1)


def _subkey(master: bytes, salt: bytes) -> bytes:
    """The object subkey as the format document states it (section 4.1)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"drengine v1 object key"
    ).derive(master)


def _nonce(domain: int, counter: int) -> bytes:
    return struct.pack(">IQ", domain, counter)


@pytest.fixture(scope="module")
def keys() -> MasterKeys:
    return MasterKeys.generate()


@pytest.fixture(scope="module")
def key_file(keys: MasterKeys) -> bytes:
    return make_key_file(keys, PASSWORD, KDF, {"created": "2026-01-01T00:00:00+00:00"})


# ---- master keys ------------------------------------------------------------------------------


def test_master_keys_generate() -> None:
    a, b = MasterKeys.generate(), MasterKeys.generate()
    for k in (a, b):
        assert len(k.encryption) == 32 and len(k.chunk_id) == 32
        assert 1 <= k.chunker_seed < 2**63
        assert k.encryption != k.chunk_id
        assert MasterKeys.from_json(k.to_json()) == k
    assert a != b


# ---- key files --------------------------------------------------------------------------------


def test_key_file_opens_with_the_right_password(keys: MasterKeys, key_file: bytes) -> None:
    assert open_key_file(key_file, PASSWORD, "keys/k") == keys


@pytest.mark.parametrize(
    "password", [b"", b"correct horse battery stapl", PASSWORD + b" ", PASSWORD.upper()]
)
def test_key_file_wrong_password(key_file: bytes, password: bytes) -> None:
    with pytest.raises(WrongPassword):
        open_key_file(key_file, password, "keys/k")


def test_key_file_layout_matches_the_format_document(keys: MasterKeys, key_file: bytes) -> None:
    doc = json.loads(key_file)
    assert doc["version"] == 1
    assert doc["created"] == "2026-01-01T00:00:00+00:00"
    kdf = doc["kdf"]
    assert kdf["algorithm"] == "argon2id"
    assert (kdf["memory_kib"], kdf["iterations"], kdf["parallelism"]) == (1024, 1, 2)
    salt = base64.b64decode(kdf["salt"], validate=True)
    nonce = base64.b64decode(doc["nonce"], validate=True)
    assert len(salt) == 32 and len(nonce) == 12
    # Unwrap independently: Argon2id(password, salt) -> AES-256-GCM with the fixed AAD.
    wrapping = hash_secret_raw(PASSWORD, salt, 1, 1024, 2, 32, Type.ID)
    plain = AESGCM(wrapping).decrypt(
        nonce, base64.b64decode(doc["data"], validate=True), b"drengine key file v1"
    )
    fields = json.loads(plain)
    assert base64.b64decode(fields["encryption"]) == keys.encryption
    assert base64.b64decode(fields["chunk_id"]) == keys.chunk_id
    assert fields["chunker_seed"] == keys.chunker_seed


def test_key_files_for_the_same_keys_differ(keys: MasterKeys) -> None:
    a = json.loads(make_key_file(keys, PASSWORD, KDF, {}))
    b = json.loads(make_key_file(keys, PASSWORD, KDF, {}))
    assert a["kdf"]["salt"] != b["kdf"]["salt"]
    assert a["nonce"] != b["nonce"]
    assert a["data"] != b["data"]


def _edit(key_file: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(key_file)
    change(doc)
    return json.dumps(doc).encode()


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            doc = doc[p]
        doc[last] = value

    return change


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(field)


_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda kf: b"",
    "truncated": lambda kf: kf[: len(kf) // 2],
    "not-utf8": lambda kf: b"\xff\xfe" + kf,
    "json-list": lambda kf: b"[]",
    "json-null": lambda kf: b"null",
    "no-kdf": lambda kf: _edit(kf, _drop("kdf")),
    "no-data": lambda kf: _edit(kf, _drop("data")),
    "no-nonce": lambda kf: _edit(kf, _drop("nonce")),
    "no-version": lambda kf: _edit(kf, _drop("version")),
    "version-2": lambda kf: _edit(kf, _set("version", 2)),
    "version-string": lambda kf: _edit(kf, _set("version", "1")),
    "algorithm-argon2i": lambda kf: _edit(kf, _set("kdf.algorithm", "argon2i")),
    "kdf-not-object": lambda kf: _edit(kf, _set("kdf", [])),
    "memory-not-number": lambda kf: _edit(kf, _set("kdf.memory_kib", "lots")),
    "salt-not-base64": lambda kf: _edit(kf, _set("kdf.salt", "!!not base64!!")),
    "nonce-not-base64": lambda kf: _edit(kf, _set("nonce", "p9eC5p2h*KC7ivaq")),
    "data-not-base64": lambda kf: _edit(kf, _set("data", "gvlE4omz=Hf")),
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_damaged_key_file_is_integrity_error(key_file: bytes, damage: str) -> None:
    with pytest.raises(IntegrityError):
        open_key_file(_DAMAGE[damage](key_file), PASSWORD, "keys/k")


# Damage that gets past parsing and makes the KDF or the cipher itself throw. Each of these
# escapes ``open_key_file`` (and so ``Repository.open``) as a non-drengine exception; a single
# flipped bit produces the first two ("iterations": 1 -> 0, "parallelism": 2 -> 0).
_CRASHING_DAMAGE: list[tuple[str, str, object, type[BaseException]]] = [
    ("iterations-0", "kdf.iterations", 0, HashingError),
    ("parallelism-0", "kdf.parallelism", 0, HashingError),
    ("memory-too-small", "kdf.memory_kib", 1, HashingError),
    ("memory-negative", "kdf.memory_kib", -5, OverflowError),
    ("iterations-huge", "kdf.iterations", 2**40, OverflowError),
    ("salt-too-short", "kdf.salt", base64.b64encode(b"abcd").decode(), HashingError),
    ("salt-not-string", "kdf.salt", 5, AttributeError),
    ("nonce-too-short", "nonce", base64.b64encode(b"abcd").decode(), ValueError),
]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(path, value, id=name)
        for name, path, value, _raised_before_the_fix in _CRASHING_DAMAGE
    ],
)
def test_damaged_kdf_parameters_are_a_drengine_error(
    key_file: bytes, path: str, value: object
) -> None:
    damaged = _edit(key_file, _set(path, value))
    with pytest.raises(DrengineError):  # IntegrityError, or WrongPassword at the least
        open_key_file(damaged, PASSWORD, "keys/k")


@pytest.mark.parametrize("field", ["data", "nonce", "kdf.salt"])
def test_flipped_bit_in_wrapped_material_never_opens(key_file: bytes, field: str) -> None:
    doc = json.loads(key_file)
    holder = doc["kdf"] if field == "kdf.salt" else doc
    name = field.rsplit(".", 1)[-1]
    raw = bytearray(base64.b64decode(holder[name]))
    for bit in range(0, len(raw) * 8, 7):  # a spread of bits over the whole field
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        holder[name] = base64.b64encode(bytes(flipped)).decode()
        # The format cannot tell damage here from a wrong password (section 2).
        with pytest.raises((WrongPassword, IntegrityError)):
            open_key_file(json.dumps(doc).encode(), PASSWORD, "keys/k")


# ---- sealed objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000, 100_000])
def test_seal_unseal_round_trip(keys: MasterKeys, size: int) -> None:
    plaintext = os.urandom(size)
    sealed = seal(keys.encryption, plaintext, b"drengine snapshot")
    assert unseal(keys.encryption, sealed, b"drengine snapshot", "snapshot") == plaintext


def test_sealed_layout_matches_the_format_document(keys: MasterKeys) -> None:
    plaintext = b'{"hello": "world"}'
    aad = b"drengine index"
    sealed = seal(keys.encryption, plaintext, aad)
    assert sealed[:4] == OBJECT_MAGIC == b"DRE\x01"
    assert len(sealed) == 4 + SALT_SIZE + len(plaintext) + TAG_SIZE
    salt = sealed[4:36]
    aead = AESGCM(_subkey(keys.encryption, salt))
    assert aead.decrypt(_nonce(2, 0), sealed[36:], aad) == plaintext


def test_sealing_twice_gives_different_objects(keys: MasterKeys) -> None:
    a = seal(keys.encryption, b"same", b"aad")
    b = seal(keys.encryption, b"same", b"aad")
    assert a != b
    assert a[4:36] != b[4:36]  # fresh salt


@pytest.mark.parametrize(
    ("sealed_aad", "opened_aad"),
    [
        (b"drengine index", b"drengine snapshot"),
        (b"drengine snapshot", b"drengine snapshot "),
        (b"drengine config settings" + b"a" * 64, b"drengine config settings" + b"b" * 64),
        (b"", b"x"),
        (b"x", b""),
    ],
)
def test_unseal_with_another_aad_is_integrity_error(
    keys: MasterKeys, sealed_aad: bytes, opened_aad: bytes
) -> None:
    sealed = seal(keys.encryption, b"payload", sealed_aad)
    with pytest.raises(IntegrityError):
        unseal(keys.encryption, sealed, opened_aad, "object")


def test_unseal_with_another_master_key_is_integrity_error(keys: MasterKeys) -> None:
    sealed = seal(keys.encryption, b"payload", b"aad")
    with pytest.raises(IntegrityError):
        unseal(os.urandom(32), sealed, b"aad", "object")


def test_every_single_bit_flip_of_a_sealed_object_is_integrity_error(keys: MasterKeys) -> None:
    sealed = seal(keys.encryption, b"a small sealed plaintext of 40 bytes....", b"aad")
    unnoticed = []
    for bit in range(len(sealed) * 8):
        damaged = bytearray(sealed)
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:
            unseal(keys.encryption, bytes(damaged), b"aad", "object")
            unnoticed.append(bit)
        except IntegrityError:
            pass
    assert unnoticed == []


def test_truncated_or_extended_sealed_object_is_integrity_error(keys: MasterKeys) -> None:
    sealed = seal(keys.encryption, b"0123456789", b"aad")
    for n in range(len(sealed)):
        with pytest.raises(IntegrityError):
            unseal(keys.encryption, sealed[:n], b"aad", "object")
    with pytest.raises(IntegrityError):
        unseal(keys.encryption, sealed + b"\x00", b"aad", "object")


# ---- subkeys and nonces -----------------------------------------------------------------------


def test_hkdf_subkeys_differ_per_salt(keys: MasterKeys) -> None:
    salts = [new_salt() for _ in range(64)]
    assert len(set(salts)) == 64 and all(len(s) == SALT_SIZE for s in salts)
    subkeys = {_subkey(keys.encryption, s) for s in salts}
    assert len(subkeys) == 64
    # ObjectCipher uses exactly that subkey: same message, same nonce, different salt ->
    # different ciphertext, and each equals AES-GCM under the independently derived subkey.
    outs = set()
    for s in salts[:8]:
        ct = ObjectCipher(keys.encryption, s).encrypt(DOMAIN_BLOB, 36, b"blob payload", b"aad")
        assert ct == AESGCM(_subkey(keys.encryption, s)).encrypt(
            _nonce(0, 36), b"blob payload", b"aad"
        )
        outs.add(ct)
    assert len(outs) == 8


def test_hkdf_subkeys_differ_per_master_key() -> None:
    salt = new_salt()
    assert _subkey(os.urandom(32), salt) != _subkey(os.urandom(32), salt)
    a = ObjectCipher(os.urandom(32), salt).encrypt(DOMAIN_OBJECT, 0, b"x", b"")
    b = ObjectCipher(os.urandom(32), salt).encrypt(DOMAIN_OBJECT, 0, b"x", b"")
    assert a != b


def test_object_cipher_wrong_salt_is_integrity_error(keys: MasterKeys) -> None:
    ct = ObjectCipher(keys.encryption, new_salt()).encrypt(DOMAIN_TRAILER, 0, b"t", b"aad")
    with pytest.raises(IntegrityError):
        ObjectCipher(keys.encryption, new_salt()).decrypt(DOMAIN_TRAILER, 0, ct, b"aad", "x")


def test_nonce_domains_and_counters_are_separate(keys: MasterKeys) -> None:
    cipher = ObjectCipher(keys.encryption, new_salt())
    positions = [(DOMAIN_BLOB, 0), (DOMAIN_BLOB, 1), (DOMAIN_BLOB, 2**40), (DOMAIN_TRAILER, 0)]
    positions.append((DOMAIN_OBJECT, 0))
    cts = {p: cipher.encrypt(*p, b"same message", b"aad") for p in positions}
    assert len(set(cts.values())) == len(positions)
    for p, ct in cts.items():
        assert cipher.decrypt(*p, ct, b"aad", "x") == b"same message"
        for q in positions:
            if q != p:
                with pytest.raises(IntegrityError):
                    cipher.decrypt(*q, ct, b"aad", "x")

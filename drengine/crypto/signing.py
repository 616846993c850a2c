"""Signed reports: Ed25519 signatures over canonical JSON.

The signing key is derived from the repository's master encryption key
(``HKDF-SHA256(ikm=encryption key, salt=none, info=b"drengine v1 report signing key")`` gives
the 32-byte Ed25519 seed), so it is kept exactly where the repository's keys are, behind its
passwords, with nothing new to store, back up or lose; every key file opens it, and a copy
of the repository made with ``copy`` (other master keys) signs with another key. Its public
key is stored in the repository in plain (``signers/``) and printed by ``drengine report
key`` for out-of-band comparison: a reviewer trusts a key because its fingerprint came to
them on paper or by mail, never because storage holds it.

A signed document is an envelope ``{"document": D, "signature": S}``. S signs
``b"drengine signed document v1\\n" + canonical(D)``; canonical JSON is ``json.dumps`` with
sorted keys, no whitespace and ASCII escapes, and holds no floats (their text differs
between implementations): figures are integers (milliseconds, bytes). Any change to D, a
single digit included, breaks the signature; whitespace and key order of the file do not
matter. ``docs/drills.md`` shows how to verify one without drengine.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from drengine.core.errors import ReportInvalid
from drengine.crypto.keys import MasterKeys, b64d, b64e

ALGORITHM = "ed25519"
_SEED_INFO = b"drengine v1 report signing key"
_CONTEXT = b"drengine signed document v1\n"
_SIGNER_CONTEXT = b"drengine signer v1\n"


def canonical(doc: Any) -> bytes:
    """The one byte string a document is signed as; ``ValueError`` for a float or a value
    JSON cannot hold."""
    _no_floats(doc)
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _no_floats(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float):
            raise ValueError(f"a signed document holds no floats (found {v!r})")
        if isinstance(v, dict):
            if any(not isinstance(k, str) for k in v):
                raise ValueError("a signed document's keys are strings")
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)


class SigningKey:
    """The repository's report-signing key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def of(cls, keys: MasterKeys) -> SigningKey:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEED_INFO).derive(
            keys.encryption
        )
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The envelope of ``doc``."""
        value = self._private.sign(_CONTEXT + canonical(doc))
        return {
            "document": doc,
            "signature": {
                "algorithm": ALGORITHM,
                "key_id": self.key_id,
                "public_key": b64e(self.public),
                "value": b64e(value),
            },
        }

    def signer_document(self, repo_id: str) -> dict[str, Any]:
        """What ``signers/`` stores: the public key, bound to the repository by its own
        signature (which proves only that the key's holder named this repository; trust
        comes from comparing the fingerprint out of band)."""
        proof = self._private.sign(_SIGNER_CONTEXT + repo_id.encode("ascii") + self.public)
        return {
            "version": 1,
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "public_key": b64e(self.public),
            "repository": repo_id,
            "proof": b64e(proof),
        }


def key_id(public: bytes) -> str:
    """A public key's fingerprint: hex SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public).hexdigest()


def fingerprint(public: bytes) -> str:
    """The fingerprint as people compare it: ``ed25519:`` and 16 groups of 4 hex digits."""
    h = key_id(public)
    return "ed25519:" + " ".join(h[i : i + 4] for i in range(0, len(h), 4))


def verify(envelope: Any) -> tuple[dict[str, Any], bytes]:
    """(the document, the public key that signed it); ``ReportInvalid`` saying what is
    wrong when the envelope is malformed or its signature does not hold."""
    if not isinstance(envelope, dict) or set(envelope) != {"document", "signature"}:
        raise ReportInvalid("not a signed drengine document (no document and signature)")
    doc, sig = envelope["document"], envelope["signature"]
    if not isinstance(doc, dict) or not isinstance(sig, dict):
        raise ReportInvalid("not a signed drengine document (malformed envelope)")
    if sig.get("algorithm") != ALGORITHM:
        raise ReportInvalid(f"unknown signature algorithm {sig.get('algorithm')!r}")
    try:
        public = b64d(sig["public_key"])
        value = b64d(sig["value"])
        key = Ed25519PublicKey.from_public_bytes(public)
        body = canonical(doc)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ReportInvalid(f"the signature block or document is malformed: {e}") from None
    if sig.get("key_id") != key_id(public):
        raise ReportInvalid("the signature's key_id does not match its public key")
    try:
        key.verify(value, _CONTEXT + body)
    except InvalidSignature:
        raise ReportInvalid(
            "the signature does not match the document: it was changed after signing"
        ) from None
    return doc, public


def parse_public_key(text: str) -> bytes:
    """A public key as given to ``report verify --key``: a signer document (JSON), the raw
    key in base64, or its fingerprint (hex, optionally as ``ed25519:`` groups); a
    fingerprint is returned as ``b"fp:" + hex``."""
    s = text.strip()
    if s.startswith("{"):
        try:
            doc = json.loads(s)
            return b64d(doc["public_key"])
        except (ValueError, KeyError, TypeError):
            raise ReportInvalid("the key file is not a drengine signer document") from None
    flat = s.removeprefix("ed25519:").replace(" ", "").lower()
    if len(flat) == 64 and all(c in "0123456789abcdef" for c in flat):
        return b"fp:" + flat.encode("ascii")
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ReportInvalid(
            "the key is neither a signer document, a base64 Ed25519 public key, nor a "
            "fingerprint (64 hex digits)"
        )
    return raw


def same_key(public: bytes, trusted: bytes) -> bool:
    """Whether ``public`` is the trusted key (``trusted`` from ``parse_public_key``)."""
    if trusted.startswith(b"fp:"):
        return key_id(public).encode("ascii") == trusted[3:]
    return public == trusted


def check_signer(doc: Any, repo_id: str) -> bytes:
    """The public key of a ``signers/`` document whose proof holds for ``repo_id``."""
    try:
        public = b64d(doc["public_key"])
        proof = b64d(doc["proof"])
        if doc.get("repository") != repo_id or doc.get("algorithm") != ALGORITHM:
            raise ValueError("for another repository or algorithm")
        Ed25519PublicKey.from_public_bytes(public).verify(
            proof, _SIGNER_CONTEXT + repo_id.encode("ascii") + public
        )
    except (ValueError, KeyError, TypeError, InvalidSignature) as e:
        raise ReportInvalid(f"the stored signer key is not valid: {e or 'bad proof'}") from None
    return public

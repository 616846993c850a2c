"""Signed reports and the signing key's public half, as stored in the repository.

``reports/<id>``: a sealed object (AAD ``b"drengine report"``) whose plaintext is a signed
envelope in canonical JSON (``crypto/signing.py``). Sealed because a report names hosts,
paths and databases, which storage must not reveal; signed so that it stands on its own
once exported. Written once, never rewritten or deleted by drengine (prune leaves
``reports/`` alone), and under S3 Object Lock where the repository uses it.

``signers/<id>``: a plain JSON signer document (the public key, bound to the repository ID
by its own signature), for a reader who has storage access but no password. Its content is
the same on every write, so its name is too: writing it again is a no-op.
"""

from __future__ import annotations

import json
from typing import Any

from drengine.core.errors import IntegrityError, ObjectNotFound, ReportInvalid
from drengine.crypto.signing import SigningKey, canonical, check_signer, verify
from drengine.repository import layout
from drengine.repository.listing import list_objects
from drengine.repository.repo import MAX_SEALED_OBJECT, Repository

_REPORT_AAD = b"drengine report"


def signing_key(repo: Repository) -> SigningKey:
    return SigningKey.of(repo.keys)


def publish_signer(repo: Repository) -> tuple[SigningKey, dict[str, Any]]:
    """Store the signer document if it is not stored yet; the key and the document."""
    key = signing_key(repo)
    doc = key.signer_document(repo.id)
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    name = layout.SIGNERS + layout.object_id(data)
    try:
        repo.backend.stat(name)
    except ObjectNotFound:
        repo.backend.put(name, data)
    return key, doc


def stored_signers(repo: Repository) -> list[bytes]:
    """Public keys of the signer documents in storage whose proof holds for this
    repository (anyone who can write storage can add one: see ``publish_signer``)."""
    keys = []
    for item in list_objects(repo.backend, layout.SIGNERS, repo.strays):
        try:
            data = repo.backend.get(layout.SIGNERS + item.oid)
            keys.append(check_signer(json.loads(data), repo.id))
        except (ValueError, IntegrityError) as e:
            repo.report_damaged(layout.SIGNERS + item.oid, str(e))
        except ObjectNotFound:
            continue
    return keys


def save_report(repo: Repository, envelope: dict[str, Any]) -> str:
    """Seal and store a signed envelope; its object ID."""
    return repo.save_sealed(layout.REPORTS, canonical(envelope), _REPORT_AAD)


def report_ids(repo: Repository) -> list[str]:
    return [o.oid for o in list_objects(repo.backend, layout.REPORTS, repo.strays)]


def load_report(repo: Repository, oid: str) -> dict[str, Any]:
    """A stored report's envelope, its signature checked (``ReportInvalid`` if it does not
    hold) and its document a dict."""
    plain = repo.load_sealed(layout.REPORTS, oid, _REPORT_AAD, "report")
    try:
        envelope = json.loads(plain)
    except ValueError as e:
        raise IntegrityError(f"report {oid} is malformed: {e}") from None
    verify(envelope)
    if not isinstance(envelope, dict):
        raise IntegrityError(f"report {oid} is malformed")
    return envelope


def reports(repo: Repository, kind: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every readable report (of ``kind``, the document's ``type``) as (ID, envelope),
    oldest first; damaged ones are reported once and left out."""
    out = []
    for item in list_objects(repo.backend, layout.REPORTS, repo.strays):
        try:
            if item.size > MAX_SEALED_OBJECT:
                raise IntegrityError(f"report {item.oid} is {item.size} bytes, over the limit")
            env = load_report(repo, item.oid)
        except ObjectNotFound:
            continue
        except (IntegrityError, ReportInvalid) as e:  # a report must verify to count
            repo.report_damaged(layout.REPORTS + item.oid, str(e))
            continue
        if kind is None or env["document"].get("type") == kind:
            out.append((item.oid, env))
    return sorted(out, key=lambda r: (str(r[1]["document"].get("finished", "")), r[0]))

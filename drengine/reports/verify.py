"""``report verify FILE``: is this report what a repository's key signed, and does its
evidence still exist?

Three things are checked, each failing with its own sentence (exit 22):
1. the signature holds over the document (any change, one digit included, breaks it);
2. the key that made it is the one trusted: given with ``--key`` (the public key or its
   fingerprint, compared out of band; works offline, nothing else needed), else the key of
   the repository named with ``--repo`` (derived from its master keys, so it needs the
   password);
3. with a repository, every snapshot the report names is still in it (listing snapshot
   names needs storage access only).
"""

from __future__ import annotations

import json
from typing import Any

from drengine.core.errors import ReportInvalid, UsageError
from drengine.crypto.signing import fingerprint, same_key, verify


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        # A reader that keeps the first of two keys would see another document than the
        # one whose signature holds (which keeps the last).
        raise ReportInvalid(f"the report gives the key {dup!r} twice")
    return dict(pairs)


def parse(data: bytes, name: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise ReportInvalid(f"{name} is not a drengine report (not JSON)") from None


def named_snapshots(doc: dict[str, Any]) -> list[str]:
    """The snapshot IDs a report gives as evidence."""
    ids = []
    snap = doc.get("snapshot")
    if isinstance(snap, dict) and isinstance(snap.get("id"), str):
        ids.append(snap["id"])
    evidence = doc.get("evidence")
    if isinstance(evidence, dict):
        ids += [s for s in evidence.get("snapshots", []) if isinstance(s, str)]
    return sorted(set(ids))


def verify_report(
    envelope: Any,
    name: str,
    trusted: bytes | None,
    repo_key: bytes | None,
    snapshot_ids: set[str] | None,
) -> dict[str, Any]:
    """What was proven, as a dict; ``ReportInvalid`` naming the first thing that fails."""
    doc, public = verify(envelope)
    if trusted is not None:
        if not same_key(public, trusted):
            raise ReportInvalid(
                f"{name} is signed by key {fingerprint(public)}, not by the key given"
            )
    elif repo_key is not None:
        if public != repo_key:
            raise ReportInvalid(
                f"{name} is signed by key {fingerprint(public)}, which is not this "
                f"repository's report key ({fingerprint(repo_key)})"
            )
    else:
        raise UsageError("give the signer's public key (--key) or its repository (--repo)")
    missing: list[str] = []
    named = named_snapshots(doc)
    if snapshot_ids is not None:
        missing = [s for s in named if s not in snapshot_ids]
        if missing:
            raise ReportInvalid(
                f"{name}: {len(missing)} of the {len(named)} snapshots it names are not in the "
                f"repository (first: {missing[0][:16]}); forgotten since, or the report is "
                "of another repository"
            )
    return {
        "verified": True,
        "type": doc.get("type"),
        "policy": doc.get("policy"),
        "verdict": doc.get("verdict"),
        "finished": doc.get("finished") or doc.get("generated"),
        "key_id": envelope["signature"]["key_id"],
        "fingerprint": fingerprint(public),
        "snapshots": named,
        "snapshots_checked": snapshot_ids is not None,
    }

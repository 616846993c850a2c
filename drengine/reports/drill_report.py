"""The drill report: one signed JSON document per drill (``docs/drills.md`` shows one).

Every figure is an integer (milliseconds, bytes) and every time RFC 3339 in UTC, so the
canonical form that is signed is the same in any language. The verdict is ``passed``,
``failed`` (the restore or a check failed: every failed check is a reason) or ``target
missed`` (all checks passed; the measured RTO or the RPO missed the policy's target).
"""

from __future__ import annotations

import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drengine import __version__
from drengine.core.model import Snapshot
from drengine.core.phases import Phases
from drengine.drills.measure import forecast, rpo, snapshot_bytes
from drengine.policy.model import PolicyFile
from drengine.repository.repo import Repository

if TYPE_CHECKING:
    from drengine.drills.run import Restored

DRILL_TYPE = "drengine drill report"
VERSION = 1


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def proven_snapshots(docs: list[dict[str, Any]]) -> list[tuple[str, datetime]]:
    """(snapshot ID, its time) of every snapshot a drill restored and verified."""
    out = []
    for d in docs:
        snap = d.get("snapshot") or {}
        t = _time(snap.get("time"))
        if d.get("verdict") in ("passed", "target missed") and t is not None:
            out.append((str(snap.get("id")), t))
    return out


def repository_facts(repo: Repository) -> dict[str, Any]:
    s = repo.settings
    lock = {"mode": s.object_lock_mode, "days": s.object_lock_days} if s.object_lock_mode else None
    return {
        "id": repo.id,
        "location": repo.location,
        "encryption": "AES-256-GCM, keys behind Argon2id-wrapped key files",
        "object_lock": lock,
    }


def drill_document(
    p: PolicyFile,
    repo: Repository,
    snap: Snapshot,
    how: str,
    span: tuple[datetime, datetime],
    restored: Restored,
    phases: Phases,
    earlier: list[dict[str, Any]],
    backups: list[datetime],
) -> dict[str, Any]:
    started, finished = span
    rto_ms = p.targets.rto_ms if p.targets else None
    rpo_ms = p.targets.rpo_ms if p.targets else None
    checks = restored.checks
    ok = bool(checks) and all(c["passed"] for c in checks)
    proven = proven_snapshots(earlier) + ([(snap.id, snap.sort_time())] if ok else [])
    tag = f"policy:{p.name}"
    snaps = [s for s in repo.snapshots() if tag in s.tags]
    since = max((t for d in earlier if (t := _time(d.get("finished"))) is not None), default=None)
    rpo_fig = rpo(finished, snaps, proven, backups, since, rpo_ms)
    measured: dict[str, Any] = {
        "rto_ms": restored.rto_ms,
        "fixed_ms": restored.fixed_ms,
        "data_ms": max(0, restored.rto_ms - restored.fixed_ms),
        "bytes": restored.bytes,
        "files": restored.files,
        "phases": phases.to_json(),
    }
    latest = snaps[-1] if snaps else snap
    past = [d["measured"] for d in reversed(earlier) if d.get("verdict") != "failed"]
    fc = forecast(snapshot_bytes(latest), measured, past, rto_ms) if ok else None
    if fc is not None:
        fc["snapshot"] = latest.id
    rto = {
        "measured_ms": restored.rto_ms,
        "target_ms": rto_ms,
        "met": None if rto_ms is None else restored.rto_ms <= rto_ms,
    }
    doc: dict[str, Any] = {
        "type": DRILL_TYPE,
        "version": VERSION,
        "policy": p.name,
        "host": socket.gethostname(),
        "program_version": __version__,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "repository": repository_facts(repo),
        "snapshot": {
            "id": snap.id,
            "time": snap.sort_time().isoformat(),
            "host": snap.host,
            "paths": snap.paths,
            "kinds": sorted({str(pt.get("kind")) for pt in snap.parts}),
            "selected": how,
            "bytes": snapshot_bytes(snap),
        },
        "checks": checks,
        "measured": measured,
        "rto": rto,
        "rpo": rpo_fig,
        "forecast": fc,
    }
    doc["verdict"], doc["reasons"] = verdict(doc)
    return doc


def verdict(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """("passed" | "failed" | "target missed", every reason)."""
    checks = doc["checks"]
    failed = [c for c in checks if not c["passed"]]
    if failed:
        return "failed", [
            f"{c['kind']} {c['check']} ({c['target']}): {c['detail']}" for c in failed
        ]
    if not checks:
        return "failed", ["nothing was checked: the snapshot holds nothing a drill restores"]
    reasons = []
    rto, rpo_fig = doc["rto"], doc["rpo"]
    if rto["met"] is False:
        reasons.append(
            f"RTO target missed: the restore took {seconds(rto['measured_ms'])}, "
            f"the target is {seconds(rto['target_ms'])}"
        )
    if rpo_fig["met"] is False:
        gap = rpo_fig["largest_gap"]
        reasons.append(
            f"RPO target missed: {seconds(gap['ms'])} without a successful backup "
            f"(from {gap['from']} to {gap['to']}); the target is {seconds(rpo_fig['target_ms'])}"
            if rpo_fig["verified"] is not None
            else "RPO target missed: no snapshot of the policy has been proven restorable"
        )
    fc = doc.get("forecast")
    if fc and fc.get("exceeds_target"):
        reasons.append(
            f"warning: a full restore of the newest snapshot is forecast to take "
            f"{seconds(fc['predicted_ms'])}, over the RTO target"
        )
    missed = any(not r.startswith("warning:") for r in reasons)
    return ("target missed" if missed else "passed"), reasons


def seconds(ms: int | None) -> str:
    """A duration for people: 850 ms, 12.3 s, 4 min 10 s, 2 h 5 min."""
    if ms is None:
        return "n/a"
    if ms < 1000:
        return f"{ms} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec} s" if sec else f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"

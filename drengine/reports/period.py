"""The compliance report: each policy over a period (a quarter, say), from the signed drill
reports in its repository, its snapshots, and the job history where it is at hand.

Per policy: backups run and failed; RPO achieved (the largest gap without a successful
backup) against the target; drills run and passed; RTO measured against the target, drill
by drill (the series the HTML page charts); the latest forecast; encryption and
immutability; and the evidence: snapshot IDs and the digest of each drill report (SHA-256
of its canonical signed form, so a reviewer can match every report file to this page).

A policy *met* its targets when at least one drill in the period passed, no drill failed
or missed a target, and the RPO gap stayed within its target; it *failed* when a drill
could not restore or verify (the RTO figures count only restores that worked). Without a
drill in the period it is *not proven*: backups that were never restored prove nothing.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drengine import __version__
from drengine.core.model import Snapshot
from drengine.crypto.signing import canonical
from drengine.drills.measure import forecast, rpo, snapshot_bytes
from drengine.policy.model import PolicyFile
from drengine.reports.drill_report import DRILL_TYPE, proven_snapshots, repository_facts
from drengine.repository.repo import Repository
from drengine.repository.reports import reports

COMPLIANCE_TYPE = "drengine compliance report"
_WHAT = {
    "met": "met its targets",
    "missed": "missed a target",
    "failed": "could not be restored in a drill",
    "not proven": "was not drilled",
}


@dataclass
class History:
    """Backup jobs of a policy in the period, from the job history (None: not at hand)."""

    run: int
    failed: int
    success_times: list[datetime]


def _at(text: Any) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def policy_section(
    p: PolicyFile,
    repo: Repository,
    since: datetime,
    until: datetime,
    history: History | None,
) -> dict[str, Any]:
    tag = f"policy:{p.name}"
    all_snaps = [s for s in repo.snapshots() if tag in s.tags]
    snaps = [s for s in all_snaps if since <= s.sort_time() < until]
    drills: list[tuple[str, dict[str, Any]]] = []
    earlier: list[tuple[str, dict[str, Any]]] = []
    for oid, env in reports(repo, DRILL_TYPE):
        doc = env["document"]
        when = _at(doc.get("finished"))
        if doc.get("policy") != p.name or when is None or when >= until:
            continue
        (drills if when >= since else earlier).append((oid, env))
    docs = [env["document"] for _, env in drills]
    rto_ms = p.targets.rto_ms if p.targets else None
    rpo_ms = p.targets.rpo_ms if p.targets else None
    proven = proven_snapshots([e["document"] for _, e in earlier] + docs)
    backups = history.success_times if history else []
    # Every snapshot before the end, not only the period's: a gap that was open when the
    # period began counts from the last backup before it.
    before_end = [s for s in all_snaps if s.sort_time() < until]
    rpo_fig = rpo(min(until, datetime.now(UTC)), before_end, proven, backups, since, rpo_ms)
    series = [
        {
            "time": d["finished"],
            "verdict": d["verdict"],
            "rto_ms": d["rto"]["measured_ms"],
            "rpo_verified_age_ms": (d["rpo"].get("verified") or {}).get("age_ms"),
            "snapshot": d["snapshot"]["id"],
        }
        for d in docs
    ]
    counts = {
        v: sum(1 for d in docs if d["verdict"] == v) for v in ("passed", "failed", "target missed")
    }
    problems = _problems(docs, rpo_fig, history)
    if not docs:
        status = "not proven"
    elif counts["failed"]:
        status = "failed"  # a drill could not restore or verify: worse than a missed target
    else:
        status = "missed" if problems else "met"
    restored = [s for s in series if s["verdict"] != "failed"]  # RTO of restores that worked
    evidence_reports = [
        {
            "id": oid,
            "digest": hashlib.sha256(canonical(env)).hexdigest(),
            "finished": env["document"]["finished"],
            "verdict": env["document"]["verdict"],
        }
        for oid, env in drills
    ]
    return {
        "policy": p.name,
        "status": status,
        "problems": problems if docs else ["no restore drill ran in the period", *problems],
        "repository": repository_facts(repo),
        "targets": None if p.targets is None else {"rpo_ms": rpo_ms, "rto_ms": rto_ms},
        "backups": _backups(snaps, history),
        "rpo": rpo_fig,
        "drills": {"run": len(docs), **{k.replace(" ", "_"): n for k, n in counts.items()}},
        "rto": {
            "target_ms": rto_ms,
            "max_ms": max((s["rto_ms"] for s in restored), default=None),
            "last_ms": restored[-1]["rto_ms"] if restored else None,
            "met": None if rto_ms is None or not series
            else all(s["rto_ms"] <= rto_ms for s in restored) if restored else False,
        },
        "series": series,
        "forecast": _forecast([s for s in all_snaps if s.sort_time() < until],
                              [e["document"] for _, e in earlier] + docs, rto_ms),
        "evidence": {"snapshots": sorted({s["snapshot"] for s in series}),
                     "reports": evidence_reports},
    }  # fmt: skip


def _forecast(
    snaps: list[Snapshot], docs: list[dict[str, Any]], target_ms: int | None
) -> dict[str, Any] | None:
    """The full-restore time of the policy's newest snapshot now, from its latest drills."""
    measured = [d["measured"] for d in reversed(docs) if d.get("verdict") != "failed"]
    if not snaps or not measured:
        return None
    fc = forecast(snapshot_bytes(snaps[-1]), measured[0], measured[1:], target_ms)
    fc["snapshot"] = snaps[-1].id
    return fc


def _backups(snaps: list[Snapshot], history: History | None) -> dict[str, Any]:
    if history is not None:
        return {"run": history.run, "failed": history.failed, "from": "job history",
                "snapshots": len(snaps)}  # fmt: skip
    return {"run": len(snaps), "failed": None, "from": "snapshots", "snapshots": len(snaps)}


def _problems(
    docs: list[dict[str, Any]], rpo_fig: dict[str, Any], history: History | None
) -> list[str]:
    out = []
    for d in docs:
        if d["verdict"] != "passed":
            out.append(
                f"the drill of {d['finished'][:10]} {d['verdict']}: " + "; ".join(d["reasons"][:3])
            )
    if rpo_fig["met"] is False and rpo_fig["verified"] is not None:
        out.append(
            "the RPO target was missed: the longest time without a successful backup was over it"
        )
    if history is not None and history.failed:
        out.append(f"{history.failed} of {history.run} backups failed")
    return out


def compliance_document(
    sections: list[dict[str, Any]], since: datetime, until: datetime
) -> dict[str, Any]:
    met = [s for s in sections if s["status"] == "met"]
    n = len(sections)
    if n and len(met) == n:
        text = (
            f"All {n} systems met their targets in this period."
            if n > 1
            else ("The system met its targets in this period.")
        )
    else:
        text = f"{len(met)} of {n} systems met their targets in this period: " + "; ".join(
            f"{s['policy']} {_WHAT[s['status']]}" for s in sections if s["status"] != "met"
        )
    return {
        "type": COMPLIANCE_TYPE,
        "version": 1,
        "generated": datetime.now(UTC).isoformat(),
        "host": socket.gethostname(),
        "program_version": __version__,
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "summary": {"systems": n, "met": len(met), "text": text},
        "policies": sections,
        "evidence": {
            "snapshots": sorted({x for s in sections for x in s["evidence"]["snapshots"]}),
            "reports": [r for s in sections for r in s["evidence"]["reports"]],
        },
    }  # fmt: skip

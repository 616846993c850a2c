"""``drengine drill run POLICY``: restore a snapshot of the policy into a sandbox, prove
the copy usable, measure RTO and RPO, and write a signed report into the repository.

The drill holds a shared lock for its whole run (no prune can remove what it restores),
restores with the same code as ``restore`` and ``restore --to``, and measures itself with
the same phases (``core/phases.py``). Measured RTO is the wall time from opening the
repository to the end of the last verification, less the time spent starting and stopping
throwaway servers (an admin restoring in an outage has the server already). What is
checked, per source kind, is in ``docs/drills.md``; every check is listed in the report,
passed or failed, and one failure never hides another.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drengine.core.errors import (
    Cancelled,
    DrillFailed,
    SnapshotNotFound,
    TargetMissed,
    UsageError,
)
from drengine.core.model import Snapshot
from drengine.core.phases import Phases
from drengine.drills.databases import Check, drill_mysql, drill_postgresql, unrunnable_checks
from drengine.drills.local import restore_local, restored_sqlite, restored_streams
from drengine.drills.sandbox import Sandbox, default_base
from drengine.engine.restore_to import verified_chunks
from drengine.policy.model import Drill, PolicyFile
from drengine.reports.drill_report import DRILL_TYPE, drill_document
from drengine.repository.locks import locked
from drengine.repository.repo import Repository
from drengine.repository.reports import publish_signer, reports, save_report

_DB_KINDS = ("postgresql", "mysql")


@dataclass
class DrillOptions:
    snapshot: str = ""  # an ID or prefix, "latest" or "random"; "" for the policy's choice
    cancel: threading.Event | None = None
    seed: int | None = None  # for "random": the same seed picks the same snapshot
    backups: list[datetime] = field(default_factory=list)  # successful backup times (history)


@dataclass
class Restored:
    """What the restore-and-verify part of a drill found."""

    checks: list[Check] = field(default_factory=list)
    bytes: int = 0
    files: int = 0
    rto_ms: int = 0
    fixed_ms: int = 0  # of rto_ms: opening the repository and loading the index


def select_snapshot(repo: Repository, p: PolicyFile, opts: DrillOptions) -> tuple[Snapshot, str]:
    """The snapshot to drill and how it was chosen (``latest``, ``random`` or ``given``)."""
    how = opts.snapshot or (p.drill.snapshot if p.drill else "latest")
    tag = f"policy:{p.name}"
    if how not in ("latest", "random"):
        snap = repo.find_snapshot(how)
        if tag not in snap.tags:
            # Its proof would count for this policy's RPO and evidence.
            raise UsageError(
                f"snapshot {snap.id[:8]} is not one of policy {p.name}'s (it lacks the tag "
                f"{tag}): drill it with its own policy"
            )
        return snap, "given"
    snaps = [s for s in repo.snapshots() if tag in s.tags]
    if not snaps:
        raise SnapshotNotFound(
            f"policy {p.name} has no readable snapshots in {repo.location} (tagged {tag}) to drill"
        )
    if how == "latest":
        return snaps[-1], how
    return random.Random(opts.seed).choice(snaps), how


def restore_and_verify(
    repo: Repository,
    snap: Snapshot,
    box: Sandbox,
    drill: Drill | None,
    phases: Phases,
    cancel: threading.Event | None,
) -> Restored:
    """Restore everything the snapshot holds into the sandbox and check it, part by part."""
    out = Restored()

    def stop_if_cancelled() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the drill was cancelled")

    kinds = {str(part.get("kind")) for part in snap.parts}
    db_paths = {s["path"] for s in snap.streams() if s["kind"] in _DB_KINDS}
    local = [path for path in snap.paths if path not in db_paths]
    root = box.dir("restore")
    if local:
        stop_if_cancelled()
        checks, out.bytes, out.files = restore_local(repo, snap, root, local, phases, cancel)
        out.checks += checks

    def chunks(path: str) -> Iterator[bytes]:
        return verified_chunks(repo, snap, path, phases, cancel)

    for part in snap.parts:
        stop_if_cancelled()
        kind = str(part.get("kind"))
        if kind in _DB_KINDS:
            drill_db = drill_postgresql if kind == "postgresql" else drill_mysql
            out.checks += drill_db(part, chunks, box, drill, kinds, phases)
            out.bytes += sum(int(e.get("size", 0)) for e in part.get("entries", []))
        elif kind == "sqlite" and local:
            out.checks += restored_sqlite(part, root, drill, kinds, phases)
    if local:
        out.checks += restored_streams(snap, root, db_paths, phases)
    out.checks += unrunnable_checks(drill, kinds)
    out.rto_ms = round((phases.elapsed() - phases.wall("sandbox")) * 1000)
    out.fixed_ms = round((phases.wall("open") + phases.wall("index")) * 1000)
    return out


def run_drill(
    p: PolicyFile, open_repo: Callable[[], Repository], opts: DrillOptions
) -> DrillOutcome:
    """Open, restore, verify, measure, sign and store; the report (its verdict decides the
    exit code). Errors before a snapshot is chosen (no repository, wrong password, no
    snapshot) are raised as they are: there is nothing to report on."""
    phases = Phases()
    started = datetime.now(UTC)
    with phases.span("open"):
        repo = open_repo()
    with locked(repo, exclusive=False, operation="drill"):
        with phases.span("index"):
            repo.load_index()
        snap, how = select_snapshot(repo, p, opts)
        base = default_base(p.drill.sandbox_dir if p.drill else None)
        with Sandbox(base, p.name) as box:
            restored = restore_and_verify(repo, snap, box, p.drill, phases, opts.cancel)
        finished = datetime.now(UTC)
        earlier = [
            env["document"]
            for _, env in reports(repo, DRILL_TYPE)
            if env["document"].get("policy") == p.name
        ]
        doc = drill_document(
            p, repo, snap, how, (started, finished), restored, phases, earlier, opts.backups
        )
        key, _ = publish_signer(repo)
        envelope = key.sign(doc)
        report_id = save_report(repo, envelope)
    return DrillOutcome(doc, envelope, report_id)


@dataclass
class DrillOutcome:
    document: dict[str, Any]
    envelope: dict[str, Any]
    report_id: str

    @property
    def verdict(self) -> str:
        return str(self.document["verdict"])

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


EXIT_CODES = {"passed": 0, "failed": DrillFailed.exit_code, "target missed": TargetMissed.exit_code}

"""A policy's drill as a job: what ``drill run`` and the daemon's drill schedule both call.

Around ``drills.run.run_drill`` it records the job and the drill's figures in the job
history (metrics and ``status`` read them), keeps a copy of the signed report in the state
directory (``reports/POLICY/``, beside ``state.sqlite``), and notifies when the drill failed
or missed a target, and when a drill passes again after one that did not.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from drengine.core.errors import Cancelled, DrengineError
from drengine.drills.run import DrillOptions, DrillOutcome, run_drill
from drengine.policy.model import PolicyFile
from drengine.scheduler import notify
from drengine.scheduler.run import open_policy_repository
from drengine.scheduler.state import DrillRow, StateDB

_OUTCOME = {"passed": "success", "target missed": "partial", "failed": "failure"}


def run_policy_drill(p: PolicyFile, state: StateDB, opts: DrillOptions) -> DrillOutcome:
    before = state.last_drill(p.name)
    job = state.start(p.name, "drill")
    opts.backups = opts.backups or [
        datetime.fromtimestamp(t, UTC) for t in state.backup_times(p.name)
    ]
    try:
        out = run_drill(p, lambda: open_policy_repository(p), opts)
    except DrengineError as e:
        cancelled = isinstance(e, Cancelled)
        state.finish(job, "cancelled" if cancelled else "failure", error=str(e))
        if not cancelled:
            notify.send(p, notify.event(p, "drill_failed", error=str(e), reasons=[str(e)]))
        raise
    doc = out.document
    reasons = list(doc["reasons"])
    state.finish(
        job, _OUTCOME[out.verdict], snapshot=doc["snapshot"]["id"], error="; ".join(reasons) or None
    )
    fc = doc.get("forecast") or {}
    state.record_drill(
        p.name,
        DrillRow(
            finished=datetime.fromisoformat(doc["finished"]).timestamp(),
            verdict=out.verdict,
            rto_ms=int(doc["rto"]["measured_ms"]),
            forecast_ms=fc.get("predicted_ms"),
            snapshot=doc["snapshot"]["id"],
            report=out.report_id,
        ),
    )
    keep_copy(state.path.parent / "reports" / p.name, out)
    fields = {"report": out.report_id, "snapshot": doc["snapshot"]["id"], "reasons": reasons}
    if out.verdict == "failed":
        notify.send(p, notify.event(p, "drill_failed", **fields))
    elif out.verdict == "target missed":
        notify.send(p, notify.event(p, "drill_target_missed", **fields))
    elif before is not None and before.verdict != "passed":
        notify.send(p, notify.event(p, "drill_recovery", **fields))
    return out


def keep_copy(directory: Path, out: DrillOutcome) -> Path:
    """The signed report as a file, written whole (temporary name, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = out.document["finished"][:19].replace(":", "")
    path = directory / f"{stamp}-{out.report_id[:8]}.json"
    write_whole(path, json.dumps(out.envelope, indent=2, sort_keys=True) + "\n")
    return path


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that no reader ever sees a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

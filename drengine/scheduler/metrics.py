"""Prometheus metrics of policies: what ``run`` writes as a node-exporter textfile (and the
daemon will serve at ``/metrics``), from the job history and the repository.

One gauge family per figure, labelled by policy. Ages and timestamps are seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from drengine.core.model import Snapshot
from drengine.policy.model import PolicyFile
from drengine.scheduler.state import StateDB


def policy_registry(
    p: PolicyFile,
    state: StateDB,
    snapshots: list[Snapshot] | None = None,
    now: float | None = None,
    snapshot_count: int | None = None,
) -> CollectorRegistry:
    """The metrics of one policy; ``snapshots``: its snapshots in the repository (their
    count and the newest one's age), else ``snapshot_count`` and the job history's age."""
    t = time.time() if now is None else now
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None) -> None:
        g = Gauge(name, doc, ["policy"], registry=reg)
        if value is not None:
            g.labels(policy=p.name).set(value)

    last = state.last(p.name, "backup")
    ok = state.last(p.name, "backup", "success") or state.last(p.name, "backup", "partial")
    if snapshots is not None:
        newest = max((s.sort_time().timestamp() for s in snapshots), default=None)
        snapshot_count = len(snapshots)
    else:
        newest = state.last_success_end(p.name)
    gauge("drengine_last_backup_timestamp_seconds", "When the last backup ended.",
          last.ended if last else None)  # fmt: skip
    gauge("drengine_last_success_timestamp_seconds", "When the last successful backup ended.",
          ok.ended if ok else None)  # fmt: skip
    gauge("drengine_last_backup_success", "1 if the last backup succeeded, else 0.",
          (1.0 if last.outcome in ("success", "partial") else 0.0) if last else None)  # fmt: skip
    duration = (last.ended - last.started) if last and last.ended else None
    gauge("drengine_last_backup_duration_seconds", "How long the last backup took.", duration)
    gauge("drengine_last_backup_bytes_added", "Bytes the last backup added to the repository.",
          float(last.bytes_added) if last and last.bytes_added is not None else None)  # fmt: skip
    gauge("drengine_snapshots", "Snapshots of the policy in the repository.", snapshot_count)
    gauge("drengine_rpo_age_seconds", "Age of the newest snapshot.",
          (t - newest) if newest is not None else None)  # fmt: skip
    gauge("drengine_rpo_target_seconds", "The policy's RPO target.",
          p.targets.rpo_ms / 1000 if p.targets else None)  # fmt: skip
    gauge("drengine_backup_failures", "Failed backups since the last successful one.",
          state.failures_since_success(p.name, "backup"))  # fmt: skip
    drill = state.last_drill(p.name)
    gauge("drengine_last_drill_timestamp_seconds", "When the last restore drill ended.",
          drill.finished if drill else None)  # fmt: skip
    gauge("drengine_last_drill_passed",
          "1 if the last drill passed, 0 if it failed or missed a target.",
          (1.0 if drill.verdict == "passed" else 0.0) if drill else None)  # fmt: skip
    gauge("drengine_last_drill_failed", "1 if the last drill could not restore or verify.",
          (1.0 if drill.verdict == "failed" else 0.0) if drill else None)  # fmt: skip
    gauge("drengine_last_drill_rto_seconds", "RTO measured by the last drill.",
          drill.rto_ms / 1000 if drill and drill.rto_ms is not None else None)  # fmt: skip
    forecast = drill.forecast_ms if drill else None
    gauge("drengine_rto_forecast_seconds", "Forecast full-restore time of the newest snapshot.",
          forecast / 1000 if forecast is not None else None)  # fmt: skip
    gauge("drengine_rto_target_seconds", "The policy's RTO target.",
          p.targets.rto_ms / 1000 if p.targets else None)  # fmt: skip
    return reg


def write_textfile(directory: Path, p: PolicyFile, reg: CollectorRegistry) -> Path:
    """``DIR/drengine-NAME.prom``, written atomically (node-exporter's textfile collector)."""
    path = directory / f"drengine-{p.name}.prom"
    write_to_textfile(str(path), reg)
    return path

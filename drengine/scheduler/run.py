"""``drengine run POLICY``: the policy's backup now, then its retention, then prune and check
when they are due. The daemon runs the same functions on its schedules.

Every snapshot of a policy is tagged ``policy:NAME`` and retention applies to those only,
so several policies can share a repository. Retention is ``engine.retention.run_forget``,
the code behind ``drengine forget``. Each step is recorded in the job history; a prune or
check is due when its schedule has come round since it last ran (or it never ran).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drengine.core.errors import Cancelled, DrengineError
from drengine.core.passwords import password_from_command, password_from_file
from drengine.engine.backup import BackupOptions, BackupResult, run_backup
from drengine.engine.check import run_check
from drengine.engine.hooks import run_hooks
from drengine.engine.prune import run_prune
from drengine.engine.retention import ForgetOptions, run_forget
from drengine.policy.model import PolicyFile
from drengine.policy.schedule import parse_schedule
from drengine.repository.repo import Repository
from drengine.scheduler import notify
from drengine.scheduler.state import StateDB
from drengine.sources.base import Source
from drengine.sources.excludes import ExcludeRules
from drengine.sources.files import FileSource
from drengine.sources.urls import source_from_url
from drengine.storage.options import S3Options
from drengine.storage.url import open_backend

log = logging.getLogger(__name__)

EXIT_PARTIAL = 3


def policy_tag(p: PolicyFile) -> str:
    return f"policy:{p.name}"


def open_policy_repository(p: PolicyFile) -> Repository:
    s3 = S3Options.from_env(os.environ)
    if p.s3 is not None:
        s3 = s3.with_given(
            endpoint_url=p.s3.endpoint,
            region=p.s3.region,
            storage_class=p.s3.storage_class,
            sse=p.s3.sse,
            sse_kms_key_id=p.s3.sse_kms_key_id,
            connect_timeout=p.s3.connect_timeout,
            read_timeout=p.s3.read_timeout,
            retry_budget=p.s3.retry_budget,
        )
    backend = open_backend(p.repository, s3)
    Repository.probe(backend)
    kind, value = p.password_source()
    password = (
        password_from_file(value)
        if kind == "file"
        else password_from_command(value, f"policy {p.name}: password_command")
    )
    return Repository.open(backend, password)


def policy_sources(p: PolicyFile) -> list[Source]:
    paths = [s for s in p.sources if "://" not in s]
    out: list[Source] = []
    if paths:
        out.append(FileSource(paths, ExcludeRules(patterns=tuple(p.exclude))))
    out += [source_from_url(s) for s in p.sources if "://" in s]
    return out


def is_due(schedule: str, timezone: str, last_started: float | None, now: datetime) -> bool:
    """Whether a run of ``schedule`` fell due after ``last_started`` (never run: due)."""
    if last_started is None:
        return True
    since = datetime.fromtimestamp(last_started, UTC)
    after = since + timedelta(microseconds=1)  # an interval counts from the last run
    nxt = parse_schedule(schedule, timezone, since).get_next_fire_time(None, after)
    return nxt is not None and nxt <= now


@dataclass
class RunResult:
    policy: str
    snapshot_id: str | None = None
    partial: bool = False
    bytes_added: int = 0
    forgotten: list[str] = field(default_factory=list)
    pruned: bool = False
    checked: bool = False
    failures: list[str] = field(default_factory=list)  # one sentence per failed step

    @property
    def exit_code(self) -> int:
        if self.failures:
            return 1
        return EXIT_PARTIAL if self.partial else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "snapshot_id": self.snapshot_id,
            "partial": self.partial,
            "bytes_added": self.bytes_added,
            "forgotten": self.forgotten,
            "pruned": self.pruned,
            "checked": self.checked,
            "failures": self.failures,
        }


def run_policy(
    p: PolicyFile,
    state: StateDB,
    *,
    prune: bool | None = None,
    check: bool | None = None,
    cancel: threading.Event | None = None,
    now: datetime | None = None,
) -> RunResult:
    """Backup, retention, then prune and check (``None``: when due). A failed backup stops
    the run (``DrengineError`` after the on-failure hooks ran); later steps' failures are
    collected in ``failures``."""
    at = now or datetime.now(UTC)
    res = RunResult(p.name)
    failing_before = state.failures_since_success(p.name, "backup")
    job = state.start(p.name, "backup")
    try:
        repo = open_policy_repository(p)
        backup = run_backup(
            repo,
            BackupOptions(
                policy_sources(p),
                tags=[policy_tag(p)],
                before=list(p.hooks.before),
                after=list(p.hooks.after),
                cancel=cancel,
            ),
        )
    except DrengineError as e:
        outcome = "cancelled" if isinstance(e, Cancelled) else "failure"
        state.finish(job, outcome, error=str(e))
        if outcome == "failure":
            _on_failure(p, str(e))
            notify.send(p, notify.event(p, "failure", job="backup", error=str(e)))
            _rpo_breach(p, state, at)
        raise
    _record_backup(state, job, res, backup)
    if failing_before:
        notify.send(
            p,
            notify.event(
                p,
                "recovery",
                job="backup",
                snapshot=res.snapshot_id,
                failures_before=failing_before,
            ),
        )
    steps: list[tuple[str, Callable[[], None]]] = [("forget", lambda: _forget(repo, p, res))]
    if p.prune is not None and (prune or (prune is None and _due(state, p, "prune", at))):
        steps.append(("prune", lambda: _prune(repo, res, cancel)))
    if p.check is not None and (check or (check is None and _due(state, p, "check", at))):
        steps.append(("check", lambda: _check(repo, p, res, cancel)))
    for name, step in steps:
        sub = state.start(p.name, name)
        try:
            step()
        except DrengineError as e:
            state.finish(sub, "cancelled" if isinstance(e, Cancelled) else "failure", error=str(e))
            res.failures.append(f"{name}: {e}")
            if isinstance(e, Cancelled):
                break
            continue
        state.finish(sub, "success")
    if res.failures:
        _on_failure(p, "; ".join(res.failures))
        notify.send(p, notify.event(p, "failure", job="run", error="; ".join(res.failures)))
    return res


def rpo_age(state: StateDB, p: PolicyFile, now: datetime) -> float | None:
    """Seconds since the last successful backup of the policy ended (None: never)."""
    end = state.last_success_end(p.name)
    return now.timestamp() - end if end is not None else None


def _rpo_breach(p: PolicyFile, state: StateDB, now: datetime) -> None:
    if p.targets is None:
        return
    age, target = rpo_age(state, p, now), p.targets.rpo_ms / 1000
    if age is None or age > target:
        notify.send(
            p,
            notify.event(p, "rpo_breach", rpo_age_seconds=age, rpo_target_seconds=target),
        )


def _record_backup(state: StateDB, job: int, res: RunResult, backup: BackupResult) -> None:
    snap = backup.snapshot
    res.snapshot_id = snap.id
    res.partial = backup.partial
    res.bytes_added = int(snap.summary.get("bytes_stored", 0))
    state.finish(
        job,
        "partial" if backup.partial else "success",
        snapshot=snap.id,
        bytes_added=res.bytes_added,
        error="; ".join(f"{e['path']}: {e['error']}" for e in backup.errors[:5]) or None,
    )


def _due(state: StateDB, p: PolicyFile, job: str, now: datetime) -> bool:
    sched = p.prune if job == "prune" else p.check
    assert sched is not None
    last = state.last(p.name, job)
    return is_due(sched.schedule, p.timezone, last.started if last else None, now)


def _forget(repo: Repository, p: PolicyFile, res: RunResult) -> None:
    opts = ForgetOptions(policy=p.retention.to_policy(), tags=[policy_tag(p)])
    res.forgotten = run_forget(repo, opts).removed


def _prune(repo: Repository, res: RunResult, cancel: threading.Event | None) -> None:
    run_prune(repo, cancel=cancel)
    res.pruned = True


def _check(repo: Repository, p: PolicyFile, res: RunResult, cancel: threading.Event | None) -> None:
    assert p.check is not None
    subset = p.check.read_data_subset
    fraction = float(subset.rstrip("%")) / 100 if subset else 0.0
    found = run_check(repo, fraction, cancel=cancel)
    res.checked = True
    if found.errors:
        raise DrengineError(f"check found {len(found.errors)} errors: {found.errors[0]}")


def _on_failure(p: PolicyFile, error: str) -> None:
    if not p.hooks.on_failure:
        return
    try:
        extra = {"DRENGINE_POLICY": p.name, "DRENGINE_ERROR": error}
        run_hooks("on_failure", list(p.hooks.on_failure), "failure", extra)
    except DrengineError as e:
        log.error("%s", e)


def run_policy_job(
    p: PolicyFile, state: StateDB, job: str, cancel: threading.Event | None = None
) -> RunResult:
    """One scheduled job of the daemon: ``backup`` (with retention), ``prune`` or ``check``;
    recorded in the job history like ``run``'s steps."""
    if job == "backup":
        return run_policy(p, state, prune=False, check=False, cancel=cancel)
    res = RunResult(p.name)
    jid = state.start(p.name, job)
    try:
        repo = open_policy_repository(p)
        if job == "prune":
            _prune(repo, res, cancel)
        else:
            _check(repo, p, res, cancel)
    except DrengineError as e:
        cancelled = isinstance(e, Cancelled)
        state.finish(jid, "cancelled" if cancelled else "failure", error=str(e))
        res.failures.append(f"{job}: {e}")
        if not cancelled:
            _on_failure(p, str(e))
            notify.send(p, notify.event(p, "failure", job=job, error=str(e)))
        return res
    state.finish(jid, "success")
    return res

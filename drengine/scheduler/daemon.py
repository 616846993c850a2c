"""``drengine daemon --policies DIR``: every policy's backup, prune and check on its
schedules, in one long-lived process.

- APScheduler 3 fires each schedule (coalescing missed runs into one, with a grace time, so
  a host that slept runs a missed job once); the fired job is only queued.
- One worker thread per repository runs its queue in order: one job at a time per
  repository, queued, not dropped. A job fired while the same policy's same job is queued
  or running is coalesced into it.
- A failing job is recorded and reported (notifications) and never stops the daemon; an
  unreachable repository is simply tried again on the next schedule.
- SIGHUP reloads the policies: a file that no longer validates keeps its old version
  running and is reported. SIGTERM or SIGINT sets the cancellation event: the running job
  stops at its next safe point (a backup indexes what it uploaded and writes no snapshot),
  locks are released, and the daemon exits 0.
- A second daemon on the same state database refuses to start.
- Prometheus metrics at ``http://ADDRESS/metrics`` (loopback by default).
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.registry import Collector

from drengine.core.errors import DrengineError, RepositoryLocked, UsageError
from drengine.drills.run import DrillOptions
from drengine.policy.load import PolicyInvalid, load_policy
from drengine.policy.model import PolicyFile
from drengine.policy.schedule import parse_schedule
from drengine.scheduler import notify
from drengine.scheduler.drill_job import run_policy_drill
from drengine.scheduler.metrics import policy_registry
from drengine.scheduler.run import open_policy_repository, policy_tag, rpo_age, run_policy_job
from drengine.scheduler.state import StateDB

log = logging.getLogger(__name__)

STOP_WITHIN = 30.0  # seconds from SIGTERM to exit, as systemd's default stop timeout


@dataclass
class DaemonOptions:
    policies: Path
    state: Path
    metrics_address: str = "127.0.0.1:9842"  # "" for no metrics server
    misfire_grace: float = 3600.0


class DaemonRunning(RepositoryLocked):
    pass


@dataclass
class _Repo:
    """The queue and worker of one repository."""

    jobs: queue.Queue[tuple[str, str] | None] = field(default_factory=queue.Queue)
    pending: set[tuple[str, str]] = field(default_factory=set)
    running: tuple[str, str] | None = None
    thread: threading.Thread | None = None


class Daemon:
    def __init__(self, opts: DaemonOptions) -> None:
        if not opts.policies.is_dir():
            raise UsageError(f"--policies {opts.policies}: no such directory")
        self.opts = opts
        self.cancel = threading.Event()
        self.policies: dict[str, PolicyFile] = {}  # by name
        self.files: dict[Path, str] = {}  # file -> policy name
        self.repos: dict[str, _Repo] = {}
        self.lock = threading.Lock()
        self.snapshot_counts: dict[str, int] = {}
        self.breached: set[str] = set()  # policies whose RPO breach was notified
        self.state = StateDB(opts.state)
        self.scheduler = BackgroundScheduler(
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(opts.misfire_grace),
            }
        )
        self._lockfile = _single(opts.state)

    # ---- policies and schedules ----------------------------------------------------------

    def load(self) -> list[str]:
        """(Re)load every policy file; problems of files that do not validate, whose old
        version (if any) keeps running."""
        problems: list[str] = []
        files = sorted(self.opts.policies.glob("*.yaml")) + sorted(self.opts.policies.glob("*.yml"))
        seen: set[str] = set()
        for f in files:
            try:
                p = load_policy(f).policy
            except PolicyInvalid as e:
                problems += e.problems
                old = self.files.get(f)
                if old:
                    seen.add(old)
                    problems.append(f"{f}: keeps running its previous version")
                continue
            if p.name in seen:
                problems.append(f"{f}: policy name {p.name!r} is used by another file")
                continue
            seen.add(p.name)
            self.files[f] = p.name
            if self.policies.get(p.name) != p:
                self.policies[p.name] = p
                self._schedule(p)
        for name in set(self.policies) - seen:  # files removed
            self._unschedule(name)
            del self.policies[name]
        self.files = {f: n for f, n in self.files.items() if n in self.policies}
        return problems

    def _schedule(self, p: PolicyFile) -> None:
        self._unschedule(p.name)
        jobs = {"backup": p.schedule}
        if p.prune is not None:
            jobs["prune"] = p.prune.schedule
        if p.check is not None:
            jobs["check"] = p.check.schedule
        if p.drill is not None:
            jobs["drill"] = p.drill.schedule
        for kind, sched in jobs.items():
            self.scheduler.add_job(
                self.enqueue,
                trigger=parse_schedule(sched, p.timezone),
                args=(p.name, kind),
                id=f"{p.name}:{kind}",
                replace_existing=True,
            )

    def _unschedule(self, name: str) -> None:
        for kind in ("backup", "prune", "check", "drill"):
            job = self.scheduler.get_job(f"{name}:{kind}")
            if job is not None:
                job.remove()

    # ---- queues and workers --------------------------------------------------------------

    def enqueue(self, name: str, kind: str) -> None:
        with self.lock:
            p = self.policies.get(name)
            if p is None or self.cancel.is_set():
                return
            r = self.repos.setdefault(p.repository, _Repo())
            key = (name, kind)
            if key in r.pending or r.running == key:
                log.info("%s: %s is already queued or running; coalesced", name, kind)
                return
            r.pending.add(key)
            r.jobs.put(key)
            if r.thread is None:
                r.thread = threading.Thread(
                    target=self._work, args=(r,), name=f"repo {p.repository}", daemon=True
                )
                r.thread.start()

    def _work(self, r: _Repo) -> None:
        while True:
            key = r.jobs.get()
            if key is None or self.cancel.is_set():
                return
            with self.lock:
                r.pending.discard(key)
                r.running = key
                p = self.policies.get(key[0])
            try:
                if p is not None:
                    self._run(p, key[1])
            finally:
                with self.lock:
                    r.running = None

    def _run(self, p: PolicyFile, kind: str) -> None:
        started = time.monotonic()
        log.info("%s: %s starts", p.name, kind)
        try:
            if kind == "drill":
                outcome = self._drill(p)
            else:
                res = run_policy_job(p, self.state, kind, self.cancel)
                outcome = "failed: " + "; ".join(res.failures) if res.failures else "done"
        except DrengineError as e:
            outcome = f"failed: {e}"
        except Exception as e:  # a bug must not stop the other policies
            log.exception("%s: %s crashed", p.name, kind)
            outcome = f"crashed: {type(e).__name__}: {e}"
        log.info("%s: %s %s in %.1f s", p.name, kind, outcome, time.monotonic() - started)
        if kind == "backup" and not self.cancel.is_set():
            self._count_snapshots(p)

    def _drill(self, p: PolicyFile) -> str:
        drilled = run_policy_drill(p, self.state, DrillOptions(cancel=self.cancel))
        reasons = "; ".join(drilled.document["reasons"])
        return drilled.verdict + (f": {reasons}" if reasons else "")

    def watch_rpo(self) -> None:
        now = datetime.now(UTC)
        with self.lock:
            policies = list(self.policies.values())
        for p in policies:
            if p.targets is None:
                continue
            age = rpo_age(self.state, p, now)
            target = p.targets.rpo_ms / 1000
            if age is not None and age <= target:
                self.breached.discard(p.name)
                continue
            started = self.state.first_start(p.name)
            if age is None and (started is None or now.timestamp() - started <= target):
                continue  # never backed up yet, but not for longer than the target
            if p.name not in self.breached:
                self.breached.add(p.name)
                ago = "never" if age is None else f"{age:.0f} s ago"
                log.warning("%s: RPO breached: last success %s, target %s", p.name, ago,
                            p.targets.rpo)  # fmt: skip
                ev = notify.event(p, "rpo_breach", rpo_age_seconds=age, rpo_target_seconds=target)
                notify.send(p, ev)

    def _count_snapshots(self, p: PolicyFile) -> None:
        try:
            repo = open_policy_repository(p)
            n = sum(1 for s in repo.snapshots() if policy_tag(p) in s.tags)
        except DrengineError as e:
            log.warning("%s: cannot count snapshots: %s", p.name, e)
            return
        self.snapshot_counts[p.name] = n

    # ---- running -------------------------------------------------------------------------

    def serve(self) -> int:
        for problem in self.load():
            log.error("%s", problem)
        if not self.policies:
            log.error(
                "no valid policy in %s; running anyway (reload with SIGHUP)", self.opts.policies
            )
        if self.opts.metrics_address:
            host, _, port = self.opts.metrics_address.rpartition(":")
            reg = CollectorRegistry()
            reg.register(_Metrics(self))
            start_http_server(int(port), addr=host or "127.0.0.1", registry=reg)
            log.info("metrics at http://%s/metrics", self.opts.metrics_address)
        reload = threading.Event()
        signal.signal(signal.SIGHUP, lambda *_: reload.set())
        signal.signal(signal.SIGTERM, lambda *_: self.cancel.set())
        signal.signal(signal.SIGINT, lambda *_: self.cancel.set())
        # The RPO watchdog: a policy whose backups stopped happening (not only failing) is
        # noticed too, once per breach.
        self.scheduler.add_job(self.watch_rpo, "interval", seconds=60, id="rpo-watchdog")
        self.scheduler.start()
        log.info("daemon started with %d policies", len(self.policies))
        while not self.cancel.is_set():
            if reload.wait(0.5):
                reload.clear()
                log.info("reloading policies")
                for problem in self.load():
                    log.error("%s", problem)
        return self.stop()

    def stop(self) -> int:
        log.info("stopping: the running jobs stop at their next safe point")
        self.cancel.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_WITHIN - 2
        for r in list(self.repos.values()):
            r.jobs.put(None)
        for r in list(self.repos.values()):
            if r.thread is not None:
                r.thread.join(max(0.1, deadline - time.monotonic()))
        running = [r.running for r in self.repos.values() if r.running]
        if running:
            log.error("jobs still running at exit: %s", running)
        self.state.close()
        os.close(self._lockfile)
        log.info("daemon stopped")
        return 0


class _Metrics(Collector):
    """Scraped metrics, built from the job history at each scrape."""

    def __init__(self, d: Daemon) -> None:
        self.d = d

    def collect(self) -> Iterator[Any]:
        d = self.d
        running = CollectorRegistry()
        g = Gauge("drengine_running_jobs", "Jobs running now.", ["policy"], registry=running)
        with d.lock:
            busy = [r.running[0] for r in d.repos.values() if r.running]
            policies = list(d.policies.values())
        for p in policies:
            g.labels(policy=p.name).set(busy.count(p.name))
        yield from running.collect()
        merged: dict[str, Any] = {}
        for p in policies:
            reg = policy_registry(p, d.state, None, snapshot_count=d.snapshot_counts.get(p.name))
            for family in reg.collect():
                if family.name in merged:
                    merged[family.name].samples += family.samples
                else:
                    merged[family.name] = family
        yield from merged.values()


def _single(state: Path) -> int:
    """An exclusive lock next to the state database, held for the daemon's life."""
    path = state.with_name(state.name + ".daemon")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DaemonRunning(
            f"another drengine daemon (pid {other}) is running on {state}; stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd

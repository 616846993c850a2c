"""Job history: every run of a policy's backup, prune, check and drill, in a local SQLite
database: ``state.sqlite`` in ``DRENGINE_STATE_DIR``, else ``$XDG_STATE_HOME/drengine``,
else ``~/.local/state/drengine`` (state, not cache: deleting it loses the history).

``run`` and the daemon record each job's start, end, outcome, snapshot, bytes added and
error; ``status`` reads them (last run, last success, failures since), and ``run`` uses
them to tell whether a prune or check is due. Each write is one short transaction in WAL
mode, so a daemon and a ``run`` from cron share the file safely.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from drengine.core.fsutil import make_dirs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL,
    job TEXT NOT NULL,              -- backup, forget, prune, check, drill
    started REAL NOT NULL,          -- Unix time
    ended REAL,                     -- NULL while running (or if the process died)
    outcome TEXT,                   -- success, partial, failure, cancelled
    snapshot TEXT,
    bytes_added INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_policy ON jobs (policy, job, started);
CREATE TABLE IF NOT EXISTS drills (
    policy TEXT NOT NULL,
    finished REAL NOT NULL,         -- Unix time
    verdict TEXT NOT NULL,          -- passed, failed, target missed
    rto_ms INTEGER,                 -- measured
    forecast_ms INTEGER,            -- predicted full restore of the newest snapshot
    snapshot TEXT,
    report TEXT                     -- the report's object ID in the repository
);
CREATE INDEX IF NOT EXISTS drills_by_policy ON drills (policy, finished);
"""


@dataclass(frozen=True)
class JobRow:
    id: int
    policy: str
    job: str
    started: float
    ended: float | None
    outcome: str | None
    snapshot: str | None
    bytes_added: int | None
    error: str | None


@dataclass(frozen=True)
class DrillRow:
    finished: float
    verdict: str
    rto_ms: int | None
    forecast_ms: int | None
    snapshot: str | None
    report: str | None


def default_state_path() -> Path:
    env = os.environ.get("DRENGINE_STATE_DIR")
    if env:
        return Path(env) / "state.sqlite"
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(xdg) / "drengine" / "state.sqlite"


class StateDB:
    def __init__(self, path: Path) -> None:
        make_dirs(path.parent)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def start(self, policy: str, job: str, now: float | None = None) -> int:
        cur = self._db.execute(
            "INSERT INTO jobs (policy, job, started) VALUES (?, ?, ?)",
            (policy, job, time.time() if now is None else now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish(
        self,
        job_id: int,
        outcome: str,
        *,
        snapshot: str | None = None,
        bytes_added: int | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> None:
        self._db.execute(
            "UPDATE jobs SET ended = ?, outcome = ?, snapshot = ?, bytes_added = ?, error = ? "
            "WHERE id = ?",
            (time.time() if now is None else now, outcome, snapshot, bytes_added, error, job_id),
        )

    def last(self, policy: str, job: str, outcome: str | None = None) -> JobRow | None:
        """The latest finished job of this kind (with this outcome, if given)."""
        sql = "SELECT * FROM jobs WHERE policy = ? AND job = ? AND ended IS NOT NULL"
        args: list[str] = [policy, job]
        if outcome is not None:
            sql += " AND outcome = ?"
            args.append(outcome)
        row = self._db.execute(sql + " ORDER BY started DESC LIMIT 1", args).fetchone()
        return JobRow(*row) if row else None

    def last_success_end(self, policy: str) -> float | None:
        """When the policy's last successful (or partial) backup ended."""
        row = self._db.execute(
            "SELECT MAX(ended) FROM jobs WHERE policy = ? AND job = 'backup' "
            "AND outcome IN ('success', 'partial')",
            (policy,),
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def first_start(self, policy: str) -> float | None:
        """When the policy's first recorded job started (how long it has been watched)."""
        row = self._db.execute(
            "SELECT MIN(started) FROM jobs WHERE policy = ?", (policy,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def history(self, policy: str, limit: int = 100) -> list[JobRow]:
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE policy = ? ORDER BY started DESC LIMIT ?", (policy, limit)
        ).fetchall()
        return [JobRow(*r) for r in rows]

    def failures_since_success(self, policy: str, job: str) -> int:
        ok = self.last(policy, job, "success")
        since = ok.started if ok else 0.0
        row = self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE policy = ? AND job = ? AND outcome = 'failure' "
            "AND started > ?",
            (policy, job, since),
        ).fetchone()
        return int(row[0])

    def jobs_between(self, policy: str, job: str, since: float, until: float) -> list[JobRow]:
        """Finished jobs of this kind that started in [since, until), oldest first."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE policy = ? AND job = ? AND ended IS NOT NULL "
            "AND started >= ? AND started < ? ORDER BY started",
            (policy, job, since, until),
        ).fetchall()
        return [JobRow(*r) for r in rows]

    def backup_times(self, policy: str) -> list[float]:
        """When each successful (or partial) backup of the policy started: the time of the
        data it holds (its end would hide the backup's duration from the RPO)."""
        rows = self._db.execute(
            "SELECT started FROM jobs WHERE policy = ? AND job = 'backup' "
            "AND outcome IN ('success', 'partial') AND ended IS NOT NULL ORDER BY started",
            (policy,),
        ).fetchall()
        return [float(r[0]) for r in rows]

    def record_drill(self, policy: str, row: DrillRow) -> None:
        self._db.execute(
            "INSERT INTO drills (policy, finished, verdict, rto_ms, forecast_ms, snapshot, "
            "report) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (policy, row.finished, row.verdict, row.rto_ms, row.forecast_ms, row.snapshot,
             row.report),
        )  # fmt: skip

    def last_drill(self, policy: str) -> DrillRow | None:
        row = self._db.execute(
            "SELECT finished, verdict, rto_ms, forecast_ms, snapshot, report FROM drills "
            "WHERE policy = ? ORDER BY finished DESC LIMIT 1",
            (policy,),
        ).fetchone()
        return DrillRow(*row) if row else None

    def close(self) -> None:
        self._db.close()

"""``drengine status POLICY...``: each policy's last run, next run, RPO age against its
target, failures, and its last drill, from the job history (no repository is opened)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, out_console, print_json

if TYPE_CHECKING:
    from drengine.scheduler.state import DrillRow


def _policy_files(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for a in args:
        p = Path(a)
        out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]
    return out


@app.command()
def status(
    policies: list[str] = typer.Argument(..., help="Policy files, or directories of them."),
    state_file: str = typer.Option("", "--state", help="Job history database."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """Each policy's last and next backup, RPO age against its target, and failures."""
    from rich.table import Table

    from drengine.policy.load import PolicyInvalid, load_policy
    from drengine.policy.schedule import next_runs, parse_schedule
    from drengine.scheduler.run import rpo_age
    from drengine.scheduler.state import StateDB, default_state_path

    state = StateDB(Path(state_file) if state_file else default_state_path())
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    invalid = 0
    try:
        for f in _policy_files(policies):
            try:
                p = load_policy(f).policy
            except PolicyInvalid as e:
                invalid += 1
                for problem in e.problems:
                    err_console.print(problem, markup=False, soft_wrap=True)
                continue
            last = state.last(p.name, "backup")
            age = rpo_age(state, p, now)
            target = p.targets.rpo_ms / 1000 if p.targets else None
            # An interval counts from the last run; cron from the clock.
            since = datetime.fromtimestamp(last.started, UTC) if last else now
            nxt = next_runs(parse_schedule(p.schedule, p.timezone, since), now, 1)
            rows.append(
                {
                    "policy": p.name,
                    "last_backup": _iso(last.started) if last else None,
                    "last_outcome": last.outcome if last else None,
                    "last_error": last.error if last else None,
                    "next_backup": nxt[0].isoformat() if nxt else None,
                    "rpo_age_seconds": round(age) if age is not None else None,
                    "rpo_target_seconds": target,
                    "rpo_ok": None if target is None else (age is not None and age <= target),
                    "failures_since_success": state.failures_since_success(p.name, "backup"),
                    **_drill(state.last_drill(p.name)),
                }
            )
    finally:
        state.close()
    if json_out:
        print_json(rows)
    else:
        table = Table(box=None)
        cols = ("Policy", "Last backup", "Outcome", "Next", "RPO age / target", "Failures",
                "Last drill")  # fmt: skip
        for col in cols:
            table.add_column(col)
        for r in rows:
            rpo = _span(r["rpo_age_seconds"]) + " / " + _span(r["rpo_target_seconds"])
            if r["rpo_ok"] is False:
                rpo += "  BREACH"
            table.add_row(
                r["policy"], _short(r["last_backup"]) or "never", r["last_outcome"] or "",
                _short(r["next_backup"]), rpo, str(r["failures_since_success"]),
                f"{_short(r['last_drill'])} {r['last_drill_verdict']}" if r["last_drill"]
                else "never",
            )  # fmt: skip
        out_console.print(table)
    if invalid:
        raise typer.Exit(2)


def _drill(row: DrillRow | None) -> dict[str, Any]:
    return {
        "last_drill": _iso(row.finished) if row else None,
        "last_drill_verdict": row.verdict if row else None,
        "last_drill_rto_ms": row.rto_ms if row else None,
        "last_drill_report": row.report if row else None,
    }


def _short(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else ""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _span(seconds: float | None) -> str:
    """``1d2h``, ``3h5m``, ``4m``, ``30s`` (the two largest units)."""
    if seconds is None:
        return "-"
    left = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts[:2])

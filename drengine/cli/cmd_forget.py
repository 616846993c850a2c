"""``drengine forget``: remove snapshots by a retention policy or by ID (``--prune`` then)."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import typer

from drengine.cli.main import app
from drengine.cli.render import out_console, print_json
from drengine.cli.state import open_repository

if TYPE_CHECKING:
    from rich.table import Table

    from drengine.core.model import Snapshot
    from drengine.engine.forget import GroupDecision, Policy


def _count(flag: str, short: str, period: str) -> Any:
    what = (
        "the N newest snapshots"
        if period == "last"
        else f"the newest snapshot of each of the last N {period} that have snapshots"
    )
    return typer.Option("0", flag, short, metavar="N", help=f"Keep {what} (N or 'unlimited').")


def _entry(s: Snapshot, reasons: tuple[str, ...] | None = None) -> dict[str, object]:
    d: dict[str, object] = {
        "id": s.id,
        "short_id": s.id[:8],
        "time": s.time,
        "host": s.host,
        "paths": s.paths,
        "tags": s.tags,
    }
    if reasons is not None:
        d["reasons"] = list(reasons)
    return d


def _decision_json(d: GroupDecision) -> dict[str, object]:
    return {
        "group_key": d.key.to_json(),
        "keep": [_entry(k.snapshot, k.reasons) for k in d.keep],
        "remove": [_entry(s) for s in d.remove],
    }


def _table(rows: list[tuple[Snapshot, tuple[str, ...] | None]]) -> Table:
    from rich.table import Table

    table = Table(box=None)
    with_reasons = any(r is not None for _, r in rows)
    cols = ["ID", "Time", "Host", "Tags", *(["Reasons"] if with_reasons else []), "Paths"]
    for col in cols:
        table.add_column(col)
    for s, reasons in rows:
        cells = [s.id[:8], s.time[:19].replace("T", " "), s.host, ",".join(s.tags)]
        if with_reasons:
            cells.append("\n".join(reasons or ()))
        table.add_row(*cells, "\n".join(s.paths))
    return table


def _print_decisions(decisions: list[GroupDecision], policy: Policy) -> None:
    out_console.print(f"Applying policy: {policy.describe()}", markup=False, soft_wrap=True)
    for d in decisions:
        title = f"snapshots for {d.key}:" if str(d.key) else "snapshots (not grouped):"
        out_console.print("\n" + title, markup=False, soft_wrap=True)
        if d.keep:
            out_console.print(f"keep {len(d.keep)} snapshots:")
            out_console.print(_table([(k.snapshot, k.reasons) for k in d.keep]))
        if d.remove:
            out_console.print(f"remove {len(d.remove)} snapshots:")
            out_console.print(_table([(s, None) for s in d.remove]))


@app.command()
def forget(
    snapshot_ids: list[str] | None = typer.Argument(
        None, metavar="SNAPSHOT", help="Remove exactly these snapshots (ID or prefix)."
    ),
    keep_last: str = _count("--keep-last", "-l", "last"),
    keep_hourly: str = _count("--keep-hourly", "-H", "hours"),
    keep_daily: str = _count("--keep-daily", "-d", "days"),
    keep_weekly: str = _count("--keep-weekly", "-w", "ISO weeks"),
    keep_monthly: str = _count("--keep-monthly", "-m", "months"),
    keep_yearly: str = _count("--keep-yearly", "-y", "years"),
    keep_within: str = typer.Option(
        "",
        "--keep-within",
        metavar="DURATION",
        help="Keep snapshots newer than DURATION (like 2y5m7d3h) before the group's newest.",
    ),
    keep_tag: list[str] = typer.Option(
        [],
        "--keep-tag",
        metavar="TAG[,TAG]",
        help="Keep snapshots with all these tags (repeatable: any list).",
    ),
    host: list[str] = typer.Option(
        [], "--host", metavar="HOST", help="Only consider snapshots of this host (repeatable)."
    ),
    tag: list[str] = typer.Option(
        [],
        "--tag",
        metavar="TAG[,TAG]",
        help="Only consider snapshots with all these tags (repeatable: any list).",
    ),
    group_by: str | None = typer.Option(
        None,
        "--group-by",
        metavar="FIELDS",
        help="Group by host, paths and/or tags, or '' for one group (default host,paths).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would happen."),
    json_out: bool = typer.Option(False, "--json", help="Print the decisions as JSON."),
    prune: bool = typer.Option(False, "--prune", help="Run prune if snapshots were removed."),
) -> None:
    """Remove snapshots by a policy (--keep-*) applied to each group, or by ID."""
    from drengine.engine.forget import (
        Duration,
        Policy,
        parse_count,
        parse_duration,
        parse_group_by,
        parse_taglist,
    )
    from drengine.engine.prune import run_prune
    from drengine.engine.retention import ForgetOptions, run_forget

    policy = Policy(
        last=parse_count(keep_last, "--keep-last"),
        hourly=parse_count(keep_hourly, "--keep-hourly"),
        daily=parse_count(keep_daily, "--keep-daily"),
        weekly=parse_count(keep_weekly, "--keep-weekly"),
        monthly=parse_count(keep_monthly, "--keep-monthly"),
        yearly=parse_count(keep_yearly, "--keep-yearly"),
        within=parse_duration(keep_within) if keep_within else Duration(),
        tags=tuple(parse_taglist(t) for t in keep_tag),
    )
    opts = ForgetOptions(
        policy=policy,
        snapshot_ids=snapshot_ids or [],
        hosts=host,
        tags=tag,
        group_by=None if group_by is None else parse_group_by(group_by),
        dry_run=dry_run,
    )
    opts.check()  # a bad combination costs no password

    repo = open_repository()
    result = run_forget(repo, opts)
    decisions, doomed = result.decisions, result.doomed
    if not json_out and not snapshot_ids:
        _print_decisions(decisions, policy)
    if json_out:
        print_json([_decision_json(d) for d in decisions])
    else:
        verb = "would remove" if dry_run else "removed"
        if snapshot_ids:
            for oid in doomed:
                out_console.print(f"{verb} snapshot {oid[:8]}")
        else:
            out_console.print(f"\n{verb} {len(doomed)} snapshots")

    if prune and doomed:
        if dry_run:
            # A prune dry run now would still count the doomed snapshots' data as in use.
            print("dry run: prune was not run", file=sys.stderr)
            return
        from drengine.cli.cmd_prune import report_prune  # here: cmd_prune imports the app

        pruned = run_prune(repo, dry_run=False)
        # --json promises one JSON document on stdout; the prune report goes to stderr then.
        with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
            report_prune(pruned)

"""``drengine drill run POLICY``: restore into a sandbox, verify, measure, sign a report."""

from __future__ import annotations

from pathlib import Path

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, print_json, printable

drill_app = typer.Typer(help="Restore drills: prove that backups restore.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")


@drill_app.command("run")
def run(
    policy: str = typer.Argument(..., help="A policy file (YAML; see docs/policies.md)."),
    snapshot: str = typer.Option(
        "", "--snapshot", help="ID, 'latest' or 'random' (default: the policy's drill.snapshot)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for --snapshot random."),
    out: str = typer.Option("", "--out", help="Also write the signed report to this file."),
    state_file: str = typer.Option(
        "", "--state", help="Job history database (default: $DRENGINE_STATE_DIR/state.sqlite)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the signed report (JSON)."),
) -> None:
    """Restore a snapshot of the policy into a sandbox, prove it usable, measure RTO and
    RPO, and store a signed report (exit 0 passed, 20 failed, 21 a target missed)."""
    from drengine.cli.cmd_policy import policy_or_exit
    from drengine.drills.run import DrillOptions
    from drengine.scheduler.drill_job import run_policy_drill, write_whole
    from drengine.scheduler.state import StateDB, default_state_path

    if out and (Path(out).is_dir() or not Path(out).parent.is_dir()):
        from drengine.core.errors import UsageError

        raise UsageError(f"--out {out}: give a file in an existing directory")
    p = policy_or_exit(policy)
    state = StateDB(Path(state_file) if state_file else default_state_path())
    try:
        res = run_policy_drill(p, state, DrillOptions(snapshot=snapshot, seed=seed))
    finally:
        state.close()
    if out:
        import json

        write_whole(Path(out), json.dumps(res.envelope, indent=2, sort_keys=True) + "\n")
    if json_out:
        print_json(res.envelope)
    else:
        show(res.document, res.report_id)
    if res.exit_code:
        raise typer.Exit(res.exit_code)


def show(doc: dict[str, object], report_id: str) -> None:
    """A drill's outcome for people: verdict, checks, measured figures."""
    from drengine.reports.drill_report import seconds

    snap = doc["snapshot"]
    rto = doc["rto"]
    rpo = doc["rpo"]
    assert isinstance(snap, dict) and isinstance(rto, dict) and isinstance(rpo, dict)
    typer.echo(
        f"drill of {doc['policy']}, snapshot {str(snap['id'])[:8]} ({snap['selected']}): "
        f"{str(doc['verdict']).upper()}"
    )
    checks = doc["checks"]
    assert isinstance(checks, list)
    for c in checks:
        mark = "ok  " if c["passed"] else "FAIL"
        line = f"  {mark} {c['kind']} {c['check']} ({c['target']}): {c['detail']}"
        typer.echo(printable(line))
    target = f" (target {seconds(rto['target_ms'])})" if rto["target_ms"] is not None else ""
    typer.echo(f"  RTO measured: {seconds(rto['measured_ms'])}{target}")
    verified = rpo["verified"]
    unverified = rpo["unverified"]
    gap = rpo["largest_gap"]
    if isinstance(verified, dict):
        typer.echo(f"  RPO verified: newest proven snapshot {seconds(verified['age_ms'])} old")
    if isinstance(unverified, dict):
        typer.echo(f"  RPO unverified: newest snapshot {seconds(unverified['age_ms'])} old")
    if isinstance(gap, dict):
        typer.echo(f"  largest gap between backups: {seconds(gap['ms'])}")
    fc = doc.get("forecast")
    if isinstance(fc, dict) and fc.get("predicted_ms") is not None:
        typer.echo(f"  forecast full restore of the newest snapshot: {seconds(fc['predicted_ms'])}")
    reasons = doc["reasons"]
    assert isinstance(reasons, list)
    for r in reasons:
        err_console.print(printable(str(r)), markup=False, soft_wrap=True)
    typer.echo(f"  report {report_id[:16]} stored in the repository, signed")

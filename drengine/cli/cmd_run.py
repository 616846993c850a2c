"""``drengine run POLICY``: the policy's backup now, its retention, and prune and check when
due (for cron and systemd timers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json

if TYPE_CHECKING:
    from drengine.policy.model import PolicyFile
    from drengine.scheduler.state import StateDB


@app.command()
def run(
    policy: str = typer.Argument(..., help="A policy file (YAML; see docs/policies.md)."),
    prune: bool | None = typer.Option(
        None, "--prune/--no-prune", help="Prune now / never (default: when its schedule is due)."
    ),
    check: bool | None = typer.Option(
        None, "--check/--no-check", help="Check now / never (default: when its schedule is due)."
    ),
    state_file: str = typer.Option(
        "", "--state", help="Job history database (default: $DRENGINE_STATE_DIR/state.sqlite)."
    ),
    textfile_dir: str = typer.Option(
        "", "--textfile-dir", help="Write Prometheus metrics there for node-exporter."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Run a policy: backup, then retention (forget), then prune and check when due."""
    # Imported here: pydantic, PyYAML, APScheduler and prometheus_client load for this
    # command only.
    from drengine.cli.cmd_policy import policy_or_exit
    from drengine.scheduler.run import run_policy
    from drengine.scheduler.state import StateDB, default_state_path

    p = policy_or_exit(policy)
    state = StateDB(Path(state_file) if state_file else default_state_path())
    try:
        try:
            res = run_policy(p, state, prune=prune, check=check)
        finally:
            if textfile_dir:
                _write_metrics(p, state, textfile_dir)
    finally:
        state.close()
    if json_out:
        print_json(res.to_json())
    else:
        typer.echo(
            f"{p.name}: snapshot {res.snapshot_id and res.snapshot_id[:8]} saved "
            f"({human_bytes(res.bytes_added)} added), {len(res.forgotten)} forgotten"
            + (", pruned" if res.pruned else "")
            + (", checked" if res.checked else "")
        )
    for failure in res.failures:
        err_console.print(f"error: {failure}", markup=False)
    if res.exit_code:
        raise typer.Exit(res.exit_code)


def _write_metrics(p: PolicyFile, state: StateDB, directory: str) -> None:
    from drengine.scheduler.metrics import policy_registry, write_textfile
    from drengine.scheduler.run import open_policy_repository, policy_tag

    try:
        repo = open_policy_repository(p)
        snaps = [s for s in repo.snapshots() if policy_tag(p) in s.tags]
    except Exception as e:
        err_console.print(f"warning: metrics without the repository's snapshots: {e}", markup=False)
        snaps = []
    write_textfile(Path(directory), p, policy_registry(p, state, snaps))

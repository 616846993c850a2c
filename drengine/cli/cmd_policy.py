"""``drengine policy check FILE...`` and ``policy show FILE``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, print_json

if TYPE_CHECKING:
    from drengine.policy.load import Loaded
    from drengine.policy.model import PolicyFile

# pydantic, PyYAML and APScheduler are imported by the commands that use them: every other
# command starts without them.

policy_app = typer.Typer(help="Check and show policy files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def check(files: list[str] = typer.Argument(..., help="Policy files (YAML).")) -> None:
    """Validate policy files: every problem with its file, line and key (exit 2 if any)."""
    bad = 0
    for f in files:
        if _load_or_report(f) is None:
            bad += 1
            continue
        typer.echo(f"{f}: ok")
    if bad:
        err_console.print(f"{bad} of {len(files)} policy files are not valid", markup=False)
        raise typer.Exit(2)


def _load_or_report(f: str) -> Loaded | None:
    from drengine.policy.load import PolicyInvalid, load_policy

    try:
        return load_policy(f)
    except PolicyInvalid as e:
        for problem in e.problems:
            err_console.print(problem, markup=False, soft_wrap=True)
        return None


def policy_or_exit(f: str) -> PolicyFile:
    """The policy in file ``f``; its problems printed and exit 2 if it is not valid."""
    loaded = _load_or_report(f)
    if loaded is None:
        raise typer.Exit(2)
    return loaded.policy


def schedules(p: PolicyFile, now: datetime, count: int = 5) -> dict[str, list[str]]:
    """The next ``count`` run times of each of the policy's schedules, in its time zone."""
    from drengine.policy.schedule import next_runs, parse_schedule

    jobs = {"backup": p.schedule}
    for name, job in (("prune", p.prune), ("check", p.check), ("drill", p.drill)):
        if job is not None:
            jobs[name] = job.schedule
    return {
        name: [t.isoformat() for t in next_runs(parse_schedule(s, p.timezone, now), now, count)]
        for name, s in jobs.items()
    }


@policy_app.command("show")
def show(
    file: str = typer.Argument(..., help="A policy file (YAML)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The effective settings of a policy (defaults filled in) and its next five run times."""
    import yaml

    loaded = _load_or_report(file)
    if loaded is None:
        raise typer.Exit(2)
    p = loaded.policy
    doc: dict[str, Any] = p.model_dump(mode="json")
    runs = schedules(p, datetime.now(UTC))
    if json_out:
        print_json({"policy": doc, "next_runs": runs})
        return
    typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).rstrip())
    typer.echo(f"next runs ({p.timezone}):")
    for name, times in runs.items():
        typer.echo(f"  {name}:")
        for t in times:
            typer.echo(f"    {t}")

"""``drengine report key|verify|list|show``: the signed reports of drills."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from drengine.cli.main import app
from drengine.cli.render import print_json
from drengine.cli.state import STATE, open_repository, repo_url, s3_options

report_app = typer.Typer(
    help="Reports: the compliance report of a period, and the signed drill reports."
)
app.add_typer(report_app, name="report")


@report_app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    policy: list[str] = typer.Option([], "--policy", help="A policy file (repeatable)."),
    policies: str = typer.Option("", "--policies", help="A directory of policy files."),
    since: str = typer.Option("", "--since", help="Start of the period (default: the quarter's)."),
    until: str = typer.Option("", "--until", help="End of the period, excluded (default: now)."),
    fmt: str = typer.Option("text", "--format", help="text, json (signed) or html."),
    out: str = typer.Option("", "--out", help="Write the report to this file."),
    state_file: str = typer.Option("", "--state", help="Job history database."),
) -> None:
    """Per policy over a period: backups, RPO and RTO against targets, drills, forecast,
    encryption and immutability, and the evidence. ``report verify|key|list|show`` are the
    signed drill reports' commands."""
    if ctx.invoked_subcommand is not None:
        return
    from drengine.cli.report_period import build_report

    text = build_report(policy, policies, since, until, fmt, state_file)
    if out:
        from drengine.scheduler.drill_job import write_whole

        write_whole(Path(out), text)
        typer.echo(f"wrote the {fmt} report to {out}")
        return
    typer.echo(text, nl=False)


@report_app.command("key")
def key(
    out: str = typer.Option("", "--out", help="Write the public key document to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print the public key document."),
) -> None:
    """The repository's report-signing public key and its fingerprint, for a reviewer to
    compare out of band (stored in the repository if it is not yet)."""
    import json

    from drengine.crypto.signing import fingerprint
    from drengine.repository.reports import publish_signer
    from drengine.scheduler.drill_job import write_whole

    repo = open_repository()
    k, doc = publish_signer(repo)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if out:
        write_whole(Path(out), text)
    if json_out:
        print_json(doc)
        return
    typer.echo(f"report signing key of repository {repo.id[:8]}")
    typer.echo(f"  fingerprint: {fingerprint(k.public)}")
    typer.echo(f"  public key:  {doc['public_key']}")


@report_app.command("verify")
def verify(
    file: str = typer.Argument(..., help="A signed report (JSON)."),
    key_given: str = typer.Option(
        "", "--key", help="The signer's public key: a key file, base64 key or fingerprint."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print what was verified as JSON."),
) -> None:
    """Check a report's signature, that the trusted key made it (--key, offline; or the
    repository's key, with --repo), and with a repository that its snapshots exist.
    Exit 0 when it verifies, 22 when it does not."""
    from drengine.crypto.signing import parse_public_key
    from drengine.reports.verify import parse, verify_report

    try:
        data = Path(file).read_bytes()
    except OSError as e:
        raise typer.BadParameter(f"cannot read {file}: {e.strerror}") from None
    envelope = parse(data, file)
    trusted = None
    if key_given:
        text = key_given
        if os.path.isfile(key_given):
            text = Path(key_given).read_text()
        trusted = parse_public_key(text)
    have_repo = bool(STATE.repo_url or os.environ.get("DRENGINE_REPOSITORY"))
    repo_key, ids = None, None
    if have_repo:
        repo_key, ids = _repository_side(trusted is None)
    res = verify_report(envelope, file, trusted, repo_key, ids)
    if json_out:
        print_json(res)
        return
    typer.echo(f"{file}: signature valid, signed by {res['fingerprint']}")
    what = "drill report" if res["type"] == "drengine drill report" else "compliance report"
    typer.echo(
        f"  {what}" + (f" of policy {res['policy']}" if res["policy"] else "")
        + (f", verdict {res['verdict']}" if res["verdict"] else "")
        + f", {res['finished']}"
    )  # fmt: skip
    if res["snapshots_checked"]:
        typer.echo(f"  the {len(res['snapshots'])} snapshots it names are in the repository")
    else:
        typer.echo("  snapshots not checked (no repository given)")


def _repository_side(need_key: bool) -> tuple[bytes | None, set[str]]:
    """The repository's report key (opening it, with its password) when no key was given,
    and the snapshot IDs it holds (a listing: storage access is enough)."""
    from drengine.repository import layout
    from drengine.repository.listing import Strays, list_objects
    from drengine.repository.repo import Repository
    from drengine.repository.reports import signing_key
    from drengine.storage import open_backend

    if need_key:
        repo = open_repository()
        return signing_key(repo).public, set(repo.snapshot_ids())
    backend = open_backend(repo_url(), s3_options())
    Repository.probe(backend)
    return None, {o.oid for o in list_objects(backend, layout.SNAPSHOTS, Strays())}


@report_app.command("list")
def list_reports(
    policy: str = typer.Option("", "--policy", help="Only drills of this policy (its name)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """The drill reports stored in the repository, oldest first."""
    from drengine.reports.drill_report import DRILL_TYPE
    from drengine.repository.reports import reports

    repo = open_repository()
    rows: list[dict[str, Any]] = []
    for oid, env in reports(repo, DRILL_TYPE):
        doc = env["document"]
        if policy and doc.get("policy") != policy:
            continue
        rows.append(
            {
                "id": oid,
                "short_id": oid[:8],
                "policy": doc.get("policy"),
                "finished": doc.get("finished"),
                "snapshot": (doc.get("snapshot") or {}).get("id"),
                "verdict": doc.get("verdict"),
                "rto_ms": (doc.get("rto") or {}).get("measured_ms"),
            }
        )
    if json_out:
        print_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['short_id']}  {str(r['finished'])[:19]}  {r['policy']}  "
            f"snapshot {str(r['snapshot'])[:8]}  {r['verdict']}"
        )


@report_app.command("show")
def show(
    report_id: str = typer.Argument(..., help="A report ID or unique prefix."),
    out: str = typer.Option("", "--out", help="Write the signed report to this file."),
) -> None:
    """Print a stored report (the signed JSON a reviewer verifies)."""
    import json

    from drengine.core.errors import UsageError
    from drengine.repository.reports import load_report, report_ids
    from drengine.scheduler.drill_job import write_whole

    repo = open_repository()
    matches = [r for r in report_ids(repo) if r.startswith(report_id)]
    if len(matches) != 1:
        what = "no report" if not matches else f"{len(matches)} reports"
        raise UsageError(f"{what} with ID {report_id} in {repo.location}")
    env = load_report(repo, matches[0])
    if out:
        write_whole(Path(out), json.dumps(env, indent=2, sort_keys=True) + "\n")
        return
    print_json(env)

"""``drengine repair index|snapshots``: rebuild the index, rewrite damaged snapshots."""

from __future__ import annotations

import dataclasses

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, print_json
from drengine.cli.state import open_repository

repair_app = typer.Typer(help="Repair a damaged repository.", no_args_is_help=True)
app.add_typer(repair_app, name="repair")


def _say(message: str) -> None:
    err_console.print(message, markup=False)


@repair_app.command("index")
def repair_index(
    read_all_packs: bool = typer.Option(
        False,
        "--read-all-packs",
        help="Read every pack whole and index only blobs that verify (slow, thorough).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Rebuild the index from the packs' own blob lists (exclusive lock)."""
    from drengine.engine.repair_index import run_repair_index

    res = run_repair_index(open_repository(), read_all=read_all_packs, say=_say)
    if json_out:
        print_json(dataclasses.asdict(res))
        return
    for note in res.notes:
        _say(note)
    typer.echo(
        f"indexed {res.blobs} blobs in {res.packs} packs; {len(res.packs_unreadable)} packs "
        f"unreadable, {res.packs_lost} indexed packs gone from storage, {res.packs_moved} "
        f"moved into place; replaced {res.index_objects_replaced} index objects"
    )
    if res.packs_lost or res.packs_unreadable:
        _say(
            "snapshots may reference data that is gone: run drengine check, then "
            "drengine repair snapshots"
        )


@repair_app.command("snapshots")
def repair_snapshots(
    snapshot: list[str] = typer.Argument(None, help="Only these snapshots (default: all)."),
    forget: bool = typer.Option(
        False, "--forget", help="Remove the original of each repaired snapshot."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would happen."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Rewrite snapshots that reference lost data, keeping what is left (exclusive lock)."""
    from drengine.engine.repair_snapshots import run_repair_snapshots

    repo = open_repository()
    ids = [repo.find_snapshot(s).id for s in snapshot] if snapshot else None
    res = run_repair_snapshots(repo, ids, forget=forget, dry_run=dry_run, say=_say)
    if json_out:
        print_json(dataclasses.asdict(res))
        return
    for entry in res.damaged_entries:
        _say(f"damaged: {entry}")
    verb = "would repair" if dry_run else "repaired"
    for old, new in res.repaired:
        typer.echo(f"{verb} snapshot {old[:8]}" + (f" as {new[:8]}" if new else ""))
    for oid in res.unrepairable:
        _say(f"snapshot {oid[:8]} cannot be read or has lost its root: nothing to save")
    if res.forgotten:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {len(res.forgotten)} snapshots")
    typer.echo(f"{res.checked} snapshots checked, {len(res.repaired)} {verb}")

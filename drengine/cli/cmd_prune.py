"""``drengine prune``: remove unused data."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json
from drengine.cli.state import open_repository
from drengine.core.errors import UsageError

if TYPE_CHECKING:
    from drengine.engine.prune import PruneResult


def report_prune(res: PruneResult, json_out: bool = False) -> None:
    if json_out:
        print_json(dataclasses.asdict(res))
        return
    verb = "would free" if res.dry_run else "freed"
    typer.echo(
        f"{res.packs_total} packs: {res.packs_kept} kept, {res.packs_deleted} unused and "
        f"{res.packs_unindexed} unindexed deleted, {res.packs_repacked} repacked into "
        f"{res.packs_written}; {res.blobs_removed} blobs removed; {verb} "
        f"{human_bytes(res.bytes_freed)}"
    )
    for note in res.notes:
        typer.echo(note)
    if res.kept_locked:
        typer.echo(_locked_summary(res))


def _locked_summary(res: PruneResult) -> str:
    packs = [o for o in res.kept_locked if o.kind == "pack"]
    others = len(res.kept_locked) - len(packs)
    size = human_bytes(sum(o.size for o in packs))
    verb = "would keep" if res.dry_run else "kept"
    return (
        f"{verb} {len(packs)} packs ({size}) and {others} index objects that S3 Object Lock "
        f"retains until {max(o.until for o in res.kept_locked)} at the latest; a prune after "
        "that removes them"
    )


@app.command()
def prune(
    max_unused: float = typer.Option(
        5.0, "--max-unused", help="Repack packs with more than this % unused."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only show what would happen."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Remove data no snapshot references (takes an exclusive lock)."""
    from drengine.engine.prune import run_prune

    if not 0 <= max_unused <= 100:
        raise UsageError("--max-unused takes a percentage from 0 to 100")
    repo = open_repository()
    res = run_prune(
        repo,
        max_unused=max_unused / 100,
        dry_run=dry_run,
        say=lambda m: err_console.print(m, markup=False),
    )
    report_prune(res, json_out)

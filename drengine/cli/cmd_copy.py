"""``drengine copy --to URL [SNAPSHOT...]``: copy snapshots to another repository."""

from __future__ import annotations

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json
from drengine.cli.state import open_repository, read_password, s3_options


@app.command()
def copy(
    to: str = typer.Option(..., "--to", help="Destination repository URL."),
    snapshot: list[str] = typer.Argument(None, help="Snapshots to copy (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Copy snapshots into another repository (its password: DRENGINE_TO_PASSWORD*)."""
    from drengine.engine.copy import run_copy
    from drengine.repository.repo import Repository
    from drengine.storage import open_backend

    src = open_repository()
    backend = open_backend(to, s3_options())
    Repository.probe(backend)
    dst = Repository.open(backend, read_password(prefix="DRENGINE_TO_PASSWORD"))
    dst.lock_wait = src.lock_wait
    snaps = [src.find_snapshot(s) for s in snapshot] if snapshot else src.snapshots()
    res = run_copy(src, dst, snaps, say=lambda m: err_console.print(m, markup=False))
    if json_out:
        print_json(
            {
                "copied": [{"source": a, "id": b} for a, b in res.copied],
                "skipped": res.skipped,
                "blobs_new": res.blobs_new,
                "bytes_new": res.bytes_new,
            }
        )
        return
    typer.echo(
        f"copied {len(res.copied)} snapshots to {backend.location} "
        f"({len(res.skipped)} were there already), {res.blobs_new} new blobs, "
        f"{human_bytes(res.bytes_new)} new"
    )

"""``drengine dump SNAPSHOT PATH``: write one file to stdout."""

from __future__ import annotations

import sys

import typer

from drengine.cli.main import app
from drengine.cli.state import open_repository
from drengine.core.errors import OutputClosed
from drengine.engine.dump import run_dump


@app.command()
def dump(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    path: str = typer.Argument(..., help="Absolute path of a file inside the snapshot."),
) -> None:
    """Write a file from a snapshot to standard output."""
    repo = open_repository()
    snap = repo.find_snapshot(snapshot)
    repo.load_index()
    try:
        run_dump(repo, snap, path, sys.stdout.buffer)
    except BrokenPipeError:
        # The reader went away (``dump ... | head``). Not an OSError from here on: click
        # turns EPIPE into a silent exit 1; the CLI ends quietly with 141.
        raise OutputClosed("standard output was closed") from None

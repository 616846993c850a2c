"""``drengine dump SNAPSHOT PATH``: write one file to stdout."""

from __future__ import annotations

import sys

import typer

from drengine.cli.main import app
from drengine.cli.state import open_repository
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
    run_dump(repo, snap, path, sys.stdout.buffer)

"""``drengine restore SNAPSHOT --target DIR``: restore files."""

from __future__ import annotations

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, show_progress
from drengine.cli.state import open_repository
from drengine.core.errors import RestoreError, UsageError
from drengine.engine.progress import Progress
from drengine.engine.restore import run_restore


@app.command()
def restore(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    target: str = typer.Option("", "--target", "-t", help="Directory to restore into."),
    include: list[str] = typer.Option(
        [], "--include", "-i", help="Restore only this absolute path (repeatable)."
    ),
) -> None:
    """Restore a snapshot into a directory, verifying every file."""
    if not target:
        raise UsageError("restore needs --target DIR")
    repo = open_repository()
    snap = repo.find_snapshot(snapshot)
    repo.load_index()
    progress = Progress()
    with show_progress(progress):
        result = run_restore(repo, snap, target, include, progress)
    for err in result.errors:
        err_console.print(f"error: {err['path']}: {err['error']}", markup=False)
    typer.echo(
        f"restored snapshot {snap.id[:8]} to {target}: {result.files} files, "
        f"{result.dirs} dirs, {human_bytes(result.bytes)}"
    )
    if result.errors:
        raise RestoreError(
            f"{len(result.errors)} entries of snapshot {snap.id[:8]} could not be restored "
            f"(listed above); nothing unverified was written"
        )

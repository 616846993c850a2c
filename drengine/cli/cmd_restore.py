"""``drengine restore SNAPSHOT --target DIR``: restore files."""

from __future__ import annotations

import os

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json, show_progress
from drengine.cli.state import open_repository
from drengine.core.errors import RestoreError, UsageError
from drengine.engine.progress import Progress
from drengine.engine.restore import RestoreResult, run_restore


def _problems(items: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    from drengine.cli.cmd_ls import text_fields  # not at the top: main imports both commands

    return [{**text_fields("path", os.fsencode(i["path"])), key: i[key]} for i in items]


def _summary(snap_id: str, target: str, result: RestoreResult) -> dict[str, object]:
    return {
        "snapshot_id": snap_id,
        "short_id": snap_id[:8],
        "target": target,
        "files": result.files,
        "dirs": result.dirs,
        "bytes": result.bytes,
        "errors": _problems(result.errors, "error"),
        "warnings": _problems(result.warnings, "warning"),
    }


@app.command()
def restore(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    target: str = typer.Option("", "--target", "-t", help="Directory to restore into."),
    include: list[str] = typer.Option(
        [], "--include", "-i", help="Restore only this absolute path (repeatable)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Restore a snapshot into a directory, verifying every file."""
    if not target:
        raise UsageError("restore needs --target DIR")
    repo = open_repository()
    snap = repo.find_snapshot(snapshot)
    repo.load_index()
    progress = Progress()
    with show_progress(progress, enabled=not json_out):
        result = run_restore(repo, snap, target, include, progress)
    if json_out:
        print_json(_summary(snap.id, target, result))
    else:
        for err in result.errors:
            err_console.print(f"error: {err['path']}: {err['error']}", markup=False)
        for warn in result.warnings:
            err_console.print(f"warning: {warn['path']}: {warn['warning']}", markup=False)
        incomplete = f", {len(result.warnings)} incomplete" if result.warnings else ""
        typer.echo(
            f"restored snapshot {snap.id[:8]} to {target}: {result.files} files, "
            f"{result.dirs} dirs, {human_bytes(result.bytes)}{incomplete}"
        )
    if result.errors:
        n = len(result.errors)
        where = "in the JSON summary" if json_out else "listed above"
        raise RestoreError(
            f"{n} {'entry' if n == 1 else 'entries'} of snapshot {snap.id[:8]} could not be "
            f"restored ({where}); every file this restore put under its final name was "
            "verified first"
        )

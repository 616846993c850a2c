"""``drengine backup PATH...``: back up files and directories."""

from __future__ import annotations

import os
import threading

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json, show_progress
from drengine.cli.state import open_repository
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.progress import Progress

EXIT_PARTIAL = 3


def _scan_totals(paths: list[str], p: Progress, stop: threading.Event) -> None:
    """Count what lies ahead so progress can show an ETA (excludes are not applied)."""
    for top in paths:
        for root, dirs, files in os.walk(top):
            for name in files:
                if stop.is_set():
                    return
                try:
                    p.bytes_total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
                p.files_total += 1
            p.files_total += len(dirs)
    p.total_known = True


@app.command()
def backup(
    paths: list[str] = typer.Argument(..., help="Files and directories to back up."),
    exclude: list[str] = typer.Option(
        [], "--exclude", "-e", help="Skip entries matching GLOB (a basename, or a path with /)."
    ),
    one_file_system: bool = typer.Option(
        False, "--one-file-system", "-x", help="Do not cross file-system boundaries."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Tag the snapshot (repeatable)."),
    host: str = typer.Option("", "--host", help="Host name to record (default: this host)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Back up PATHs into a new snapshot."""
    repo = open_repository()
    opts = BackupOptions(paths, exclude, one_file_system, tag, host or None)
    progress = Progress()
    stop = threading.Event()
    if err_console.is_terminal and not json_out:
        threading.Thread(target=_scan_totals, args=(paths, progress, stop), daemon=True).start()
    try:
        with show_progress(progress, enabled=not json_out):
            result = run_backup(repo, opts, progress)
    finally:
        stop.set()
    snap, s = result.snapshot, result.snapshot.summary
    for err in result.errors:
        err_console.print(f"warning: {err['path']}: {err['error']}", markup=False)
    if json_out:
        print_json({"snapshot_id": snap.id, "short_id": snap.id[:8], **s})
    else:
        typer.echo(
            f"snapshot {snap.id[:8]} saved: {s['files_total']} files "
            f"({s['files_new']} new, {s['files_changed']} changed, "
            f"{s['files_unmodified']} unmodified), {s['dirs_total']} dirs, "
            f"{human_bytes(s['bytes_total'])} read, {human_bytes(s['bytes_new'])} new, "
            f"{human_bytes(s['bytes_stored'])} stored, in {s['duration_seconds']:.1f} s"
        )
    if result.partial:
        err_console.print(
            f"{len(result.errors)} inputs could not be read; they are listed in the snapshot",
            markup=False,
        )
        raise typer.Exit(EXIT_PARTIAL)

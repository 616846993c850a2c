"""``drengine restore SNAPSHOT --target DIR``: restore files."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json, show_progress
from drengine.cli.state import open_repository
from drengine.core.errors import RestoreError, UsageError
from drengine.core.phases import Phases
from drengine.core.progress import Progress

if TYPE_CHECKING:
    from drengine.core.model import Snapshot
    from drengine.engine.restore import RestoreResult
    from drengine.repository.repo import Repository
    from drengine.sources.base import LoadOptions


def _problems(items: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    from drengine.cli.cmd_ls import text_fields  # not at the top: main imports both commands

    return [{**text_fields("path", os.fsencode(i["path"])), key: i[key]} for i in items]


def _summary(snap_id: str, target: str, result: RestoreResult, phases: Phases) -> dict[str, object]:
    return {
        "snapshot_id": snap_id,
        "short_id": snap_id[:8],
        "target": target,
        "files": result.files,
        "dirs": result.dirs,
        "bytes": result.bytes,
        "errors": _problems(result.errors, "error"),
        "warnings": _problems(result.warnings, "warning"),
        "leftovers_removed": result.leftovers_removed,
        "phases": phases.to_json(),
        "duration_seconds": round(phases.elapsed(), 3),
    }


def _open(snapshot: str, phases: Phases) -> tuple[Repository, Snapshot]:
    with phases.span("open"):
        repo = open_repository()
        return repo, repo.find_snapshot(snapshot)


def _restore_to(snapshot: str, url: str, opts: LoadOptions, json_out: bool) -> None:
    from drengine.engine.restore_to import run_restore_to
    from drengine.sources.urls import redact, split_url

    split_url(url)  # a malformed URL costs no password
    repo, snap = _open(snapshot, opts.phases)
    loaded = run_restore_to(repo, snap, url, opts)
    if json_out:
        print_json({"snapshot_id": snap.id, "to": redact(url), "loaded": loaded,
                    "phases": opts.phases.to_json(),
                    "duration_seconds": round(opts.phases.elapsed(), 3)})  # fmt: skip
        return
    for d in loaded:
        if "device" in d:
            typer.echo(
                f"wrote the image of snapshot {snap.id[:8]} onto {d['device']}: "
                f"{human_bytes(d['bytes'])}, read back and its SHA-256 matches"
            )
            continue
        typer.echo(
            f"restored database {d['database']} from snapshot {snap.id[:8]}: {d['tables']} "
            f"tables, {d['rows']} rows, row counts match the snapshot"
            + ("" if d["schema_matches"] else "; warning: the schema fingerprint differs")
        )


@app.command()
def restore(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    target: str = typer.Option("", "--target", "-t", help="Directory to restore into."),
    include: list[str] = typer.Option(
        [], "--include", "-i", help="Restore only this absolute path (repeatable)."
    ),
    to: str = typer.Option(
        "",
        "--to",
        help="Load a dump or image: postgresql://[USER@]HOST[:PORT]/DB, sqlite:///NEW.db, "
        "block:///DEVICE.",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=64, help="pg_restore jobs (--to)."),
    clean: bool = typer.Option(
        False, "--clean", help="Drop the dump's objects in the target database first (--to)."
    ),
    no_owner: bool = typer.Option(
        False, "--no-owner", help="Do not restore owners and privileges (--to postgresql)."
    ),
    confirm_device: str = typer.Option(
        "",
        "--confirm-device",
        help="The device of --to block:///DEVICE again: consent to overwrite it.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Restore a snapshot into a directory (verifying every file), or a dump into a server."""
    from drengine.engine.restore import run_restore
    from drengine.engine.restore_to import finish_restored
    from drengine.sources.base import LoadOptions

    phases = Phases()  # the same phases a drill measures (docs/drills.md)
    if to:
        opts = LoadOptions(jobs, clean, no_owner, confirm_device, phases=phases)
        _restore_to(snapshot, to, opts, json_out)
        return
    if not target:
        raise UsageError("restore needs --target DIR or --to URL")
    repo, snap = _open(snapshot, phases)
    with phases.span("index"):
        repo.load_index()
    progress = Progress()
    with show_progress(progress, enabled=not json_out):
        result = run_restore(repo, snap, target, include, progress, phases)
    rebuilt = finish_restored(snap, target, phases)
    if json_out:
        print_json({**_summary(snap.id, target, result, phases), "rebuilt": rebuilt})
    else:
        for err in result.errors:
            err_console.print(f"error: {err['path']}: {err['error']}", markup=False)
        for warn in result.warnings:
            err_console.print(f"warning: {warn['path']}: {warn['warning']}", markup=False)
        if result.leftovers_removed:
            err_console.print(
                f"removed {result.leftovers_removed} temporary files that an earlier, killed "
                "restore had left in the target",
                markup=False,
            )
        incomplete = f", {len(result.warnings)} incomplete" if result.warnings else ""
        typer.echo(
            f"restored snapshot {snap.id[:8]} to {target}: {result.files} files, "
            f"{result.dirs} dirs, {human_bytes(result.bytes)}{incomplete}"
        )
        for d in rebuilt:
            typer.echo(
                f"rebuilt {d['database']} from its dump: {d['tables']} tables, {d['rows']} "
                "rows, integrity_check ok, row counts match the snapshot"
            )
    if result.errors:
        n = len(result.errors)
        where = "in the JSON summary" if json_out else "listed above"
        raise RestoreError(
            f"{n} {'entry' if n == 1 else 'entries'} of snapshot {snap.id[:8]} could not be "
            f"restored ({where}); every file this restore put under its final name was "
            "verified first"
        )

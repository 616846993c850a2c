"""``drengine dump SNAPSHOT [PATH]``: write one file or stream to stdout."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.state import open_repository
from drengine.core.errors import OutputClosed, UsageError

if TYPE_CHECKING:
    from drengine.core.model import Snapshot


def _only_stream(snap: Snapshot) -> str:
    streams = snap.streams()
    if len(streams) == 1:
        return str(streams[0]["path"])
    if not streams:
        raise UsageError(
            f"snapshot {snap.id[:8]} holds no stream; name the file: dump SNAPSHOT PATH"
        )
    raise UsageError(
        f"snapshot {snap.id[:8]} holds {len(streams)} streams; name one: "
        + ", ".join(str(s["path"]) for s in streams)
    )


@app.command()
def dump(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    path: str = typer.Argument(
        "",
        help="Absolute path of a file inside the snapshot (optional when the snapshot holds "
        "one stream: a dump, an image, a command's output).",
    ),
) -> None:
    """Write a file or stream from a snapshot to standard output."""
    from drengine.engine.dump import run_dump

    repo = open_repository()
    snap = repo.find_snapshot(snapshot)
    if not path:
        path = _only_stream(snap)
    repo.load_index()
    try:
        run_dump(repo, snap, path, sys.stdout.buffer)
    except BrokenPipeError:
        # The reader went away (``dump ... | head``). Not an OSError from here on: click
        # turns EPIPE into a silent exit 1; the CLI ends quietly with 141.
        raise OutputClosed("standard output was closed") from None

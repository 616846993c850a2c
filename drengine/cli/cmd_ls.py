"""``drengine ls SNAPSHOT [PATH]``: list the entries of a snapshot."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import typer

from drengine.cli.main import app
from drengine.cli.render import print_json
from drengine.cli.state import open_repository
from drengine.core.model import Node
from drengine.engine.tree_paths import list_entries


def rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def entry_json(path: bytes, n: Node) -> dict[str, object]:
    d: dict[str, object] = {
        "path": os.fsdecode(path),
        "type": n.type,
        "size": n.size,
        "mode": oct(n.mode),
        "mtime": rfc3339_ns(n.mtime_ns),
        "uid": n.uid,
        "gid": n.gid,
    }
    if n.target is not None:
        d["target"] = os.fsdecode(n.target)
    return d


@app.command()
def ls(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    path: str = typer.Argument("/", help="Absolute path inside the snapshot."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List files and directories in a snapshot."""
    repo = open_repository()
    snap = repo.find_snapshot(snapshot)
    repo.load_index()
    entries = list_entries(repo, snap, path)
    if json_out:
        print_json([entry_json(p, n) for p, n in entries])
        return
    out = sys.stdout.buffer
    for p, n in entries:
        suffix = b" -> " + n.target if n.target is not None else b""
        out.write(p + (b"/" if n.type == "dir" else b"") + suffix + b"\n")
    out.flush()

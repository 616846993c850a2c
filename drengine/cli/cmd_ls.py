"""``drengine ls SNAPSHOT [PATH]``: list the entries of a snapshot."""

from __future__ import annotations

import base64
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


def text_fields(key: str, raw: bytes) -> dict[str, str]:
    """``key`` as text for people and strict JSON parsers (undecodable bytes become U+FFFD),
    plus ``key_raw`` (base64 of the exact bytes) when the bytes are not UTF-8."""
    try:
        return {key: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            key: raw.decode("utf-8", errors="replace"),
            f"{key}_raw": base64.b64encode(raw).decode("ascii"),
        }


def entry_json(path: bytes, n: Node) -> dict[str, object]:
    d: dict[str, object] = {
        **text_fields("path", path),
        "type": n.type,
        "size": n.size,
        "mode": oct(n.mode),
        "mtime": rfc3339_ns(n.mtime_ns),
        "uid": n.uid,
        "gid": n.gid,
    }
    if n.target is not None:
        d.update(text_fields("target", n.target))
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

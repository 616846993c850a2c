"""``drengine ls SNAPSHOT [PATH]``: list the entries of a snapshot."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import typer

from drengine.cli.cmd_snapshots import describe_part
from drengine.cli.main import app
from drengine.cli.render import err_console, print_json, write_stdout
from drengine.cli.state import open_repository
from drengine.core.errors import IntegrityError

if TYPE_CHECKING:
    from drengine.core.model import Node

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    try:
        base = (_EPOCH + timedelta(seconds=secs)).strftime("%Y-%m-%dT%H:%M:%S")
    except OverflowError:  # beyond year 1..9999: no calendar date to show
        return f"{ns}ns"
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
    if n.invalid:
        d["invalid"] = n.invalid
    if n.damaged:
        d["damaged"] = n.damaged
    return d


def _warn(path: bytes, n: Node) -> None:
    shown = path.decode("utf-8", errors="replace")
    if n.invalid:
        err_console.print(f"warning: {shown}: invalid in the snapshot: {n.invalid}", markup=False)
    if n.damaged:
        err_console.print(f"warning: {shown}: incomplete: {n.damaged}", markup=False)


@app.command()
def ls(
    snapshot: str = typer.Argument(..., help="Snapshot ID, unique prefix, or 'latest'."),
    path: str = typer.Argument("/", help="Absolute path inside the snapshot."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List files and directories in a snapshot."""
    from drengine.engine.tree_paths import list_entries

    repo = open_repository()
    snap = repo.find_snapshot(snapshot)
    repo.load_index()
    failed: list[str] = []

    def unreadable(where: bytes, why: str) -> None:
        shown = where.decode("utf-8", errors="replace")
        failed.append(shown)
        err_console.print(f"error: {shown}: its contents cannot be read: {why}", markup=False)

    entries = list_entries(repo, snap, path, unreadable)
    streams = {os.fsencode(str(st["path"])): st for st in snap.streams()}
    if json_out:
        out = []
        for p, n in entries:
            e = entry_json(p, n)
            if p in streams:  # a dump, image or command output: what the record says of it
                st = streams[p]
                e["stream"] = {"kind": st["kind"], "sha256": st.get("sha256")}
            out.append(e)
        print_json(out)
    else:
        # As restic's header line, on stderr so that the listing stays one path a line.
        kinds = "; ".join(describe_part(part) for part in snap.parts)
        err_console.print(f"snapshot {snap.id[:8]} of {kinds} at {snap.time}:", markup=False)
        lines: list[bytes] = []
        for p, n in entries:
            if n.invalid or n.damaged:
                write_stdout(b"".join(lines))  # keep the warning next to its line
                lines = []
                _warn(p, n)
            suffix = b" -> " + n.target if n.target is not None else b""
            lines.append(p + (b"/" if n.type == "dir" else b"") + suffix + b"\n")
            if len(lines) >= 4096:
                write_stdout(b"".join(lines))
                lines = []
        write_stdout(b"".join(lines))
    if failed:
        raise IntegrityError(
            f"the contents of {len(failed)} directories of snapshot {snap.id[:8]} cannot be "
            "read (listed above; drengine check)"
        )

"""``drengine snapshots``: list snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.render import human_bytes, print_json, text_table, write_stdout
from drengine.cli.state import open_repository

if TYPE_CHECKING:
    from drengine.core.model import Snapshot


def snapshot_json(s: Snapshot) -> dict[str, object]:
    return {
        "id": s.id,
        "short_id": s.id[:8],
        "time": s.time,
        "host": s.host,
        "username": s.username,
        "paths": s.paths,
        "tags": s.tags,
        "tree": s.tree.hex(),
        "source": s.kind,
        "sources": s.parts,
        "program_version": s.program_version,
        "parent": s.parent,
        "summary": s.summary,
    }


def describe_part(part: dict[str, object]) -> str:
    """One line for people: the kind and what it holds (``postgresql app (15.4)``)."""
    kind = str(part.get("kind", ""))
    what = part.get("databases") or part.get("database") or part.get("device")
    what = what or part.get("program") or part.get("file")
    if isinstance(what, list):  # databases: records with a name each
        what = ",".join(str(x.get("name", "")) if isinstance(x, dict) else str(x) for x in what)
    version = str(part.get("server_version", "")).split(" ")[0]
    return " ".join(str(x) for x in (kind, what or "", f"({version})" if version else "") if x)


@app.command()
def snapshots(
    host: list[str] = typer.Option([], "--host", help="Only snapshots of this host (repeatable)."),
    tag: list[str] = typer.Option(
        [], "--tag", help="Only snapshots with all tags of TAG[,TAG] (repeatable: any list)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    """List the snapshots in the repository, oldest first."""
    from drengine.engine.forget import matches_filter, parse_taglist

    repo = open_repository()
    # The same filter as forget's, so a preview with snapshots shows what forget considers.
    taglists = [parse_taglist(t) for t in tag]
    snaps = [s for s in repo.snapshots() if matches_filter(s, host, taglists)]
    if json_out:
        print_json([snapshot_json(s) for s in snaps])
        return
    headers = ["ID", "Time", "Host", "Tags", "Source", "Paths", "Size", "Errors"]
    rows = [
        [
            s.id[:8],
            s.time[:19].replace("T", " "),
            s.host,
            ",".join(s.tags),
            "\n".join(describe_part(p) for p in s.parts),
            "\n".join(s.paths),
            human_bytes(int(s.summary.get("bytes_total", 0) or 0)),
            str(len(s.summary.get("errors", []))),
        ]
        for s in snaps
    ]
    write_stdout((text_table(headers, rows) + f"{len(snaps)} snapshots\n").encode())

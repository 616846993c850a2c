"""``drengine check``: verify the repository."""

from __future__ import annotations

import re

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console
from drengine.cli.state import open_repository
from drengine.core.errors import DrengineError, UsageError


class CheckFailed(DrengineError):
    pass


def parse_subset(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip())
    if m and 0 < float(m.group(1)) <= 100:
        return float(m.group(1)) / 100
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m and 0 < int(m.group(1)) <= int(m.group(2)):
        return int(m.group(1)) / int(m.group(2))
    raise UsageError(f"--read-data-subset takes N% (0 < N <= 100) or n/m, not {text!r}")


@app.command()
def check(
    read_data: bool = typer.Option(False, "--read-data", help="Read and verify all data."),
    read_data_subset: str = typer.Option(
        "", "--read-data-subset", help="Read and verify a random N% (or n/m) of the packs."
    ),
) -> None:
    """Check the repository's structure and, optionally, its data."""
    from drengine.engine.check import run_check

    if read_data and read_data_subset:
        raise UsageError("give --read-data or --read-data-subset, not both")
    fraction = 1.0 if read_data else parse_subset(read_data_subset) if read_data_subset else 0.0
    repo = open_repository()
    res = run_check(repo, fraction, say=lambda m: err_console.print(m, markup=False))
    for w in res.warnings:
        err_console.print(f"warning: {w}", markup=False)
    for e in res.errors:
        err_console.print(f"error: {e}", markup=False)
    summary = f"{res.snapshots} snapshots, {res.packs_checked} packs"
    if fraction:
        summary += f", {res.packs_read} packs and {res.blobs_read} blobs read"
    if res.errors:
        raise CheckFailed(f"check found {len(res.errors)} errors ({summary})")
    typer.echo(f"no errors found ({summary})")

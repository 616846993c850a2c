"""``drengine unlock``: list locks and remove stale ones."""

from __future__ import annotations

import time

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console
from drengine.cli.state import open_repository


@app.command()
def unlock(
    remove_all: bool = typer.Option(
        False, "--remove-all", help="Remove every lock, live ones too (only when you are sure)."
    ),
) -> None:
    """Remove stale locks (not refreshed for 30 minutes, or of a dead process on this host)."""
    from drengine.repository.locks import Locks

    repo = open_repository()
    locks = Locks(repo)
    removed = 0
    for lock in locks.list():
        stale = locks.stale(lock)
        if stale or remove_all:
            locks.delete(lock.id)
            removed += 1
            err_console.print(f"removed {'stale ' if stale else ''}{lock.describe()}", markup=False)
        else:
            err_console.print(f"kept live {lock.describe()}", markup=False)
    for oid in locks.unreadable:  # not anyone's lock: a live holder would rewrite it
        locks.delete(oid)
        removed += 1
        err_console.print(f"removed unreadable lock {oid[:8]}", markup=False)
    # A lock written halfway by a killed process (its temporary file); a live writer's lives
    # for milliseconds.
    halves = repo.remove_leftovers({"locks": 60.0}, time.time())
    extra = f" and {len(halves)} half-written ones" if halves else ""
    typer.echo(f"removed {removed} locks{extra}")

"""``drengine key list|add|remove|passwd``: manage the passwords that open a repository."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.render import out_console, print_json
from drengine.cli.state import kdf_params, open_repository, read_new_password
from drengine.core.errors import ObjectNotFound, UsageError
from drengine.crypto.kdf_defaults import DEFAULT_KDF_ITERATIONS, DEFAULT_KDF_MEMORY_KIB

if TYPE_CHECKING:
    from drengine.repository.repo import Repository


key_app = typer.Typer(help="Manage key files (passwords).", no_args_is_help=True)
app.add_typer(key_app, name="key")

_MEMORY = typer.Option(DEFAULT_KDF_MEMORY_KIB // 1024, help="Argon2id memory, MiB.")
_ITERATIONS = typer.Option(DEFAULT_KDF_ITERATIONS, help="Argon2id iterations.")


def _resolve(repo: Repository, prefix: str) -> str:
    matches = [oid for oid, _ in repo.key_files() if oid.startswith(prefix)]
    if len(matches) != 1:
        raise UsageError(f"{prefix!r} names {len(matches)} key files, not exactly one")
    return matches[0]


@key_app.command("list")
def key_list(json_out: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
    """List key files; the one in use is marked."""
    repo = open_repository()
    rows = [
        {"id": oid, "current": repo.key_name.endswith(oid), **meta}
        for oid, meta in repo.key_files()
    ]
    if json_out:
        print_json(rows)
        return
    for r in rows:
        mark = "*" if r["current"] else " "
        out_console.print(f"{mark} {str(r['id'])[:8]}  created {r.get('created', '?')}")


@key_app.command("add")
def key_add(kdf_memory_mib: int = _MEMORY, kdf_iterations: int = _ITERATIONS) -> None:
    """Add a key file for a new password (read from DRENGINE_NEW_PASSWORD* or a prompt)."""
    repo = open_repository()
    oid = repo.add_key(read_new_password(), kdf_params(kdf_memory_mib, kdf_iterations))
    typer.echo(f"added key {oid[:8]}")


@key_app.command("remove")
def key_remove(key_id: str = typer.Argument(..., help="Key file ID or unique prefix.")) -> None:
    """Remove a key file (never the one used to open the repository)."""
    repo = open_repository()
    oid = _resolve(repo, key_id)
    try:
        repo.remove_key(oid)
    except ObjectNotFound:
        raise UsageError(f"no key file {key_id}") from None
    typer.echo(f"removed key {oid[:8]}")


@key_app.command("passwd")
def key_passwd(kdf_memory_mib: int = _MEMORY, kdf_iterations: int = _ITERATIONS) -> None:
    """Change the password: add a key file for the new one, then remove the old one."""
    repo = open_repository()
    new, old = repo.replace_key(read_new_password(), kdf_params(kdf_memory_mib, kdf_iterations))
    typer.echo(f"password changed: key {old[:8]} replaced by {new[:8]}")

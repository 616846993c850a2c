"""``drengine init``: create a repository."""

from __future__ import annotations

import typer

from drengine.cli.main import app
from drengine.cli.state import read_password, repo_url
from drengine.core.errors import UsageError
from drengine.crypto.keys import DEFAULT_KDF_ITERATIONS, DEFAULT_KDF_MEMORY_KIB, KdfParams
from drengine.repository.config import Settings
from drengine.repository.repo import Repository
from drengine.storage import open_backend


@app.command()
def init(
    compression_level: int = typer.Option(3, help="zstd level for new blobs (0 stores raw)."),
    pack_size: int = typer.Option(16, help="Target pack size in MiB."),
    kdf_memory_mib: int = typer.Option(
        DEFAULT_KDF_MEMORY_KIB // 1024, help="Argon2id memory for the key file, MiB."
    ),
    kdf_iterations: int = typer.Option(DEFAULT_KDF_ITERATIONS, help="Argon2id iterations."),
) -> None:
    """Create a new repository."""
    if not 0 <= compression_level <= 22:
        raise UsageError("--compression-level must be between 0 and 22")
    if not 1 <= pack_size <= 512:
        raise UsageError("--pack-size must be between 1 and 512 MiB")
    if kdf_memory_mib < 1 or kdf_iterations < 1:
        raise UsageError("--kdf-memory-mib and --kdf-iterations must be at least 1")
    backend = open_backend(repo_url())
    repo = Repository.init(
        backend,
        read_password(confirm=True),
        Settings(compression_level=compression_level, pack_size=pack_size * 1024 * 1024),
        KdfParams(memory_kib=kdf_memory_mib * 1024, iterations=kdf_iterations),
    )
    typer.echo(f"created repository {repo.id[:8]} at {backend.location}")

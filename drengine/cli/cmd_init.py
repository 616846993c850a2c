"""``drengine init``: create a repository."""

from __future__ import annotations

import typer

from drengine.cli.main import app
from drengine.cli.state import kdf_params, read_password, repo_url, s3_options
from drengine.core.errors import UsageError
from drengine.crypto.kdf_defaults import DEFAULT_KDF_ITERATIONS, DEFAULT_KDF_MEMORY_KIB


@app.command()
def init(
    compression_level: int = typer.Option(3, help="zstd level for new blobs (0 stores raw)."),
    pack_size: int = typer.Option(16, help="Target pack size in MiB."),
    kdf_memory_mib: int = typer.Option(
        DEFAULT_KDF_MEMORY_KIB // 1024, help="Argon2id memory for the key file, MiB."
    ),
    kdf_iterations: int = typer.Option(DEFAULT_KDF_ITERATIONS, help="Argon2id iterations."),
    object_lock_mode: str = typer.Option(
        "",
        help="S3 Object Lock: write every object (but locks) with GOVERNANCE or COMPLIANCE "
        "retention; s3:// only, on a bucket with Object Lock enabled.",
    ),
    object_lock_days: int = typer.Option(
        0, help="Days each object stays retained after it is written (with --object-lock-mode)."
    ),
) -> None:
    """Create a new repository."""
    from drengine.repository.config import Settings
    from drengine.repository.repo import Repository
    from drengine.storage import open_backend

    if not 0 <= compression_level <= 22:
        raise UsageError("--compression-level must be between 0 and 22")
    if not 1 <= pack_size <= 512:
        raise UsageError("--pack-size must be between 1 and 512 MiB")
    kdf = kdf_params(kdf_memory_mib, kdf_iterations)
    lock_mode = _object_lock_mode(object_lock_mode, object_lock_days)
    url = repo_url()
    if lock_mode and not url.startswith("s3://"):
        raise UsageError(f"--object-lock-mode needs an s3:// repository, not {url}")
    backend = open_backend(url, s3_options())
    repo = Repository.init(
        backend,
        read_password(confirm=True),
        Settings(
            compression_level=compression_level,
            pack_size=pack_size * 1024 * 1024,
            object_lock_mode=lock_mode,
            object_lock_days=object_lock_days,
        ),
        kdf,
    )
    typer.echo(f"created repository {repo.id[:8]} at {backend.location}")
    if lock_mode:
        typer.echo(
            f"every object but locks is written under S3 Object Lock ({lock_mode}) for "
            f"{object_lock_days} days"
        )


def _object_lock_mode(mode: str, days: int) -> str:
    """The checked mode ("" for none); the two options only make sense together."""
    from drengine.repository.config import MAX_OBJECT_LOCK_DAYS, OBJECT_LOCK_MODES

    mode = mode.strip().upper()
    if mode and mode not in OBJECT_LOCK_MODES:
        raise UsageError("--object-lock-mode takes GOVERNANCE or COMPLIANCE")
    if bool(mode) != bool(days):
        raise UsageError("--object-lock-mode and --object-lock-days go together")
    if mode and not 1 <= days <= MAX_OBJECT_LOCK_DAYS:
        raise UsageError(f"--object-lock-days must be between 1 and {MAX_OBJECT_LOCK_DAYS}")
    return mode

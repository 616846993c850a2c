"""Global options and the shared steps of every command: password, opening the repository."""

from __future__ import annotations

import getpass
import math
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drengine.core.errors import UsageError
from drengine.core.passwords import password_from_command, password_from_file

# The repository, storage and crypto layers (numpy, boto3, cryptography) load when a
# command opens a repository, not for --help or --version.
if TYPE_CHECKING:
    from drengine.crypto.keys import KdfParams
    from drengine.repository.repo import Repository
    from drengine.storage.options import S3Options


@dataclass
class State:
    repo_url: str = ""
    debug: bool = False
    retry_lock: float = 0.0
    s3_flags: dict[str, str] = field(default_factory=dict)  # --s3-* as given


STATE = State()


def read_password(
    confirm: bool = False, prefix: str = "DRENGINE_PASSWORD", prompt: str = "repository password"
) -> bytes:
    """From ``PREFIX``, ``PREFIX_FILE``, ``PREFIX_COMMAND``, or a prompt on a terminal."""
    env = os.environ
    if env.get(prefix):
        return env[prefix].encode()
    if f"{prefix}_FILE" in env:
        return password_from_file(env[f"{prefix}_FILE"])
    if f"{prefix}_COMMAND" in env:
        return password_from_command(env[f"{prefix}_COMMAND"], f"{prefix}_COMMAND")
    if sys.stdin.isatty():
        pw = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"repeat {prompt}: ") != pw:
            raise UsageError("the passwords do not match")
        if not pw:
            raise UsageError("an empty password is not a password")
        return pw.encode()
    raise UsageError(
        f"no password: set {prefix}, {prefix}_FILE or {prefix}_COMMAND, or run on a terminal"
    )


def read_new_password() -> bytes:
    """A new password for ``key add``/``passwd``: DRENGINE_NEW_PASSWORD* or a prompt."""
    return read_password(confirm=True, prefix="DRENGINE_NEW_PASSWORD", prompt="new password")


def s3_options() -> S3Options:
    """The DRENGINE_S3_* environment with the --s3-* flags over it."""
    from drengine.storage.options import S3Options

    return S3Options.from_env(os.environ).with_given(**STATE.s3_flags)


def repo_url() -> str:
    url = STATE.repo_url or os.environ.get("DRENGINE_REPOSITORY", "")
    if not url:
        raise UsageError("no repository given: use --repo or set DRENGINE_REPOSITORY")
    return url


def open_repository() -> Repository:
    from drengine.repository.repo import Repository
    from drengine.storage import open_backend

    backend = open_backend(repo_url(), s3_options())
    Repository.probe(backend)
    repo = Repository.open(backend, read_password())
    repo.lock_wait = STATE.retry_lock
    return repo


def kdf_params(memory_mib: int, iterations: int) -> KdfParams:
    """Argon2id parameters from --kdf-memory-mib/--kdf-iterations, checked as readers do."""
    from drengine.crypto.keys import KdfParams, check_kdf

    params = KdfParams(memory_kib=memory_mib * 1024, iterations=iterations)
    try:
        check_kdf(params)
    except ValueError as e:
        raise UsageError(
            f"--kdf-memory-mib {memory_mib} --kdf-iterations {iterations}: {e}"
        ) from None
    return params


MAX_WAIT_SECONDS = 7 * 24 * 3600.0


def parse_duration_seconds(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``2h`` as seconds: finite, from 0 to a week."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise UsageError(f"{text!r} is not a duration (like 90s, 5m, 2h)") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_SECONDS:
        raise UsageError(f"{text!r} is not a duration from 0 to 7 days (like 90s, 5m, 2h)")
    return value

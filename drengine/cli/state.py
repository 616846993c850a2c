"""Global options and the shared steps of every command: password, opening the repository."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from dataclasses import dataclass

from drengine.core.errors import UsageError
from drengine.repository.repo import Repository
from drengine.storage import open_backend


@dataclass
class State:
    repo_url: str = ""
    debug: bool = False
    retry_lock: float = 0.0


STATE = State()


def _password_from_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read the password file {path}: {e.strerror}") from None
    if not lines or not lines[0]:
        raise UsageError(f"the password file {path} is empty")
    return lines[0]


def read_password(
    confirm: bool = False, prefix: str = "DRENGINE_PASSWORD", prompt: str = "repository password"
) -> bytes:
    """From ``PREFIX``, ``PREFIX_FILE``, ``PREFIX_COMMAND``, or a prompt on a terminal."""
    env = os.environ
    if env.get(prefix):
        return env[prefix].encode()
    if f"{prefix}_FILE" in env:
        return _password_from_file(env[f"{prefix}_FILE"])
    if f"{prefix}_COMMAND" in env:
        cmd = env[f"{prefix}_COMMAND"]
        try:
            out = subprocess.run(cmd, shell=True, capture_output=True, check=True, timeout=60)
        except subprocess.CalledProcessError as e:
            raise UsageError(f"the password command failed with exit code {e.returncode}") from None
        except subprocess.TimeoutExpired:
            raise UsageError("the password command did not finish within 60 seconds") from None
        lines = out.stdout.splitlines()
        if not lines or not lines[0]:
            raise UsageError("the password command printed no password")
        return lines[0]
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


def repo_url() -> str:
    url = STATE.repo_url or os.environ.get("DRENGINE_REPOSITORY", "")
    if not url:
        raise UsageError("no repository given: use --repo or set DRENGINE_REPOSITORY")
    return url


def open_repository() -> Repository:
    backend = open_backend(repo_url())
    Repository.probe(backend)
    repo = Repository.open(backend, read_password())
    repo.lock_wait = STATE.retry_lock
    return repo


def parse_duration_seconds(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``2h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip()
    try:
        if t and t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t)
    except ValueError:
        raise UsageError(f"{text!r} is not a duration (like 90s, 5m, 2h)") from None

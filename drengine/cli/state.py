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


def read_password(confirm: bool = False) -> bytes:
    """From DRENGINE_PASSWORD, _FILE, _COMMAND, or a prompt on a terminal."""
    env = os.environ
    if "DRENGINE_PASSWORD" in env:
        return env["DRENGINE_PASSWORD"].encode()
    if "DRENGINE_PASSWORD_FILE" in env:
        return _password_from_file(env["DRENGINE_PASSWORD_FILE"])
    if "DRENGINE_PASSWORD_COMMAND" in env:
        cmd = env["DRENGINE_PASSWORD_COMMAND"]
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
        pw = getpass.getpass("repository password: ")
        if confirm and getpass.getpass("repeat password: ") != pw:
            raise UsageError("the passwords do not match")
        return pw.encode()
    raise UsageError(
        "no password: set DRENGINE_PASSWORD, DRENGINE_PASSWORD_FILE or "
        "DRENGINE_PASSWORD_COMMAND, or run on a terminal"
    )


def read_new_password() -> bytes:
    """A new password for ``key add``/``passwd``: DRENGINE_NEW_PASSWORD(_FILE) or a prompt."""
    env = os.environ
    if env.get("DRENGINE_NEW_PASSWORD"):
        return env["DRENGINE_NEW_PASSWORD"].encode()
    if "DRENGINE_NEW_PASSWORD_FILE" in env:
        return _password_from_file(env["DRENGINE_NEW_PASSWORD_FILE"])
    if sys.stdin.isatty():
        pw = getpass.getpass("new password: ")
        if not pw or getpass.getpass("repeat new password: ") != pw:
            raise UsageError("the new passwords are empty or do not match")
        return pw.encode()
    raise UsageError("no new password: set DRENGINE_NEW_PASSWORD or run on a terminal")


def repo_url() -> str:
    url = STATE.repo_url or os.environ.get("DRENGINE_REPOSITORY", "")
    if not url:
        raise UsageError("no repository given: use --repo or set DRENGINE_REPOSITORY")
    return url


def open_repository() -> Repository:
    backend = open_backend(repo_url())
    Repository.probe(backend)
    return Repository.open(backend, read_password())

"""Repository passwords from a file or a command, for the CLI and for policies.

A command runs in a session of its own, so on a timeout its whole group (a shell's
children too) is killed; its stderr is shown when it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from drengine.core.errors import UsageError


def password_from_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read the password file {path}: {e.strerror}") from None
    if not lines or not lines[0]:
        raise UsageError(f"the password file {path} is empty")
    return lines[0]


PASSWORD_COMMAND_TIMEOUT = 60.0


def password_from_command(cmd: str, var: str) -> bytes:
    """The first line a command prints. Its stderr is shown when it fails; it runs in a
    session of its own, so on a timeout the whole group (a shell's children too) is killed."""
    try:
        proc = subprocess.Popen(
            cmd,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        raise UsageError(f"cannot run {var}: {e.strerror or e}") from None
    try:
        out, err = proc.communicate(timeout=PASSWORD_COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise UsageError(
            f"{var} did not finish within {PASSWORD_COMMAND_TIMEOUT:.0f} seconds (killed)"
        ) from None
    if proc.returncode != 0:
        said = err.decode("utf-8", "replace").strip().splitlines()
        detail = f": {said[-1]}" if said else ""
        raise UsageError(f"{var} failed with exit code {proc.returncode}{detail}")
    lines = out.splitlines()
    if not lines or not lines[0]:
        raise UsageError(f"{var} printed no password")
    return lines[0]

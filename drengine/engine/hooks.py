"""Consistency hooks around a backup (``--before`` / ``--after``): fsfreeze, LVM or ZFS
snapshots, stopping a service.

Each hook is a shell command (``sh -c``), run in order. A failing before-hook stops the
backup: nothing is read and no snapshot is written. After-hooks run whenever the before
phase began, also when the backup failed or a before-hook did (a snapshot created by the
first before-hook must be removed when the second one fails); their failure is reported
and makes the backup fail, since a frozen file system or a left-over LVM snapshot needs an
admin. ``DRENGINE_HOOK`` (``before``/``after``) and, for after-hooks, ``DRENGINE_RESULT``
(``success``/``failure``) tell a shared script where it is.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping

from drengine.core.errors import HookFailed

log = logging.getLogger(__name__)

_TIMEOUT = 3600.0  # an hour: LVM on a busy host is slow, but a hook never hangs forever


def run_hooks(
    phase: str, commands: list[str], result: str = "", extra: Mapping[str, str] | None = None
) -> None:
    """Run every command of ``phase``; ``HookFailed`` naming the first that failed (all
    after-hooks run even when one fails). ``extra``: more variables for the hooks."""
    failures: list[str] = []
    for cmd in commands:
        env = {**os.environ, **(extra or {}), "DRENGINE_HOOK": phase}
        if result:
            env["DRENGINE_RESULT"] = result
        log.info("running %s-hook: %s", phase, cmd)
        msg = _run(cmd, env)
        if msg is None:
            continue
        failures.append(f"{phase}-hook {cmd!r} {msg}")
        if phase == "before":
            break
    if failures:
        raise HookFailed("; ".join(failures))


def _run(cmd: str, env: dict[str, str]) -> str | None:
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        return f"could not run: {e.strerror or e}"
    try:
        out, _ = proc.communicate(timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"did not finish within {_TIMEOUT:.0f} s and was killed"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    text = out.decode("utf-8", "replace").strip()
    for line in text.splitlines():
        log.info("%s", line)
    if proc.returncode == 0:
        return None
    tail = " / ".join(text.splitlines()[-3:])
    return f"exited with status {proc.returncode}" + (f": {tail}" if tail else "")

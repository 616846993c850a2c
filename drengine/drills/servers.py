"""What the throwaway servers of drills share: the unprivileged user they run as, their
directories, process groups that die with the drill, and stopping a server for sure.

``pg_sandbox`` and ``my_sandbox`` build on these; nothing here knows a database.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from drengine.core.errors import DrillFailed


def server_user(run_as: str | None, default: str) -> pwd.struct_passwd | None:
    """Who a sandbox server runs as: None (ourselves) unless we are root; then ``run_as``,
    else ``nobody``. Not ``postgres``/``mysql`` by default: on a database host they own the
    production data, and a restored dump's code runs as the sandbox server's user."""
    if os.geteuid() != 0:
        return None
    for name in [run_as] if run_as else ["nobody", default]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DrillFailed(f"the drill's sandbox user {run_as or 'nobody'!r} does not exist here")


def as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` (no sudo/runuser needed)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def own_dir(d: Path, user: pwd.struct_passwd | None) -> None:
    """Make ``d`` (0700) for ``user``, whom its parent then lets pass (search bits)."""
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    if user is None:
        return
    os.chown(d, user.pw_uid, user.pw_gid)
    if d.parent.stat().st_uid == os.geteuid():
        os.chmod(d.parent, d.parent.stat().st_mode & 0o7777 | 0o111)
    if not _can(user, "-w", d):
        closed = next((p for p in reversed(d.parents) if not _can(user, "-x", p)), d)
        raise DrillFailed(
            f"the sandbox server's user {user.pw_name} cannot reach {d}: {closed} is closed "
            f"to it (it must let {user.pw_name} pass, e.g. chmod o+x)"
        )


def _can(user: pwd.struct_passwd, test: str, path: Path) -> bool:
    """What the kernel says, ACLs included: ``test -w PATH`` run as ``user``."""
    return subprocess.run(["test", test, str(path)], **as_user(user)).returncode == 0


def check_socket(path: Path) -> None:
    if len(os.fsencode(path)) > 107:  # sun_path's 108 bytes, with the terminating NUL
        raise DrillFailed(
            f"the sandbox path is too long for a Unix socket ({path}): "
            "choose a shorter drill sandbox directory"
        )


def run_group(argv: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a session of its own, all of which is killed if we time out or
    are interrupted (``initdb`` and ``mariadb-install-db`` start servers of their own)."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kw) as p:  # fmt: skip
        try:
            out, err = p.communicate(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def clean_env(prefix: str) -> dict[str, str]:
    """Our environment without the variables that would point a tool elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefix)}


def runs_in(pid: int, d: Path) -> bool:
    """Whether ``pid`` is alive with working directory ``d`` (a server chdirs to its data
    directory): a reused pid of another process does not qualify."""
    try:
        return alive(pid) and os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(d)
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; if it is our child, it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] != "Z":
                return True
    except OSError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return False


def kill_wait(pid: int, sig: signal.Signals, grace: float) -> None:
    """Send ``sig``, wait ``grace`` seconds for ``pid`` to end, then SIGKILL it."""
    for s, wait in ((sig, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, s)
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(pid):
            return


def read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(text: str, n: int = 3) -> list[str]:
    """The last ``n`` non-blank lines of ``text``, for a one-sentence error."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()][-n:]

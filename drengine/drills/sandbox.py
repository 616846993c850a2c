"""The drill's sandbox: a private directory that holds everything a drill restores, and the
throwaway database servers it starts, and that is removed when the drill ends however it
ends (failure, SIGTERM, Ctrl-C).

A drill killed with SIGKILL cannot clean up after itself, so each sandbox records its
owner (host and PID) in ``owner.json``; the next drill removes sandboxes whose owner is gone,
stopping any server still running in them first. Sandboxes live in the policy's
``drill.sandbox_dir``, else ``DRENGINE_DRILL_DIR``, else ``/var/tmp`` (restores can be
large; ``/tmp`` is often a small tmpfs). Nothing outside the sandbox is written: a drill
never touches production targets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from drengine.core.errors import DrengineError

log = logging.getLogger(__name__)

PREFIX = "drengine-drill-"
_OWNER = "owner.json"


def default_base(configured: str | None) -> Path:
    return Path(configured or os.environ.get("DRENGINE_DRILL_DIR") or "/var/tmp")


class Sandbox:
    def __init__(self, base: Path, policy: str) -> None:
        self.base = base
        self.policy = policy
        self.path = Path()
        self._made = False

    def __enter__(self) -> Sandbox:
        remove_stale(self.base)
        try:
            self.base.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.policy}-", dir=self.base))
        except OSError as e:
            raise DrengineError(
                f"cannot make the drill's sandbox in {self.base}: {e.strerror or e}"
            ) from None
        self._made = True
        # Passable but not listable by others: a throwaway server running as another user
        # must reach its own directory inside; what is restored stays in 0700 directories.
        os.chmod(self.path, 0o711)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "policy": self.policy}
        (self.path / _OWNER).write_text(json.dumps(owner) + "\n")
        return self

    def dir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._made:
            remove(self.path)
            self._made = False


def remove(path: Path) -> None:
    """Remove a sandbox: servers in it stopped first, then every file, whatever its mode
    (a restored directory may be read-only)."""
    from drengine.drills.my_sandbox import cleanup_stale as stop_mysql
    from drengine.drills.pg_sandbox import cleanup_stale as stop_postgres

    stop_postgres(path)
    stop_mysql(path)

    top = os.path.realpath(path)

    def retry(func: object, p: str, exc: object) -> None:
        parent = os.path.dirname(p)
        if not os.path.realpath(parent).startswith(top):
            return  # never touch anything above the sandbox (it may be /var/tmp)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.rmdir(p)
            else:
                os.unlink(p)

    if path.exists():
        _unlock_dirs(path)
        shutil.rmtree(path, onerror=retry)
    if path.exists():
        log.warning("could not remove the drill sandbox %s entirely", path)


def _unlock_dirs(path: Path) -> None:
    """Make every directory below ``path`` writable and searchable by us (a restored tree
    may hold 0500 directories, which rmtree cannot empty)."""
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            with contextlib.suppress(OSError):
                if not os.path.islink(p):
                    os.chmod(p, stat.S_IRWXU)


def remove_stale(base: Path) -> list[Path]:
    """Remove sandboxes of drills on this host whose process is gone; what was removed."""
    removed: list[Path] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return removed
    host = socket.gethostname()
    for p in candidates:
        try:
            st = p.lstat()
            # Only sandboxes we made: ours, and writable by no one else (in /var/tmp anyone
            # can make a directory of that name to have a drill act on it).
            if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISDIR(st.st_mode):
                continue
            owner = json.loads((p / _OWNER).read_text())
            if owner.get("host") != host or _alive(int(owner["pid"])):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge (no owner file: being made right now, or not ours)
        log.warning("removing the sandbox %s of a drill that was killed", p)
        remove(p)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

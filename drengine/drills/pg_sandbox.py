"""A throwaway PostgreSQL server inside a drill's sandbox, to restore a dump into.

A drill must prove a dump loads without touching production, so the server is a fresh
cluster (``initdb``) whose every file lives in ``BASE/postgresql``. It listens on no TCP
port, only on a Unix socket in that directory, and trusts local connections: nothing
outside the sandbox can reach it, and no credential is needed or exposed. ``fsync`` stays
on, so the measured restore time is one a real server would show.

PostgreSQL refuses to run as root; as root the server runs as ``run_as``, else ``nobody``
(never ``postgres`` by default: it owns the production clusters). That user owns
``BASE/postgresql`` and must be able to reach it, so ``BASE`` gets its search bits (0700
becomes 0711: others may pass through, not list it). The newest installed server is used;
one older than the dump is refused (a dump loads only into its own major version or a
newer one).

A drill killed with SIGKILL leaves its server running: ``cleanup_stale`` stops it before
the sandbox is removed.
"""

from __future__ import annotations

import contextlib
import logging
import pwd
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlencode

from drengine.core.errors import DrillFailed
from drengine.drills.servers import (
    as_user,
    check_socket,
    clean_env,
    kill_wait,
    own_dir,
    read_tail,
    run_group,
    runs_in,
    server_user,
    tail,
)

log = logging.getLogger(__name__)

PORT = 5432  # names the socket file only: no TCP port is opened
SUPERUSER = "drengine"
_SERVER = ("initdb", "pg_ctl", "postgres")


def major_of(server_version_num: int) -> int:
    """150004 -> 15 (9.6's 90624 -> 9: before 10 a major version had two parts)."""
    return server_version_num // 10000


def server_bin() -> tuple[Path, int]:
    """The newest server's bin directory (Debian's /usr/lib/postgresql/N/bin, else the
    ``initdb`` on PATH) and its major version."""
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True,
                  key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)  # fmt: skip
    on_path = shutil.which("initdb")
    dirs += [Path(on_path).parent] if on_path else []
    found = next((d for d in dirs if all((d / n).exists() for n in _SERVER)), None)
    if found is None:
        raise DrillFailed(
            "no PostgreSQL server is installed here, and a drill needs one to restore a "
            "PostgreSQL dump: install the Debian package postgresql"
        )
    try:
        out = subprocess.run([found / "postgres", "--version"], capture_output=True, text=True,
                             timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    m = re.search(r"\d+", out)  # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    return found, int(m.group()) if m else 0


class PgSandbox:
    def __init__(self, base: Path, min_major: int = 0, run_as: str | None = None) -> None:
        self.dir = base / "postgresql"
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.logfile = self.dir / "server.log"
        self.min_major = min_major
        self.run_as = run_as
        self._bin: Path | None = None
        self._user: pwd.struct_passwd | None = None

    def __enter__(self) -> PgSandbox:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        bindir, major = server_bin()
        if major < self.min_major:
            raise DrillFailed(
                f"the snapshot holds a dump of PostgreSQL {self.min_major}; the newest server "
                f"installed here is {major}: install postgresql-{self.min_major} to drill it"
            )
        check_socket(self.socket_dir / f".s.PGSQL.{PORT}")
        self._user = server_user(self.run_as, "postgres")
        own_dir(self.dir, self._user)
        own_dir(self.socket_dir, self._user)
        self._bin = bindir
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                      "-E", "UTF8", f"--locale={_locale()}", "--no-sync")  # fmt: skip
            opts = f"-c listen_addresses='' -k {shlex.quote(str(self.socket_dir))} -p {PORT}"
            self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "120",
                      "-l", str(self.logfile), "-o", opts, "start")  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def url(self, database: str = "") -> str:
        """A URL for drengine's PostgreSQL loader and clients (``PgTarget.from_url``)."""
        query = {"host": str(self.socket_dir), "port": PORT, "user": SUPERUSER,
                 "sslmode": "disable", "no_env": ""}  # fmt: skip
        return f"postgresql:///{quote(database, safe='')}?{urlencode(query, quote_via=quote)}"

    def stop(self) -> None:
        """Fast shutdown, else immediate, else kill: idempotent, never raises."""
        try:
            if self._bin is not None and _postmaster(self.data) is not None:
                for mode in ("fast", "immediate"):
                    with contextlib.suppress(DrillFailed):
                        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-t", "60", "stop")
                        break
            self._bin = None
            _kill_postmaster(self.data)
        except Exception as e:  # stopping must not hide why the drill ended
            log.warning("could not stop the sandbox PostgreSQL server in %s: %s", self.dir, e)

    def _run(self, tool: str, *args: str) -> None:
        assert self._bin is not None
        try:
            out = run_group([str(self._bin / tool), *args], 300, cwd=self.dir,
                            env=clean_env("PG"), **as_user(self._user))  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DrillFailed(f"the sandbox PostgreSQL server failed: {tool}: {e}") from None
        if out.returncode != 0:
            said = tail(out.stderr or out.stdout) + tail(read_tail(self.logfile))
            raise DrillFailed(
                f"the sandbox PostgreSQL server failed: {tool} exited with status "
                f"{out.returncode}: " + " / ".join(said[-4:])
            )


def cleanup_stale(path: Path) -> None:
    """Stop a server left running in ``path/postgresql`` (or ``path/*/postgresql``) by a
    drill that was killed. Never raises."""
    with contextlib.suppress(OSError):
        for d in [path / "postgresql", *path.glob("*/postgresql")]:
            _kill_postmaster(d / "data")


def _postmaster(data: Path) -> int | None:
    """The running postmaster of ``data`` (whose working directory it is), if any."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if runs_in(pid, data) else None


def _kill_postmaster(data: Path) -> None:
    pid = _postmaster(data)
    if pid is not None:
        kill_wait(pid, signal.SIGQUIT, 10)  # SIGQUIT: immediate shutdown, children included


def _locale() -> str:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "C"
    names = {ln.strip().lower().replace("-", "") for ln in out.stdout.splitlines()}
    return "C.UTF-8" if "c.utf8" in names else "C"

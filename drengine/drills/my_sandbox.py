"""A throwaway MariaDB server inside a drill's sandbox, to restore a dump into.

As with ``pg_sandbox``: a fresh data directory (``mariadb-install-db``) whose every file
lives in ``BASE/mysql``, a server with networking off (``--skip-networking``: only a Unix
socket in that directory), and no password: its administrator is authenticated by the
socket's peer credentials (``unix_socket``), as root, or as the OS user when drengine does
not run as root. Every server tool and client gets ``--no-defaults``, so nothing from the
host's option files (``/etc/mysql``, an admin's ``~/.my.cnf`` with production credentials)
applies to the sandbox; the URL carries ``?no_defaults`` for drengine's own clients.

As root, the server runs as ``run_as``, else ``nobody`` (not ``mysql``, who owns the
production data; ``--user``: it drops root itself); ``BASE`` gets its search bits so that
user can reach its directory.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from drengine.core.errors import DrillFailed
from drengine.drills.servers import (
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

_START_TIMEOUT = 120.0


def _tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if found:
            return found
    raise DrillFailed(
        "no MariaDB server is installed here, and a drill needs one to restore a MariaDB/MySQL "
        "dump: install the Debian package mariadb-server"
    )


def server_version(server: str) -> tuple[int, int]:
    """(major, minor) of ``mariadbd --version``: "mariadbd  Ver 10.11.6-MariaDB..."."""
    try:
        out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0, 0
    m = re.search(r"Ver (\d+)\.(\d+)", out.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class MySandbox:
    def __init__(
        self, base: Path, min_version: tuple[int, int] = (0, 0), run_as: str | None = None
    ) -> None:
        self.dir = base / "mysql"
        self.data = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.pidfile = self.dir / "mysqld.pid"
        self.logfile = self.dir / "error.log"
        self.min_version = min_version
        self.run_as = run_as
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MySandbox:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def admin(self) -> str:
        """The account the socket authenticates: root, or the OS user we run as."""
        return "root" if os.geteuid() == 0 else getpass.getuser()

    def start(self) -> None:
        server = _tool("mariadbd", "mysqld")
        install = _tool("mariadb-install-db", "mysql_install_db")
        client = _tool("mariadb", "mysql")
        have = server_version(server)
        if have < self.min_version:
            want = ".".join(map(str, self.min_version))
            raise DrillFailed(
                f"the snapshot holds a dump of server version {want}; the MariaDB server installed "
                f"here is {have[0]}.{have[1]}: install a newer mariadb-server to drill it"
            )
        check_socket(self.socket)
        user = server_user(self.run_as, "mysql")
        own_dir(self.dir, user)
        as_user = [f"--user={user.pw_name}"] if user else []
        try:
            self._install(install, as_user)
            self._proc = subprocess.Popen(
                [server, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
                 "--skip-networking", f"--pid-file={self.pidfile}",
                 f"--log-error={self.logfile}", *as_user],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd=self.dir, env=clean_env("MYSQL"), start_new_session=True,
            )  # fmt: skip
            self._wait_ready(client)
        except BaseException:
            self.stop()
            raise

    def _install(self, install: str, as_user: list[str]) -> None:
        # The socket account is root when we are root, else the OS user we run as.
        socket_user = [] if as_user else [f"--auth-root-socket-user={self.admin}"]
        try:
            out = run_group(
                [install, "--no-defaults", f"--datadir={self.data}", *as_user, *socket_user,
                 "--auth-root-authentication-method=socket", "--skip-test-db",
                 "--skip-name-resolve"], 300, cwd=self.dir, env=clean_env("MYSQL"),
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DrillFailed(f"the sandbox MariaDB server could not be set up: {e}") from None
        if out.returncode != 0:
            said = tail(out.stderr or out.stdout)
            raise DrillFailed(
                f"the sandbox MariaDB server could not be set up: {Path(install).name} exited "
                f"with status {out.returncode}: " + " / ".join(said)
            )

    def _wait_ready(self, client: str) -> None:
        assert self._proc is not None
        probe = [client, "--no-defaults", f"--socket={self.socket}", f"--user={self.admin}",
                 "--connect-timeout=10", "-e", "SELECT 1"]  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while self._proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                ok = subprocess.run(probe, capture_output=True, env=clean_env("MYSQL"), timeout=60)
                if ok.returncode == 0:
                    return
            time.sleep(0.1)
        why = (
            "exited" if self._proc.poll() is not None else f"is not ready after {_START_TIMEOUT:g}s"
        )
        raise DrillFailed(
            f"the sandbox MariaDB server {why}: "
            + (" / ".join(tail(read_tail(self.logfile))) or "its error log is empty")
        )

    def url(self, database: str = "") -> str:
        """A URL for drengine's MariaDB loader and clients (``MyTarget.from_url``)."""
        return (
            f"mysql://{quote(self.admin, safe='')}@localhost/{quote(database, safe='')}"
            f"?socket={quote(str(self.socket), safe='')}&no_defaults"
        )

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after 60 s: idempotent, never raises."""
        try:
            p, self._proc = self._proc, None
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)
            _kill_server(self.dir)  # one we did not start ourselves, should there be one
        except Exception as e:  # stopping must not hide why the drill ended
            log.warning("could not stop the sandbox MariaDB server in %s: %s", self.dir, e)


def cleanup_stale(path: Path) -> None:
    """Stop a server left running in ``path/mysql`` (or ``path/*/mysql``) by a drill that
    was killed. Never raises."""
    with contextlib.suppress(OSError):
        for d in [path / "mysql", *path.glob("*/mysql")]:
            _kill_server(d)


def _kill_server(d: Path) -> None:
    try:
        pid = int((d / "mysqld.pid").read_text().strip())
    except (OSError, ValueError):
        return
    if runs_in(pid, d / "data"):
        kill_wait(pid, signal.SIGKILL, 10)  # its data is about to be removed: no clean stop

"""A throwaway MariaDB server: mariadb-install-db and mariadbd in a temporary directory, on
a free port and its own socket, run as the ``mysql`` user (or ``nobody``) when we are root.

A password user ``drtest`` is made for TCP, so that tests can give a wrong password.
``tests/run-tests`` installs the server (Debian: mariadb-server) when it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pg_server import free_port, require

USER = "drtest"
PASSWORD = "my test secret"


def _run_as() -> str | None:
    if os.getuid() != 0:
        return None
    for name in ("mysql", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (mysql or nobody) to run MariaDB as")


class MariaDB:
    def __init__(self) -> None:
        server = shutil.which("mariadbd") or (
            "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
        )
        install = shutil.which("mariadb-install-db")
        if server is None or install is None or shutil.which("mariadb") is None:
            require("MariaDB (mariadbd, mariadb-install-db)")
        assert server is not None and install is not None
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="drengine-my-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.socket = str(self.dir / "sock")
        data = self.dir / "data"
        user_opt = [f"--user={self.user}"] if self.user else []
        out = subprocess.run(
            [install, "--no-defaults", f"--datadir={data}", *user_opt,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {out.stdout}{out.stderr}")
        self.proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={data}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", *user_opt,
             f"--pid-file={self.dir / 'pid'}", f"--log-error={self.dir / 'err.log'}",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
             "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            ok = subprocess.run(
                ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", "SELECT 1"],
                capture_output=True,
            )  # fmt: skip
            if ok.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "err.log").read_text() if (self.dir / "err.log").exists() else ""
                self.stop()
                raise RuntimeError(f"mariadbd did not start: {log[-2000:]}")
            time.sleep(0.2)
        self.root_sql(
            f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT ALL ON *.* TO '{USER}'@'%' WITH GRANT OPTION;"
        )

    def root_sql(self, sql: str, database: str = "") -> str:
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-B"]
        if database:
            argv.append(f"--database={database}")
        out = subprocess.run([*argv, "-e", sql], capture_output=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb failed: {out.stderr.decode()}")
        return out.stdout.decode("utf-8", "surrogateescape").strip()

    def url(self, database: str = "") -> str:
        return f"mysql://{USER}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        return {"MYSQL_PWD": PASSWORD}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

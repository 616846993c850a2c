"""A throwaway PostgreSQL cluster: initdb and pg_ctl in a temporary directory, on a free
port, run as an unprivileged OS user (PostgreSQL refuses to run as root).

Password authentication (scram-sha-256) on TCP, so that tests can give a wrong password.
``tests/run-tests`` installs the server (Debian: postgresql) when it is missing; without it
the tests are skipped, unless ``DRENGINE_REQUIRE_SERVERS=1`` makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

SUPERUSER = "drtest"
PASSWORD = "pg test secret"


def pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    for d in sorted(
        base.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    ):
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def require(what: str) -> None:
    if os.environ.get("DRENGINE_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{what} is not installed (tests/run-tests installs it)")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unprivileged_user() -> str | None:
    if os.getuid() != 0:
        return None  # already unprivileged: run as ourselves
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (postgres or nobody) to run PostgreSQL as")


class PgCluster:
    def __init__(self) -> None:
        b = pg_bin()
        if b is None:
            require("PostgreSQL (initdb)")
        assert b is not None
        self.bin = b
        self.user = _unprivileged_user()
        # Not under pytest's tmp dir: its parents are 0700 root, closed to the server's user.
        self.dir = Path(tempfile.mkdtemp(prefix="drengine-pg-", dir="/tmp"))
        self.port = free_port()
        self.data = self.dir / "data"
        os.chmod(self.dir, 0o755)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._as_user(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8",
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync", "--locale=C"]
        )  # fmt: skip
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_user(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts,
             "-l", str(self.dir / "log"), "-w", "-t", "60", "start"]
        )  # fmt: skip

    def _as_user(self, argv: list[str]) -> None:
        cmd = ["runuser", "-u", self.user, "--", *argv] if self.user else argv
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=120)
        if out.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {out.stdout}{out.stderr}{log[-2000:]}")

    def url(self, database: str = "") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": PASSWORD}

    def psql(self, database: str, sql: str) -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
             "-c", sql],
            capture_output=True, text=True, env={**os.environ, **self.env()}, timeout=300,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout.strip()

    def pgbench_init(self, database: str, scale: int) -> None:
        subprocess.run(
            [str(self.bin / "pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1",
             "-p", str(self.port), "-U", SUPERUSER, database],
            check=True, capture_output=True, env={**os.environ, **self.env()}, timeout=300,
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._as_user(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            )
        shutil.rmtree(self.dir, ignore_errors=True)

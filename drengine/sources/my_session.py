"""MariaDB/MySQL connection settings and a client session, through the servers' own tools.

drengine runs only ``mariadb``/``mysql`` and ``mariadb-dump``/``mysqldump``, so credentials
come from where those tools look: ``~/.my.cnf`` and the other option files, ``MYSQL_PWD``,
login paths. The URL's host, port, user and socket go on the command line (none is a
secret); a password file named in the URL becomes a private temporary option file passed
with ``--defaults-extra-file`` (mode 0600, removed afterwards), never an argument.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote

from drengine.core.errors import SourceFailed, UsageError
from drengine.sources.pg_session import url_host
from drengine.sources.urls import redact

_PARAMS = {"password_file", "socket", "host", "port", "user"}


@dataclass
class MyTarget:
    url: str
    host: str = ""
    port: str = ""
    user: str = ""
    socket: str = ""
    database: str = ""
    password_file: str = ""
    _tmp: Path | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, u: SplitResult) -> MyTarget:
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        unknown = set(q) - _PARAMS
        if unknown:
            raise UsageError(
                f"{redact(u.geturl())}: unknown option {sorted(unknown)[0]!r}; known: "
                + ", ".join(sorted(_PARAMS))
            )
        host = q.get("host", url_host(u))
        socket = q.get("socket", "")
        if host.startswith("/"):  # a socket path written as the host
            host, socket = "localhost", socket or host
        db = unquote(u.path.lstrip("/"))
        if "/" in db:
            raise UsageError(f"{redact(u.geturl())}: the database name must not contain '/'")
        return cls(
            url=redact(u.geturl()),
            host=host,
            port=q.get("port", str(u.port or "")),
            user=q.get("user", unquote(u.username or "")),
            socket=socket,
            database=db,
            password_file=q.get("password_file", ""),
        )

    def where(self) -> str:
        if self.socket:
            return self.socket
        host = self.host or "localhost"
        return f"{host}:{self.port}" if self.port else host

    def args(self) -> list[str]:
        """Connection options for a client tool (``--defaults-extra-file`` must be first)."""
        out = [f"--defaults-extra-file={self._option_file()}"] if self.password_file else []
        for opt, value in (
            ("--host", self.host),
            ("--port", self.port),
            ("--user", self.user),
            ("--socket", self.socket),
        ):
            if value:
                out.append(f"{opt}={value}")
        if self.port and not self.socket:
            out.append("--protocol=TCP")  # "localhost" would otherwise mean the socket
        return out

    def _option_file(self) -> Path:
        if self._tmp is None:
            try:
                password = Path(self.password_file).read_text().splitlines()[0]
            except (OSError, IndexError, UnicodeDecodeError) as e:
                why = e.strerror if isinstance(e, OSError) else "it is empty or not text"
                raise UsageError(
                    f"cannot read the password file {self.password_file}: {why}"
                ) from None
            d = Path(tempfile.mkdtemp(prefix="drengine-my-"))
            p = d / "client.cnf"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            with os.fdopen(fd, "w") as f:
                f.write(f'[client]\npassword="{escaped}"\n')
            self._tmp = p
        return self._tmp

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp.parent, ignore_errors=True)
            self._tmp = None


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise SourceFailed(f"{names[0]} is not installed (Debian: apt-get install mariadb-client)")


def tool_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


class MyError(SourceFailed):
    pass


class MyClient:
    """A ``mariadb`` client driven through its standard input, one statement at a time."""

    _END = "--drengine-end--"

    def __init__(self, target: MyTarget, database: str | None = None) -> None:
        self.target = target
        argv = [tool("mariadb", "mysql"), *target.args(), "--batch", "--skip-column-names",
                "--unbuffered", "--default-character-set=utf8mb4"]  # fmt: skip
        db = target.database if database is None else database
        if db:
            argv.append(f"--database={db}")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            start_new_session=True,
        )

    def query(self, sql: str) -> list[list[str]]:
        p = self._proc
        assert p.stdin is not None and p.stdout is not None
        try:
            p.stdin.write(sql.rstrip().rstrip(";") + f";\nSELECT '{self._END}';\n")
            p.stdin.flush()
        except BrokenPipeError:
            raise self._failed() from None
        rows: list[list[str]] = []
        for line in p.stdout:
            line = line.rstrip("\n")
            if line == self._END:
                return rows
            rows.append(line.split("\t"))
        raise self._failed()

    def _failed(self) -> MyError:
        p = self._proc
        p.wait()
        err = p.stderr.read().strip() if p.stderr else ""
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        msg = " / ".join(lines[-2:]) or "the client failed"
        return MyError(f"MariaDB/MySQL at {self.target.where()}: {msg}")

    def close(self) -> None:
        p = self._proc
        if p.poll() is None:
            try:
                assert p.stdin is not None
                p.stdin.close()
                p.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

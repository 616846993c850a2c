"""MariaDB/MySQL connection settings and a client session, through the servers' own tools.

drengine runs only ``mariadb``/``mysql`` and ``mariadb-dump``/``mysqldump``, so credentials
come from where those tools look: ``~/.my.cnf`` and the other option files, ``MYSQL_PWD``,
login paths. The URL's host, port, user and socket go on the command line (none is a
secret); a password file named in the URL becomes a private temporary option file passed
with ``--defaults-extra-file`` (mode 0600, removed afterwards), never an argument.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote

from drengine.core.errors import SourceFailed, UsageError
from drengine.sources.pg_session import url_host
from drengine.sources.sql_client import (
    END,
    SqlClient,
    private_file,
    read_password_file,
    remove_private,
)
from drengine.sources.urls import redact

_PARAMS = {"password_file", "socket", "host", "port", "user", "no_defaults"}


@dataclass
class MyTarget:
    url: str
    host: str = ""
    port: str = ""
    user: str = ""
    socket: str = ""
    database: str = ""
    password_file: str = ""
    no_defaults: bool = False  # read no option file (~/.my.cnf): a drill's sandbox server
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
            no_defaults="no_defaults" in q,
        )

    def where(self) -> str:
        if self.socket:
            return self.socket
        host = self.host or "localhost"
        return f"{host}:{self.port}" if self.port else host

    def args(self) -> list[str]:
        """Connection options for a client tool. The option-file option must come first;
        with ``no_defaults`` the password file, if any, is the only option file read."""
        if self.password_file:
            flag = "--defaults-file" if self.no_defaults else "--defaults-extra-file"
            out = [f"{flag}={self._option_file()}"]
        else:
            out = ["--no-defaults"] if self.no_defaults else []
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
            password = read_password_file(self.password_file)
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            self._tmp = private_file("client.cnf", f'[client]\npassword="{escaped}"\n')
        return self._tmp

    def cleanup(self) -> None:
        remove_private(self._tmp)
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


class MyClient(SqlClient):
    """A ``mariadb`` client in batch mode (the first error ends it)."""

    def __init__(self, target: MyTarget, database: str | None = None) -> None:
        self.target = target
        argv = [tool("mariadb", "mysql"), *target.args(), "--batch", "--skip-column-names",
                "--unbuffered", "--default-character-set=utf8mb4"]  # fmt: skip
        db = target.database if database is None else database
        if db:
            argv.append(f"--database={db}")
        super().__init__(argv, None, f"MariaDB/MySQL at {target.where()}")

    def _statement(self, sql: str) -> str:
        return f"{sql};\nSELECT '{END}';\n"


# Raised by a session whose statement failed.
MyError = SourceFailed


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

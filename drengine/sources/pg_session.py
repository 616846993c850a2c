"""PostgreSQL connection settings and a ``psql`` session, through libpq's own tools.

drengine talks to PostgreSQL only through ``psql``, ``pg_dump``, ``pg_dumpall`` and
``pg_restore``, so credentials and connection options come from exactly the places an admin
set up for them: ``.pgpass``/``PGPASSFILE``, ``PGPASSWORD``, ``PGSERVICE`` and
``pg_service.conf``, ``PGSSLMODE`` and the rest of libpq's environment. The URL's parts go
into the child's environment (``PGHOST``...), never onto a command line; a password file
named in the URL becomes a private temporary ``PGPASSFILE``, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, parse_qs, unquote

from drengine.core.errors import SourceFailed, UsageError
from drengine.sources.sql_client import (
    END,
    SqlClient,
    private_file,
    read_password_file,
    remove_private,
)
from drengine.sources.urls import redact

_PARAMS = {"password_file", "globals", "sslmode", "service", "host", "port", "user", "no_env"}
_SYSTEM_DATABASES = ("template0", "template1")


@dataclass
class PgTarget:
    """Where a server is: the URL's parts, for libpq's environment."""

    url: str  # without a password
    host: str = ""
    port: str = ""
    user: str = ""
    database: str = ""
    service: str = ""
    sslmode: str = ""
    password_file: str = ""
    globals: bool = False
    # Ignore libpq's environment (PGSERVICE, PGHOSTADDR, PGOPTIONS, ...): a drill's
    # throwaway server must be reached only by what its URL says.
    no_env: bool = False
    _tmp: Path | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, u: SplitResult) -> PgTarget:
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        unknown = set(q) - _PARAMS
        if unknown:
            raise UsageError(
                f"{redact(u.geturl())}: unknown option {sorted(unknown)[0]!r}; known: "
                + ", ".join(sorted(_PARAMS))
            )
        return cls(
            url=redact(u.geturl()),
            host=q.get("host", url_host(u)),
            port=q.get("port", str(u.port or "")),
            user=q.get("user", unquote(u.username or "")),
            database=unquote(u.path.lstrip("/")),
            service=q.get("service", ""),
            sslmode=q.get("sslmode", ""),
            password_file=q.get("password_file", ""),
            globals="globals" in q,
            no_env="no_env" in q,
        )

    def where(self) -> str:
        host = self.host or "the default server"
        return f"{host}:{self.port}" if self.port else host

    def env(self, database: str | None = None) -> dict[str, str]:
        """The environment of a libpq tool for ``database`` (default: the URL's)."""
        env = dict(os.environ)
        if self.no_env:
            env = {k: v for k, v in env.items() if not k.startswith("PG")}
        for key, value in (
            ("PGHOST", self.host),
            ("PGPORT", self.port),
            ("PGUSER", self.user),
            ("PGSERVICE", self.service),
            ("PGSSLMODE", self.sslmode),
        ):
            if value:
                env[key] = value
        db = database if database is not None else self.database
        if db:
            env["PGDATABASE"] = db
        else:
            env.pop("PGDATABASE", None)
        if self.password_file:
            env["PGPASSFILE"] = str(self._passfile())
        env.setdefault("PGAPPNAME", "drengine")
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        return env

    def _passfile(self) -> Path:
        if self._tmp is None:
            password = read_password_file(self.password_file)
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            self._tmp = private_file("pgpass", f"*:*:*:*:{escaped}\n")
        return self._tmp

    def cleanup(self) -> None:
        remove_private(self._tmp)
        self._tmp = None


def url_host(u: SplitResult) -> str:
    """The host as written (a socket directory may be percent-encoded: %2Frun%2Fpostgresql),
    not lower-cased as ``SplitResult.hostname`` is."""
    hostport = u.netloc.rpartition("@")[2]
    if u.port is not None:
        hostport = hostport.rpartition(":")[0]
    if hostport.startswith("[") and hostport.endswith("]"):
        hostport = hostport[1:-1]
    return unquote(hostport)


def tool(name: str) -> str:
    """A PostgreSQL client program: on PATH, else the newest in Debian's versioned dirs
    (``pg_restore`` must be at least as new as the dump it reads)."""
    found = shutil.which(name)
    if found:
        return found
    base = Path("/usr/lib/postgresql")
    for d in sorted(base.glob("*/bin"), key=lambda p: _num(p.parent.name), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise SourceFailed(f"{name} is not installed (Debian: apt-get install postgresql-client)")


def _num(s: str) -> int:
    return int(s) if s.isdigit() else 0


def tool_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


class Psql(SqlClient):
    """A ``psql`` session (``-v ON_ERROR_STOP=1``: the first error ends it).

    One session keeps one transaction open while ``pg_dump`` reads the snapshot it exported,
    so that what is recorded (row counts, schema fingerprint) describes the same data."""

    def __init__(self, target: PgTarget, database: str | None = None) -> None:
        self.target = target
        super().__init__(
            [tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", "\t"],
            target.env(database),
            f"PostgreSQL at {target.where()}",
        )

    def _statement(self, sql: str) -> str:
        return f"{sql};\n\\echo {END}\n"

    def _message(self, stderr_lines: list[str]) -> str:
        return " / ".join(ln.removeprefix("psql: ") for ln in stderr_lines[-3:])

    def _quit(self) -> str:
        return "\\q\n"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

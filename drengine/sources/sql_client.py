"""What the PostgreSQL and MariaDB sources share: a database's own command-line client
driven through its standard input, and a private file for a password from a URL.

Talking through the servers' own clients (``psql``, ``mariadb``) means credentials and
connection options come from exactly where an admin set them up for those tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drengine.core.errors import RestoreError, SourceFailed, UsageError

END = "--drengine-end--"


class SqlClient:
    """One client process, one statement at a time: each statement is followed by one that
    prints ``END``, so the rows of each are read without a protocol of our own. One session
    can keep one transaction open across statements (the dump's snapshot)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None, where: str) -> None:
        self.where = where
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            start_new_session=True,
        )

    def _statement(self, sql: str) -> str:
        """``sql`` and what makes the client print ``END`` after it."""
        raise NotImplementedError

    def _message(self, stderr_lines: list[str]) -> str:
        return " / ".join(stderr_lines[-2:])

    def query(self, sql: str) -> list[list[str]]:
        """Rows of ``sql`` (one statement), as text fields; ``SourceFailed`` with the
        server's message when it fails or the connection cannot be made."""
        p = self._proc
        assert p.stdin is not None and p.stdout is not None
        try:
            p.stdin.write(self._statement(sql.rstrip().rstrip(";")))
            p.stdin.flush()
        except BrokenPipeError:
            raise self._failed() from None
        rows: list[list[str]] = []
        for line in p.stdout:
            line = line.rstrip("\n")
            if line == END:
                return rows
            if line:
                rows.append(line.split("\t"))
        raise self._failed()

    def _failed(self) -> SourceFailed:
        p = self._proc
        p.wait()
        err = p.stderr.read() if p.stderr else ""
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        return SourceFailed(f"{self.where}: {self._message(lines) or 'the client failed'}")

    def _quit(self) -> str:
        return ""

    def close(self) -> None:
        p = self._proc
        if p.poll() is None:
            try:
                assert p.stdin is not None
                p.stdin.write(self._quit())
                p.stdin.close()
                p.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def read_password_file(path: str) -> str:
    """The first line of a password file named in a source URL."""
    try:
        return Path(path).read_text().splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "it is empty or not text"
        raise UsageError(f"cannot read the password file {path}: {why}") from None


def private_file(name: str, content: str) -> Path:
    """A file only we can read (in a new 0700 directory); remove with ``remove_private``."""
    d = Path(tempfile.mkdtemp(prefix="drengine-secret-"))
    p = d / name
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return p


def remove_private(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)


def compare_restored(name: str, recorded: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """After a database was loaded: ``RestoreError`` unless every table recorded at backup
    holds its recorded rows; the summary of the load otherwise."""
    tables: dict[str, int] = recorded.get("tables", {})
    wrong = {t: (n, now["tables"].get(t)) for t, n in tables.items() if now["tables"].get(t) != n}
    if wrong:
        t, (want, got) = next(iter(wrong.items()))
        raise RestoreError(
            f"database {name!r} was restored, but {len(wrong)} tables do not hold the rows "
            f"recorded at backup (first: {t} has {got}, recorded {want})"
        )
    return {
        "database": name,
        "tables": len(tables),
        "rows": sum(tables.values()),
        "schema_matches": now["schema_fingerprint"] == recorded.get("schema_fingerprint"),
    }

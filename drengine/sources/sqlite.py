"""SQLite as a source: ``sqlite:///PATH``, a consistent copy while writers keep writing.

The database is read in one read transaction (a WAL database's writers go on; a
rollback-journal database's writers wait for it), and written out as SQL statements, the
form SQLite can stream: its own writers (the backup API, ``VACUUM INTO``) write pages out
of order and read them back, so they need a seekable file, never a pipe. The dump is stored
at ``/sqlite/PATH.sql``; ``restore --to sqlite:///NEW`` builds a database file from it, and
the record holds the row count of every table and a schema fingerprint taken in the same
transaction.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult

from drengine.core.errors import SourceFailed, UsageError
from drengine.core.phases import NO_PHASES, Phases
from drengine.sources.base import (
    BackupContext,
    ChunksOf,
    Entry,
    LoadOptions,
    Readable,
    StoredStream,
    StreamSource,
    stored_entries,
)
from drengine.sources.command import stream_node
from drengine.sources.urls import local_path

_BUFFER = 1 << 20
_BUSY_MS = 60_000  # a writer holding the lock for a minute: give up with a message


def db_path(u: SplitResult) -> str:
    return local_path(u, "the database path")


def describe(conn: sqlite3.Connection) -> dict[str, Any]:
    """Row counts and schema fingerprint, as the connection's transaction sees them (restore
    computes the same on the database it built)."""
    schema = conn.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name"
    ).fetchall()
    tables = [
        name for kind, name, _, sql in schema if kind == "table" and "VIRTUAL" not in sql.upper()
    ]
    counts = {
        t: int(
            conn.execute(f'SELECT count(*) FROM "{t.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
        )
        for t in tables
    }
    text = "\n".join("\t".join(row) for row in schema)
    return {
        "tables": counts,
        "schema_fingerprint": hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(),
        "user_version": int(conn.execute("PRAGMA user_version").fetchone()[0]),
        "application_id": int(conn.execute("PRAGMA application_id").fetchone()[0]),
    }


class _Lines:
    """A file-like ``readinto`` over the dump's statements, filled a megabyte at a time."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._buf = b""
        self._pos = 0

    def readinto(self, b: memoryview) -> int:
        if self._pos >= len(self._buf):
            parts, size = [], 0
            for line in self._lines:
                data = (line + "\n").encode("utf-8", "surrogateescape")
                parts.append(data)
                size += len(data)
                if size >= _BUFFER:
                    break
            self._buf, self._pos = b"".join(parts), 0
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = memoryview(self._buf)[self._pos : self._pos + n]  # no copy of the slice
        self._pos += n
        return n


class SqliteSource(StreamSource):
    def __init__(self, path: str) -> None:
        super().__init__(kind="sqlite")
        self.path = path
        self.entry = os.fsencode("/sqlite" + path + ".sql")
        self._info: dict[str, Any] = {}

    @classmethod
    def from_url(cls, u: SplitResult) -> SqliteSource:
        return cls(db_path(u))

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        yield Entry(self.entry, stream_node(self.entry), open=self._open)

    @contextmanager
    def _open(self) -> Iterator[Readable]:
        if not os.path.isfile(self.path):
            why = "not a file" if os.path.exists(self.path) else "no such file"
            raise SourceFailed(f"SQLite database {self.path}: {why}")
        try:
            # Read-only: a backup never creates, changes or recovers the database it reads.
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=_BUSY_MS / 1000
            )
        except sqlite3.Error as e:
            raise SourceFailed(f"SQLite database {self.path}: {e}") from None
        try:
            conn.execute("BEGIN")  # deferred: the first read below fixes the snapshot
            self._info = {
                "sqlite_version": sqlite3.sqlite_version,
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "page_size": int(conn.execute("PRAGMA page_size").fetchone()[0]),
                **describe(conn),
            }
            yield _Lines(self._statements(conn))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise SourceFailed(f"SQLite database {self.path}: {e}") from None
        finally:
            conn.close()

    def _statements(self, conn: sqlite3.Connection) -> Iterator[str]:
        for line in conn.iterdump():
            if line == "COMMIT;":
                # Before the end: the database's own settings that iterdump leaves out.
                yield f"PRAGMA user_version = {self._info['user_version']};"
                yield f"PRAGMA application_id = {self._info['application_id']};"
            yield line

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "database": self.path,
            "format": "sql",
            **self._info,
            "entries": stored_entries(stored),
        }


def restore_sqlite(
    part: dict[str, Any], u: SplitResult, chunks_of: ChunksOf, opts: LoadOptions
) -> list[dict[str, Any]]:
    """``restore --to sqlite:///NEW``: build a new database file from the dump.

    Built under a temporary name in the same directory and renamed into place only after
    the whole stream verified, ``PRAGMA integrity_check`` passed and every table holds the
    rows recorded at backup; an existing file is never overwritten."""
    dest = db_path(u)
    return [_rebuild(part, chunks_of(_dump_path(part)), dest, opts.phases)]


def _dump_path(part: dict[str, Any]) -> str:
    entries = part.get("entries") or [{}]
    path = entries[0].get("path")
    if not isinstance(path, str):
        raise UsageError("the snapshot's SQLite record names no dump")
    return path


def rebuild_restored(
    part: dict[str, Any], target: str, phases: Phases = NO_PHASES
) -> dict[str, Any] | None:
    """After ``restore --target DIR``: build the database file at DIR/PATH from the
    restored (verified) dump DIR/sqlite/PATH.sql, which stays; None if the dump was not
    restored (excluded, or it failed)."""
    sql = os.path.join(target, _dump_path(part).lstrip("/"))
    db = part.get("database")
    if not isinstance(db, str) or not os.path.isfile(sql):
        return None
    dest = os.path.join(target, db.lstrip("/"))
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)

    def chunks() -> Iterator[bytes]:
        with open(sql, "rb") as f:
            while block := f.read(_BUFFER):
                yield block

    return _rebuild(part, chunks(), dest, phases)


def _rebuild(
    part: dict[str, Any], chunks: Iterator[bytes], dest: str, phases: Phases
) -> dict[str, Any]:
    if os.path.lexists(dest):
        raise UsageError(f"{dest} exists; restore the SQLite database to a new path")
    tmp = os.path.join(os.path.dirname(dest) or ".", f".{os.path.basename(dest)}.drengine-tmp")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
    except sqlite3.Error as e:
        raise UsageError(f"cannot create {dest}: {e}") from None
    try:
        try:
            with phases.span("load"):
                _load(conn, chunks)
            with phases.span("verify"):
                bad = conn.execute("PRAGMA integrity_check").fetchall()
                now = describe(conn)
        finally:
            conn.close()
        if bad != [("ok",)]:
            raise SourceFailed(f"the rebuilt database fails integrity_check: {bad[0][0]}")
        want = part.get("tables", {})
        wrong = [t for t, n in want.items() if now["tables"].get(t) != n]
        if wrong:
            raise SourceFailed(
                f"the rebuilt database does not hold the rows recorded at backup ({wrong[0]})"
            )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, dest)
    except sqlite3.Error as e:
        raise SourceFailed(f"cannot rebuild {dest}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {
        "database": dest,
        "tables": len(want),
        "rows": sum(want.values()),
        "schema_matches": now["schema_fingerprint"] == part.get("schema_fingerprint"),
    }


def _load(conn: sqlite3.Connection, chunks: Iterator[bytes]) -> None:
    """Run the dump's statements as they arrive (a statement may span lines and chunks)."""
    pending = b""
    stmt = ""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            stmt += raw.decode("utf-8", "surrogateescape") + "\n"
            if sqlite3.complete_statement(stmt):
                conn.execute(stmt)
                stmt = ""
    stmt += pending.decode("utf-8", "surrogateescape")
    if stmt.strip():
        conn.execute(stmt)

"""MariaDB and MySQL as a source: ``mysql://[USER@]HOST[:PORT]/DB`` (also ``mariadb://``).

``mariadb-dump`` (or ``mysqldump``) with ``--single-transaction`` (one consistent snapshot
of InnoDB tables, writers going on), routines, triggers and events, binary columns in hex,
streamed into the pipeline as ``/mysql/DB.sql``.

What is recorded (row counts, schema fingerprint) must describe the same data as the dump,
and MySQL cannot share a snapshot between sessions. So a session takes the global read lock
(``FLUSH TABLES WITH READ LOCK``) and opens its own consistent snapshot; the dump starts,
and once its first table appears in the stream (it has opened its transaction), the lock is
released: writers wait only for the dump to start. Both transactions began while no write
could commit, so they see the same data. Without the ``RELOAD`` privilege (or when the lock
is not granted within a minute) the counts come from a snapshot taken just before the dump,
and the record says ``"counts": "before dump"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult

from drengine.core.errors import UsageError
from drengine.sources.base import (
    BackupContext,
    Entry,
    Readable,
    StoredStream,
    StreamSource,
    stored_entries,
)
from drengine.sources.command import stream_node
from drengine.sources.my_session import (
    MyClient,
    MyError,
    MyTarget,
    quote_ident,
    quote_literal,
    tool,
    tool_version,
)
from drengine.sources.process import Producer

# The dump has opened its transaction once it writes a table (or reaches its end).
_STARTED = (b"\n-- Table structure for table", b"\n-- Dumping routines", b"\n-- Dump completed")
_LOCK_WAIT = 60


def schema_sql(db: str) -> str:
    lit = quote_literal(db)
    return f"""
SELECT line FROM (
  SELECT CONCAT_WS(' ', 'column', TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE,
                   IFNULL(COLUMN_DEFAULT, 'NULL'), EXTRA, IFNULL(COLLATION_NAME, '')) AS line
    FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {lit}
  UNION ALL
  SELECT CONCAT_WS(' ', 'index', TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME)
    FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {lit}
  UNION ALL
  SELECT CONCAT_WS(' ', 'table', TABLE_NAME, TABLE_TYPE, IFNULL(ENGINE, ''))
    FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit}
  UNION ALL
  SELECT CONCAT_WS(' ', 'view', TABLE_NAME,
                   MD5(REPLACE(VIEW_DEFINITION, CONCAT('`', TABLE_SCHEMA, '`.'), '')))
    FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {lit}
  UNION ALL
  SELECT CONCAT_WS(' ', 'trigger', TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE,
                   ACTION_TIMING, MD5(ACTION_STATEMENT))
    FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {lit}
  UNION ALL
  SELECT CONCAT_WS(' ', 'routine', ROUTINE_TYPE, ROUTINE_NAME, MD5(ROUTINE_DEFINITION))
    FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit}
) s ORDER BY line
"""


def describe_database(client: MyClient, db: str) -> dict[str, Any]:
    """Row counts and schema fingerprint of ``db`` in the session's transaction."""
    tables = [
        r[0]
        for r in client.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
            f"{quote_literal(db)} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
        )
    ]
    counts: dict[str, int] = {}
    if tables:
        union = " UNION ALL ".join(
            f"SELECT {quote_literal(t)}, COUNT(*) FROM {quote_ident(db)}.{quote_ident(t)}"
            for t in tables
        )
        counts = {name: int(n) for name, n in client.query(union)}
    charset = client.query(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
        f"information_schema.SCHEMATA WHERE SCHEMA_NAME = {quote_literal(db)}"
    )
    lines = [r[0] for r in client.query(schema_sql(db))]
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return {
        "charset": charset[0][0] if charset else "",
        "collation": charset[0][1] if charset else "",
        "tables": counts,
        "schema_fingerprint": digest,
        "schema_objects": len(lines),
    }


class _Watch:
    """Passes the dump's output on; calls ``started`` once the dump has begun its data."""

    def __init__(self, out: Readable, started: Any) -> None:
        self._out, self._started = out, started
        self._tail = b""

    def readinto(self, b: memoryview) -> int:
        n = self._out.readinto(b) or 0
        if self._started is not None:
            seen = self._tail + bytes(b[:n])
            if n == 0 or any(m in seen for m in _STARTED):
                self._started()
                self._started = None
            self._tail = seen[-64:]
        return n


class MysqlSource(StreamSource):
    def __init__(self, target: MyTarget) -> None:
        super().__init__(kind="mysql")
        self.target = target
        self.path = os.fsencode(f"/mysql/{target.database}.sql")
        self._info: dict[str, Any] = {}
        self._producer: Producer | None = None
        self._client: MyClient | None = None

    @classmethod
    def from_url(cls, u: SplitResult) -> MysqlSource:
        target = MyTarget.from_url(u)
        if not target.database:
            raise UsageError(f"{target.url}: name the database to back up (mysql://HOST/DB)")
        return cls(target)

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        yield Entry(self.path, stream_node(self.path), open=self._open)

    @contextmanager
    def _open(self) -> Iterator[Readable]:
        t = self.target
        client = self._client = MyClient(t, database="")
        version = client.query("SELECT VERSION(), @@version_comment")[0]
        exists = client.query(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "
            + quote_literal(t.database)
        )[0][0]
        if exists == "0":
            raise MyError(f"MariaDB/MySQL at {t.where()}: database {t.database!r} does not exist")
        locked = self._lock(client)
        if not locked:
            # The session ended with the error: a new one counts just before the dump.
            client = self._client = MyClient(t, database="")
        client.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        info = describe_database(client, t.database)
        dump = tool("mariadb-dump", "mysqldump")
        argv = [dump, *t.args(), "--single-transaction", "--routines", "--triggers",
                "--events", "--hex-blob", "--skip-dump-date", "--no-tablespaces",
                "--default-character-set=utf8mb4", t.database]  # fmt: skip
        p = self._producer = Producer(
            argv, what=f"{os.path.basename(dump)} of {t.database!r} on {t.where()}"
        )

        def started() -> None:
            if locked:
                client.query("UNLOCK TABLES")

        with p.stream() as out:
            yield _Watch(out, started)
        p.check()
        client.query("COMMIT")
        client.close()
        self._info = {
            "server_version": version[0],
            "version_comment": version[1],
            "database": t.database,
            "tool": os.path.basename(dump),
            "tool_version": tool_version(dump),
            "counts": "dump snapshot" if locked else "before dump",
            **info,
        }

    def _lock(self, client: MyClient) -> bool:
        try:
            client.query(f"SET SESSION lock_wait_timeout = {_LOCK_WAIT}")
            client.query("FLUSH TABLES WITH READ LOCK")
            return True
        except MyError:  # no RELOAD privilege, or the lock was not granted in time
            return False

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.target.url,
            "host": self.target.where(),
            "format": "sql",
            **self._info,
            "entries": stored_entries(stored),
        }

    def close(self, ok: bool) -> None:
        if self._producer is not None:
            self._producer.kill()
        if self._client is not None:
            self._client.close()
        self.target.cleanup()

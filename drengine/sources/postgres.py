"""PostgreSQL as a source: ``postgresql://[USER@]HOST[:PORT]/DB`` (or a whole cluster).

Each database is one entry, ``/postgresql/DB.dump``: ``pg_dump`` in custom format
(``-Fc``, so that ``pg_restore --jobs`` can load it in parallel), uncompressed (``-Z0``,
so that drengine's chunking deduplicates tonight's dump against last night's and zstd
compresses it), streamed into the pipeline. A URL without a database backs up every
database of the cluster plus its roles and tablespaces (``/postgresql/globals.sql``, from
``pg_dumpall --globals-only``); ``?globals`` adds those to a one-database backup.

What is recorded for each database, for restore drills, is taken in the dump's own
transaction: a ``psql`` session opens a repeatable-read transaction, exports its snapshot,
and ``pg_dump --snapshot`` reads that same snapshot while the session counts the rows of
every table and computes the schema fingerprint. Both describe exactly the data dumped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import SplitResult

from drengine.core.errors import UsageError
from drengine.sources.base import (
    BackupContext,
    Entry,
    Opener,
    Readable,
    StoredStream,
    StreamSource,
    stored_entries,
)
from drengine.sources.command import stream_node
from drengine.sources.pg_session import PgTarget, Psql, tool, tool_version
from drengine.sources.process import Producer

# Relations whose rows are counted: ordinary tables and materialized views, outside the
# system schemas. query_to_xml runs one count(*) per table inside this one statement.
ROW_COUNTS_SQL = """
SELECT format('%I.%I', n.nspname, c.relname),
       (xpath('/row/c/text()', query_to_xml(
            format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname),
            false, true, '')))[1]::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
 ORDER BY 1
"""

# What the schema is, by name (no OIDs): columns with types, defaults and nullability,
# constraints, indexes, views, triggers and functions of the user's schemas. The same query
# on a restored database gives the same lines when the schema came back whole.
_USER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
SCHEMA_SQL = f"""
SELECT line FROM (
  SELECT format('column %I.%I.%I %s %s %s', n.nspname, c.relname, a.attname,
                format_type(a.atttypid, a.atttypmod),
                CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                coalesce(pg_get_expr(d.adbin, d.adrelid), '')) AS line
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND {_USER}
  UNION ALL
  SELECT format('constraint %I.%I %I %s', n.nspname, c.relname, k.conname,
                pg_get_constraintdef(k.oid))
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER}
  UNION ALL
  SELECT format('index %s', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER}
  UNION ALL
  SELECT format('view %I.%I %s', n.nspname, c.relname, pg_get_viewdef(c.oid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('v', 'm') AND {_USER}
  UNION ALL
  SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND {_USER}
  UNION ALL
  SELECT format('function %I.%I(%s) %s', n.nspname, p.proname,
                pg_get_function_identity_arguments(p.oid), md5(p.prosrc))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER}
) s
ORDER BY line COLLATE "C"
"""


def describe_database(psql: Psql) -> dict[str, Any]:
    """Row counts and schema fingerprint of the session's database, as its transaction
    sees it (restore and restore drills compute the same on the restored copy)."""
    enc = psql.query(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = current_database()"
    )[0]
    counts = {name: int(n) for name, n in psql.query(ROW_COUNTS_SQL)}
    lines = [r[0] for r in psql.query(SCHEMA_SQL)]
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
    return {
        "encoding": enc[0],
        "collate": enc[1],
        "ctype": enc[2],
        "tables": counts,
        "schema_fingerprint": digest,
        "schema_objects": len(lines),
    }


class PostgresSource(StreamSource):
    def __init__(self, target: PgTarget) -> None:
        super().__init__(kind="postgresql")
        self.target = target
        self.databases: list[dict[str, Any]] = []
        self._server: dict[str, str] = {}
        self._producers: list[Producer] = []
        self._sessions: list[Psql] = []

    @classmethod
    def from_url(cls, u: SplitResult) -> PostgresSource:
        target = PgTarget.from_url(u)
        if "/" in target.database:
            raise UsageError(f"{target.url}: the database name must not contain '/'")
        return cls(target)

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        t = self.target
        try:
            admin = Psql(t, t.database or "postgres")
            self._sessions.append(admin)
            version = admin.query(
                "SELECT current_setting('server_version'), current_setting('server_version_num')"
            )[0]
            self._server = {"server_version": version[0], "server_version_num": version[1]}
            if t.database:
                names = [t.database]
            else:
                names = [
                    r[0]
                    for r in admin.query(
                        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                        "ORDER BY datname"
                    )
                ]
            admin.close()
            if t.globals or not t.database:
                path = b"/postgresql/globals.sql"
                yield Entry(path, stream_node(path), open=self._globals)
            for name in names:
                path = os.fsencode(f"/postgresql/{_file_name(name)}.dump")
                yield Entry(path, stream_node(path), open=self._dump_opener(name))
        finally:
            t.cleanup()

    def _globals(self) -> AbstractContextManager[Readable]:
        p = Producer(
            [tool("pg_dumpall"), "--globals-only", "--no-password"],
            env=self.target.env("postgres"),
            what=f"pg_dumpall --globals-only of {self.target.where()}",
        )
        self._producers.append(p)
        return p.stream()

    def _dump_opener(self, database: str) -> Opener:
        @contextmanager
        def opener() -> Iterator[Readable]:
            session = Psql(self.target, database)
            self._sessions.append(session)
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = session.query("SELECT pg_export_snapshot()")[0][0]
            dump = tool("pg_dump")
            p = Producer(
                [dump, "-Fc", "-Z0", "--no-password", f"--snapshot={snapshot}"],
                env=self.target.env(database),
                what=f"pg_dump of database {database!r} on {self.target.where()}",
            )
            self._producers.append(p)
            with p.stream() as out:
                # pg_dump has taken the snapshot once it has written its header; the session
                # counts meanwhile, in the same snapshot, and keeps it alive until the end.
                info = describe_database(session)
                yield out
            p.check()
            session.query("COMMIT")
            session.close()
            self.databases.append(
                {
                    "name": database,
                    "tool": os.path.basename(dump),
                    "tool_version": tool_version(dump),
                    "format": "custom",
                    **info,
                }
            )

        return opener

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        for p in self._producers:
            p.check()
        return {
            "kind": self.kind,
            "url": self.target.url,
            "host": self.target.where(),
            **self._server,
            "databases": sorted(self.databases, key=lambda d: d["name"]),
            "globals": any(s.path == b"/postgresql/globals.sql" for s in stored),
            "entries": stored_entries(stored),
        }

    def close(self, ok: bool) -> None:
        for p in self._producers:
            p.kill()
        for s in self._sessions:
            s.close()
        self.target.cleanup()


def _file_name(database: str) -> str:
    """A database name as a file name (any character is allowed in the name but '/')."""
    return database.replace("/", "_") if database not in (".", "..") else f"_{database}"


__all__ = ["PostgresSource", "describe_database"]

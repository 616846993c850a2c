"""``restore SNAPSHOT --to mysql://…/DB``: load a dump back with the ``mariadb`` client.

Refused before anything is written: a server of the same kind (MariaDB or MySQL) but an
older version than the one dumped, and a database that holds tables (unless ``--clean``:
the dump drops and recreates each of its tables). A missing database is created with the
recorded character set and collation. MySQL commits table by table (DDL commits), so a load
cannot be one transaction: when the stream fails verification at its end or the load
fails, a database this restore created is dropped again, and in a database that was empty
the tables it made are dropped, so nothing is left half-loaded. Afterwards the row counts
are compared with those recorded at backup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import SplitResult

from drengine.core.errors import RestoreError, UsageError
from drengine.sources.base import ChunksOf, LoadOptions
from drengine.sources.my_session import MyClient, MyTarget, quote_ident, quote_literal, tool
from drengine.sources.mysql import describe_database
from drengine.sources.process import feed
from drengine.sources.sql_client import compare_restored


def restore_mysql(
    part: dict[str, Any], u: SplitResult, chunks_of: ChunksOf, opts: LoadOptions
) -> list[dict[str, Any]]:
    target = MyTarget.from_url(u)
    recorded_db = str(part.get("database", ""))
    name = target.database or recorded_db
    if not name:
        raise UsageError("name the database to restore into: mysql://HOST/DB")
    entries = part.get("entries") or [{}]
    path = entries[0].get("path")
    if not isinstance(path, str):
        raise UsageError("the snapshot's MariaDB/MySQL record names no dump")
    try:
        admin = MyClient(target, database="")
        try:
            _check_version(admin, part, target)
            created, was_empty = _prepare(admin, target, name, part, opts.clean)
        finally:
            admin.close()
        try:
            with opts.phases.span("load"):
                _load(target, name, chunks_of(path))
        except BaseException:
            _undo(target, name, created, was_empty)
            raise
        with opts.phases.span("verify"):
            return [_compare(target, name, part)]
    finally:
        target.cleanup()


def _version(text: str) -> tuple[str, tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", text)
    nums = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return ("MariaDB" if "mariadb" in text.lower() else "MySQL"), nums


def _check_version(admin: MyClient, part: dict[str, Any], target: MyTarget) -> None:
    have_kind, have = _version(admin.query("SELECT VERSION()")[0][0])
    dumped_kind, dumped = _version(str(part.get("server_version", "")))
    if dumped_kind == have_kind and have < dumped:
        raise RestoreError(
            f"the snapshot holds a dump of {dumped_kind} {dumped[0]}.{dumped[1]}; the server at "
            f"{target.where()} runs {have_kind} {have[0]}.{have[1]}, an older version: "
            f"restore into {dumped_kind} {dumped[0]}.{dumped[1]} or newer"
        )


def _prepare(
    admin: MyClient, target: MyTarget, name: str, part: dict[str, Any], clean: bool
) -> tuple[bool, bool]:
    """(created the database, it held no tables before)."""
    lit = quote_literal(name)
    exists = admin.query(
        f"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {lit}"
    )
    if exists[0][0] == "0":
        create = f"CREATE DATABASE {quote_ident(name)}"
        if part.get("charset"):
            create += f" CHARACTER SET {quote_literal(str(part['charset']))}"
        if part.get("collation"):
            create += f" COLLATE {quote_literal(str(part['collation']))}"
        admin.query(create)
        return True, True
    n = int(
        admin.query(f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit}")[
            0
        ][0]
    )
    if n and not clean:
        raise RestoreError(
            f"database {name!r} on {target.where()} is not empty ({n} tables or views): "
            "restore into a new or empty database, or add --clean to replace the tables "
            "the dump holds"
        )
    return False, n == 0


def _load(target: MyTarget, name: str, chunks: Iterable[bytes]) -> None:
    argv = [tool("mariadb", "mysql"), *target.args(), f"--database={name}", "--batch",
            "--binary-mode", "--default-character-set=utf8mb4"]  # fmt: skip
    code, err = feed(argv, chunks)
    if code != 0:
        raise RestoreError(
            f"loading the dump into database {name!r} on {target.where()} failed "
            f"(status {code}): " + (" / ".join(err[-3:]) or "no message")
        )


def _undo(target: MyTarget, name: str, created: bool, was_empty: bool) -> None:
    """Leave nothing half-loaded behind a failed load (best effort: the error is reported)."""
    try:
        c = MyClient(target, database="")
        try:
            if created:
                c.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
            elif was_empty:
                rows = c.query(
                    "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
                    f"WHERE TABLE_SCHEMA = {quote_literal(name)}"
                )
                for table, kind in rows:
                    what = "VIEW" if kind == "VIEW" else "TABLE"
                    c.query(f"DROP {what} IF EXISTS {quote_ident(name)}.{quote_ident(table)}")
        finally:
            c.close()
    except Exception:
        return


def _compare(target: MyTarget, name: str, part: dict[str, Any]) -> dict[str, Any]:
    c = MyClient(target, database="")
    try:
        now = describe_database(c, name)
    finally:
        c.close()
    return compare_restored(name, part, now)

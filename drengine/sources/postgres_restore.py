"""``restore SNAPSHOT --to postgresql://…/DB``: load a dump back with ``pg_restore``.

Refused, with the reason, before anything is written: a server of an older major version
than the one dumped (pg_restore cannot load into it), and a database that holds objects
already (unless ``--clean``). A database that does not exist is created. With one job the
verified stream goes straight into ``pg_restore --single-transaction``; the last blob is
written only after the whole stream's hash matched, so a damaged dump loads nothing. With
``--jobs N`` the dump is first written, verified, to a private temporary file (parallel
restore needs a seekable file). Afterwards the row counts of the restored tables are
compared with those recorded at backup.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

from drengine.core.errors import RestoreError, UsageError
from drengine.sources.base import ChunksOf, LoadOptions
from drengine.sources.pg_session import PgTarget, Psql, quote_ident, quote_literal, tool
from drengine.sources.postgres import describe_database
from drengine.sources.process import feed
from drengine.sources.sql_client import compare_restored

_USER_OBJECTS_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""


def plan(part: dict[str, Any], u: SplitResult) -> tuple[PgTarget, list[tuple[dict[str, Any], str]]]:
    """The target and (recorded database, database to restore into) pairs."""
    target = PgTarget.from_url(u)
    dbs = [d for d in part.get("databases", []) if isinstance(d, dict) and "name" in d]
    if not dbs:
        raise UsageError("the snapshot's PostgreSQL record names no database dump")
    if not target.database:
        return target, [(d, str(d["name"])) for d in dbs]
    if len(dbs) == 1:
        return target, [(dbs[0], target.database)]
    named = [d for d in dbs if d["name"] == target.database]
    if not named:
        raise UsageError(
            f"the snapshot holds dumps of {', '.join(str(d['name']) for d in dbs)}; name one "
            "of them in the URL, or give no database to restore them all"
        )
    return target, [(named[0], target.database)]


def restore_databases(
    part: dict[str, Any],
    u: SplitResult,
    chunks_of: ChunksOf,
    opts: LoadOptions,
) -> list[dict[str, Any]]:
    target, pairs = plan(part, u)
    try:
        admin = Psql(target, "postgres")
        try:
            _check_version(admin, part, target)
            for _, name in pairs:
                _refuse_non_empty(admin, target, name, opts.clean)
        finally:
            admin.close()
        results = []
        for record, name in pairs:
            created = _create(target, name, record)
            try:
                with opts.phases.span("load"):
                    chunks = chunks_of(f"/postgresql/{record['name']}.dump")
                    _pg_restore(target, name, chunks, opts)
            except BaseException:
                if created:  # leave nothing half-loaded: the database this restore made goes
                    _drop(target, name)
                raise
            with opts.phases.span("verify"):
                results.append(_compare(target, name, record))
        return results
    finally:
        target.cleanup()


def _check_version(admin: Psql, part: dict[str, Any], target: PgTarget) -> None:
    have = int(admin.query("SELECT current_setting('server_version_num')")[0][0])
    dumped = int(str(part.get("server_version_num", "0")) or 0)
    if dumped and have // 10000 < dumped // 10000:
        raise RestoreError(
            f"the snapshot holds a dump of PostgreSQL {dumped // 10000}; the server at "
            f"{target.where()} runs {have // 10000}, an older major version that cannot load "
            f"it: restore into a PostgreSQL {dumped // 10000} server or newer"
        )


def _exists(admin: Psql, name: str) -> bool:
    return bool(admin.query(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"))


def _create(target: PgTarget, name: str, record: dict[str, Any]) -> bool:
    """Create the database if it is missing; whether this did."""
    admin = Psql(target, "postgres")
    try:
        if _exists(admin, name):
            return False
        # With the encoding and locale the database had: text that is not UTF-8 (a
        # SQL_ASCII database) must not be converted or refused on the way back.
        create = f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"
        for key, option in (
            ("encoding", "ENCODING"),
            ("collate", "LC_COLLATE"),
            ("ctype", "LC_CTYPE"),
        ):
            if isinstance(record.get(key), str) and record[key]:
                create += f" {option} {quote_literal(record[key])}"
        admin.query(create)
        return True
    finally:
        admin.close()


def _drop(target: PgTarget, name: str) -> None:
    """Best effort: the restore's own error is the one reported."""
    try:
        admin = Psql(target, "postgres")
        try:
            admin.query(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        finally:
            admin.close()
    except Exception:
        return


def _refuse_non_empty(admin: Psql, target: PgTarget, name: str, clean: bool) -> None:
    if clean or not _exists(admin, name):
        return
    s = Psql(target, name)
    try:
        n = int(s.query(_USER_OBJECTS_SQL)[0][0])
    finally:
        s.close()
    if n:
        raise RestoreError(
            f"database {name!r} on {target.where()} is not empty ({n} tables, views or "
            "sequences): restore into a new or empty database, or add --clean to replace "
            "the objects the dump holds"
        )


def _pg_restore(target: PgTarget, name: str, chunks: Iterable[bytes], opts: LoadOptions) -> None:
    argv = [tool("pg_restore"), "--no-password", "--exit-on-error", "-d", name]
    if opts.clean:
        argv += ["--clean", "--if-exists"]
    if opts.no_owner:
        argv += ["--no-owner", "--no-acl"]
    env = target.env(name)
    if opts.jobs > 1:
        tmp = Path(tempfile.mkdtemp(prefix="drengine-restore-", dir=opts.tmp_dir))
        try:
            dump = tmp / "db.dump"
            with open(dump, "wb") as f:
                for c in chunks:
                    f.write(c)
            _run([*argv, f"--jobs={opts.jobs}", str(dump)], env, None, name, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    _run([*argv, "--single-transaction"], env, chunks, name, target)


def _run(
    argv: list[str],
    env: dict[str, str],
    chunks: Iterable[bytes] | None,
    name: str,
    target: PgTarget,
) -> None:
    code, err = feed(argv, chunks, env)
    if code != 0:
        raise RestoreError(
            f"pg_restore into database {name!r} on {target.where()} failed (status {code}): "
            + (" / ".join(e.removeprefix("pg_restore: ") for e in err[-3:]) or "no message")
        )


def _compare(target: PgTarget, name: str, record: dict[str, Any]) -> dict[str, Any]:
    s = Psql(target, name)
    try:
        now = describe_database(s)
    finally:
        s.close()
    return compare_restored(name, record, now)


__all__ = ["restore_databases"]

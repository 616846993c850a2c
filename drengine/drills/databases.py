"""Drill a database dump: load it where production is not, then prove the copy usable.

PostgreSQL and MariaDB dumps are loaded by the same code as ``restore --to`` (every blob
authenticated, the whole stream's hashes checked before the load can commit), into a
throwaway server started in the sandbox (no TCP port, removed afterwards) or, when the
policy names one (``drill.postgresql`` / ``drill.mysql``), into scratch databases on that
server, named ``drengine_drill_<random>_<name>`` and dropped afterwards. Then:

- row counts and schema fingerprint against those recorded at backup (in the dump's own
  snapshot of the data, so they must match exactly);
- PostgreSQL: ``pg_amcheck --heapallindexed`` (every heap page and every index entry);
  MariaDB: ``CHECK TABLE`` on every table;
- the policy's own checks: SQL with the result it must give.

Each check is recorded as passed or failed with what it found; a failure never stops the
other checks of the drill, so the report lists everything that is wrong.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drengine.core.errors import Cancelled, DrengineError, DrillFailed
from drengine.core.phases import Phases
from drengine.drills.sandbox import Sandbox
from drengine.policy.model import Drill, DrillCheck
from drengine.sources.base import LoadOptions

Check = dict[str, Any]  # {"kind", "check", "target", "passed", "detail"}
ChunksOf = Callable[[str], Iterator[bytes]]


def check(kind: str, name: str, target: str, passed: bool, detail: str) -> Check:
    return {"kind": kind, "check": name, "target": target, "passed": passed, "detail": detail}


def sql_detail(got: str, expect: str, ok: bool) -> str:
    return f"gave {got!r}" + ("" if ok else f", expected {expect!r}")


def _scratch_name(name: str) -> str:
    return f"drengine_drill_{secrets.token_hex(3)}_{name}"[:63]


def _with_db(url: str, db: str) -> str:
    u = urlsplit(url)
    return u._replace(path="/" + db).geturl()


def result_text(rows: list[list[str]]) -> str:
    return "\n".join("\t".join(r) for r in rows).strip()


DB_KINDS = ("postgresql", "mysql", "sqlite")


def check_kind(c: DrillCheck, kinds: set[str]) -> str | None:
    """The database kind a policy check runs on: its own, else the snapshot's one database
    kind; None when the snapshot has no such database (or several kinds to choose from)."""
    dbs = kinds & set(DB_KINDS)
    if c.kind is not None:
        return c.kind if c.kind in dbs else None
    return next(iter(dbs)) if len(dbs) == 1 else None


def own_checks(drill: Drill | None, kind: str, kinds: set[str]) -> list[DrillCheck]:
    if drill is None:
        return []
    return [c for c in drill.checks if check_kind(c, kinds) == kind]


def unrunnable_checks(drill: Drill | None, kinds: set[str]) -> list[Check]:
    """Policy checks that match no database of the snapshot: failed, never silently left
    out."""
    out = []
    for c in drill.checks if drill else []:
        if check_kind(c, kinds) is None:
            held = ", ".join(sorted(kinds & set(DB_KINDS))) or "no database"
            want = f"a {c.kind} database" if c.kind else "one database kind (give kind:)"
            out.append(check(c.kind or "sql", f"SQL: {c.sql}", "policy check", False,
                             f"not run: it needs {want}; the snapshot holds {held}"))  # fmt: skip
    return out


def _loaded(kind: str, done: dict[str, Any], shown: str) -> list[Check]:
    out = [
        check(kind, "row counts", shown, True,
              f"{done['tables']} tables, {done['rows']} rows, as recorded at backup")
    ]  # fmt: skip
    same = bool(done.get("schema_matches"))
    out.append(
        check(kind, "schema fingerprint", shown, same,
              "matches the one recorded at backup" if same
              else "differs from the one recorded at backup")
    )  # fmt: skip
    return out


def _reached(url: str, sql: str, data: Path) -> None:
    """``DrillFailed`` unless the server ``url`` reaches keeps its data in ``data``: a
    drill must load into its own throwaway server, never one the environment points to."""
    if url.startswith("mysql"):
        rows = _my_query(url, sql)
    else:
        from drengine.sources.pg_session import PgTarget, Psql

        s = Psql(PgTarget.from_url(urlsplit(url)), "postgres")
        try:
            rows = s.query(sql)
        finally:
            s.close()
    got = rows[0][0] if rows and rows[0] else ""
    if os.path.realpath(got.rstrip("/")) != os.path.realpath(data):
        raise DrillFailed(
            f"the sandbox URL reached a server whose data is in {got!r}, not the sandbox's "
            f"{data}: refusing to load anything into it"
        )


# ---- PostgreSQL ---------------------------------------------------------------------------


def drill_postgresql(
    part: dict[str, Any],
    chunks_of: ChunksOf,
    sandbox: Sandbox,
    drill: Drill | None,
    kinds: set[str],
    phases: Phases,
) -> list[Check]:
    from drengine.drills.pg_sandbox import PgSandbox
    from drengine.sources.postgres_restore import restore_databases

    records = [d for d in part.get("databases", []) if isinstance(d, dict) and "name" in d]
    scratch = drill.postgresql if drill else None
    server: PgSandbox | None = None
    checks: list[Check] = []
    made: list[str] = []
    try:
        if scratch:
            base_url = scratch
        else:
            major = int(str(part.get("server_version_num") or 0)) // 10000
            with phases.span("sandbox"):
                server = PgSandbox(sandbox.dir("db"), major, drill.sandbox_user if drill else None)
                try:
                    server.start()
                    _reached(server.url(), "SELECT current_setting('data_directory')", server.data)
                except DrengineError as e:
                    return [check("postgresql", "sandbox server", "throwaway", False, str(e))]
            base_url = server.url()
            if part.get("globals"):
                checks.append(_pg_globals(base_url, chunks_of, phases))
        for record in records:
            name = str(record["name"])
            db = _scratch_name(name) if scratch else name
            url = _with_db(base_url, db)
            shown = name if db == name else f"{name} (as {db})"
            one = {**part, "databases": [record]}
            opts = LoadOptions(no_owner=bool(scratch) or not part.get("globals"), phases=phases)
            try:
                made.append(db)
                done = restore_databases(one, urlsplit(url), chunks_of, opts)[0]
            except Cancelled:
                raise
            except DrengineError as e:
                tables = ", ".join(sorted(record.get("tables", {}))[:10]) or "no tables"
                checks.append(check("postgresql", "restore", shown, False,
                                    f"{e} (affected tables: {tables})"))  # fmt: skip
                continue
            checks += _loaded("postgresql", done, shown)
            with phases.span("verify"):
                checks.append(_pg_amcheck(url, shown))
                for c in own_checks(drill, "postgresql", kinds):
                    if c.database in (None, name):
                        checks.append(_pg_sql(url, shown, c))
    finally:
        if server is not None:
            with phases.span("sandbox"):
                server.stop()
        elif scratch:
            _pg_drop(scratch, made)
    return checks


def _pg_globals(url: str, chunks_of: ChunksOf, phases: Phases) -> Check:
    from drengine.sources.pg_session import PgTarget, tool
    from drengine.sources.process import feed

    target = PgTarget.from_url(urlsplit(url))
    argv = [tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", "postgres"]
    try:
        with phases.span("load"):
            code, err = feed(argv, chunks_of("/postgresql/globals.sql"), target.env("postgres"))
    except Cancelled:
        raise
    except DrengineError as e:
        return check("postgresql", "roles and tablespaces", "globals", False, str(e))
    failed = [e for e in err if "ERROR" in e]
    detail = "loaded" + (
        f"; {len(failed)} statements failed (roles that exist already, tablespace "
        f"directories this host lacks), first: {failed[0]}"
        if failed
        else ""
    )
    return check("postgresql", "roles and tablespaces", "globals", code == 0, detail)


def _pg_amcheck(url: str, shown: str) -> Check:
    from drengine.sources.pg_session import PgTarget, tool

    target = PgTarget.from_url(urlsplit(url))
    try:
        argv = [tool("pg_amcheck"), "--no-password", "--install-missing", "--heapallindexed"]
    except DrengineError:
        # A check that did not run proves nothing: it must not read as passed.
        why = "not run: pg_amcheck (PostgreSQL 14 or newer) is not installed here"
        return check("postgresql", "pg_amcheck", shown, False, why)
    out = subprocess.run(
        [*argv, "-d", target.database], env=target.env(), capture_output=True, text=True
    )
    if out.returncode == 0:
        return check("postgresql", "pg_amcheck", shown, True,
                     "every table and index page checked, no corruption")  # fmt: skip
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return check("postgresql", "pg_amcheck", shown, False,
                 f"status {out.returncode}: " + " / ".join(lines[:3]))  # fmt: skip


def _pg_sql(url: str, shown: str, c: DrillCheck) -> Check:
    from drengine.sources.pg_session import PgTarget, Psql

    target = PgTarget.from_url(urlsplit(url))
    try:
        s = Psql(target, target.database)
        try:
            got = result_text(s.query(c.sql))
        finally:
            s.close()
    except DrengineError as e:
        return check("postgresql", f"SQL: {c.sql}", shown, False, str(e))
    ok = got == c.expect.strip()
    return check("postgresql", f"SQL: {c.sql}", shown, ok, sql_detail(got, c.expect, ok))


def _pg_drop(url: str, names: list[str]) -> None:
    from drengine.sources.pg_session import PgTarget, Psql, quote_ident

    target = PgTarget.from_url(urlsplit(url))
    try:
        s = Psql(target, "postgres")
        try:
            for n in names:
                s.query(f"DROP DATABASE IF EXISTS {quote_ident(n)} WITH (FORCE)")
        finally:
            s.close()
    except DrengineError:
        return  # reported by the drill's own errors; nothing more to do here
    finally:
        target.cleanup()


# ---- MariaDB / MySQL ----------------------------------------------------------------------


def drill_mysql(
    part: dict[str, Any],
    chunks_of: ChunksOf,
    sandbox: Sandbox,
    drill: Drill | None,
    kinds: set[str],
    phases: Phases,
) -> list[Check]:
    from drengine.drills.my_sandbox import MySandbox
    from drengine.sources.mysql_restore import restore_mysql

    name = str(part.get("database", ""))
    scratch = drill.mysql if drill else None
    server: MySandbox | None = None
    db = _scratch_name(name) if scratch else name
    shown = name if db == name else f"{name} (as {db})"
    checks: list[Check] = []
    try:
        if scratch:
            url = _with_db(scratch, db)
        else:
            with phases.span("sandbox"):
                server = MySandbox(
                    sandbox.dir("db"), _version(part), drill.sandbox_user if drill else None
                )
                try:
                    server.start()
                    _reached(server.url(), "SELECT @@datadir", server.data)
                except DrengineError as e:
                    return [check("mysql", "sandbox server", "throwaway", False, str(e))]
            url = server.url(db)
        try:
            done = restore_mysql(part, urlsplit(url), chunks_of, LoadOptions(phases=phases))[0]
        except Cancelled:
            raise
        except DrengineError as e:
            tables = ", ".join(sorted(part.get("tables", {}))[:10]) or "no tables"
            return [check("mysql", "restore", shown, False, f"{e} (affected tables: {tables})")]
        checks += _loaded("mysql", done, shown)
        with phases.span("verify"):
            checks.append(_check_table(url, shown, sorted(part.get("tables", {}))))
            for c in own_checks(drill, "mysql", kinds):
                checks.append(_my_sql(url, shown, c))
    finally:
        if server is not None:
            with phases.span("sandbox"):
                server.stop()
        elif scratch:
            _my_drop(scratch, db)
    return checks


def _version(part: dict[str, Any]) -> tuple[int, int]:
    try:
        major, minor = str(part.get("server_version", "0.0")).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return 0, 0


def _my_query(url: str, sql: str) -> list[list[str]]:
    from drengine.sources.my_session import MyClient, MyTarget

    target = MyTarget.from_url(urlsplit(url))
    try:
        c = MyClient(target)
        try:
            return c.query(sql)
        finally:
            c.close()
    finally:
        target.cleanup()


def _check_table(url: str, shown: str, tables: list[str]) -> Check:
    from drengine.sources.my_session import quote_ident

    if not tables:
        return check("mysql", "CHECK TABLE", shown, True, "no tables to check")
    try:
        rows = _my_query(url, "CHECK TABLE " + ", ".join(quote_ident(t) for t in tables))
    except DrengineError as e:
        return check("mysql", "CHECK TABLE", shown, False, str(e))
    bad = [r for r in rows if len(r) >= 4 and r[2] in ("error", "status") and r[3] != "OK"]
    if bad:
        return check("mysql", "CHECK TABLE", shown, False,
                     "; ".join(f"{r[0]}: {r[3]}" for r in bad[:5]))  # fmt: skip
    return check("mysql", "CHECK TABLE", shown, True, f"{len(tables)} tables OK")


def _my_sql(url: str, shown: str, c: DrillCheck) -> Check:
    try:
        got = result_text(_my_query(url, c.sql))
    except DrengineError as e:
        return check("mysql", f"SQL: {c.sql}", shown, False, str(e))
    ok = got == c.expect.strip()
    return check("mysql", f"SQL: {c.sql}", shown, ok, sql_detail(got, c.expect, ok))


def _my_drop(url: str, db: str) -> None:
    from drengine.sources.my_session import quote_ident

    try:
        _my_query(url, f"DROP DATABASE IF EXISTS {quote_ident(db)}")
    except DrengineError:
        return

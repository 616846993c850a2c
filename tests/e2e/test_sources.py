"""Sources other than files, through the command line: PostgreSQL (a real cluster the test
starts), commands and standard input, and the consistency hooks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Repo, assert_one_line_error
from pg_server import PgCluster

# Awkward content beside pgbench's tables: several schemas, bytea, json/jsonb, arrays, a
# large object, a view and a trigger.
AWKWARD_SQL = """
CREATE SCHEMA shop;
CREATE TABLE shop.items (id serial PRIMARY KEY, name text NOT NULL, photo bytea,
                         attrs jsonb, raw json, tags text[], price numeric(10,2));
INSERT INTO shop.items (name, photo, attrs, raw, tags, price)
  SELECT 'item ' || g || E'\\ttab\\nnewline ''quote'' \\\\ back',
         decode(md5(g::text) || md5((g * 7)::text), 'hex') || '\\x00ff00'::bytea,
         jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x', null)),
         ('{"k": ' || g || ', "dup": 1, "dup": 2}')::json,
         ARRAY['a', 'b,c', NULL, g::text], g * 1.25
    FROM generate_series(1, 3000) g;
CREATE VIEW shop.cheap AS SELECT id, name FROM shop.items WHERE price < 100;
CREATE TABLE shop.audit (id serial, item int, at timestamptz DEFAULT now());
CREATE FUNCTION shop.log_item() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO shop.audit (item) VALUES (NEW.id); RETURN NEW; END$$;
CREATE TRIGGER items_audit AFTER INSERT ON shop.items FOR EACH ROW EXECUTE FUNCTION shop.log_item();
INSERT INTO shop.items (name) VALUES ('after the trigger');
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 10000), 'UTF8'));
"""

TABLE_CHECKSUMS = """
SELECT string_agg(format('%I.%I', schemaname, tablename), ',' ORDER BY 1)
  FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def checksums(pg: PgCluster, db: str) -> dict[str, str]:
    """md5 of each table's rows in order, and of the large objects."""
    tables = pg.psql(db, TABLE_CHECKSUMS).split(",")
    out = {
        t: pg.psql(
            db, f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
        )
        for t in tables
    }
    out["large objects"] = pg.psql(
        db,
        "SELECT md5(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY oid)) "
        "FROM pg_largeobject_metadata",
    )
    return out


@pytest.fixture(scope="module")
def app_db(pg: PgCluster) -> str:
    pg.psql("postgres", "CREATE DATABASE app")
    pg.pgbench_init("app", 2)
    pg.psql("app", AWKWARD_SQL)
    return "app"


def test_postgres_backup_records_and_restores_table_by_table(
    repo: Repo, pg: PgCluster, app_db: str
) -> None:
    s = repo.backup("--source", pg.url(app_db), env_extra=pg.env())
    snap = repo.snapshots()[-1]
    assert snap["source"] == "postgresql" and snap["id"] == s["snapshot_id"]
    part = snap["sources"][0]
    db = part["databases"][0]
    assert part["server_version_num"].startswith(pg.psql("postgres", "SHOW server_version_num")[:2])
    assert db["tables"]["public.pgbench_accounts"] == 200000
    assert db["tables"]["shop.items"] == 3001 and db["tables"]["shop.audit"] == 1
    assert db["tool"] == "pg_dump" and len(db["schema_fingerprint"]) == 64
    assert "PASSWORD" not in repo.run("snapshots", "--json").out.upper().replace(
        "PASSWORD_FILE", ""
    )
    # The stream's SHA-256 is what sha256sum computes of the dump.
    dump = repo.run("dump", "latest").stdout
    assert hashlib.sha256(dump).hexdigest() == part["entries"][0]["sha256"]
    assert dump.startswith(b"PGDMP")
    restored = repo.run(
        "restore", "latest", "--to", pg.url("app_copy"), "--json", env_extra=pg.env()
    )
    assert restored.json()["loaded"][0]["schema_matches"] is True
    assert checksums(pg, "app_copy") == checksums(pg, app_db)
    # In parallel, from a verified temporary file.
    repo.run("restore", "latest", "--to", pg.url("app_par"), "--jobs", "2", env_extra=pg.env())
    assert checksums(pg, "app_par") == checksums(pg, app_db)


def test_postgres_restore_refuses_a_non_empty_database_unless_clean(
    repo: Repo, pg: PgCluster, app_db: str
) -> None:
    repo.backup("--source", pg.url(app_db), env_extra=pg.env())
    r = repo.run("restore", "latest", "--to", pg.url(app_db), check_code=1, env_extra=pg.env())
    assert "not empty" in assert_one_line_error(r) and "--clean" in r.err
    repo.run("restore", "latest", "--to", pg.url(app_db), "--clean", env_extra=pg.env())


def test_postgres_restore_refuses_an_older_server(pg: PgCluster) -> None:
    from urllib.parse import urlsplit

    from drengine.core.errors import RestoreError
    from drengine.sources.pg_session import PgTarget, Psql
    from drengine.sources.postgres_restore import _check_version

    target = PgTarget.from_url(urlsplit(pg.url("postgres")))
    import os

    os.environ["PGPASSWORD"] = pg.env()["PGPASSWORD"]
    s = Psql(target, "postgres")
    try:
        with pytest.raises(RestoreError, match="older major version"):
            _check_version(s, {"server_version_num": "990001"}, target)
        _check_version(s, {"server_version_num": "100001"}, target)  # older dumps load
    finally:
        s.close()
        del os.environ["PGPASSWORD"]


def test_second_dump_after_a_small_change_adds_little(repo: Repo, pg: PgCluster) -> None:
    pg.psql("postgres", "CREATE DATABASE bench")
    pg.pgbench_init("bench", 10)  # a million accounts, a dump of about 100 MB
    first = repo.backup("--source", pg.url("bench"), env_extra=pg.env())
    # 1% of the accounts, one contiguous range (as recent rows are what usually changes).
    pg.psql("bench", "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 10000")
    second = repo.backup("--source", pg.url("bench"), env_extra=pg.env())
    assert second["bytes_total"] > 100_000_000
    # Chunks of about 1 MiB change where the rows left and where they landed (the end of
    # the table), plus the dump's header: 10-13% measured (where the new row versions
    # land varies); a dump that did not deduplicate would add 100%.
    assert second["bytes_new"] < 0.2 * second["bytes_total"], (first, second)


def test_cluster_backup_has_every_database_and_globals(
    repo: Repo, pg: PgCluster, app_db: str
) -> None:
    repo.backup("--source", pg.url(), env_extra=pg.env())
    snap = repo.snapshots()[-1]
    assert {"/postgresql/globals.sql", "/postgresql/app.dump", "/postgresql/postgres.dump"} <= set(
        snap["paths"]
    )
    globals_sql = repo.run("dump", "latest", "/postgresql/globals.sql").out
    assert "CREATE ROLE drtest" in globals_sql


@pytest.mark.parametrize(
    ("url", "env", "code", "words"),
    [
        ("{app}", {"PGPASSWORD": "wrong"}, 13, "password authentication failed"),
        ("{nope}", None, 13, 'database "nope" does not exist'),
        ("{down}", None, 13, "Connection refused"),
        ("postgresql://u:secret@127.0.0.1:1/x", None, 2, "visible to every user in ps"),
        ("postgresql://127.0.0.1/x?bogus=1", None, 2, "unknown option 'bogus'"),
        (
            "{app}?password_file=/nonexistent/pw",
            {"PGPASSWORD": None},
            2,
            "cannot read the password file",
        ),
    ],
)
def test_postgres_bad_input_is_one_sentence_and_no_snapshot(
    repo: Repo,
    pg: PgCluster,
    app_db: str,
    url: str,
    env: dict[str, str | None] | None,
    code: int,
    words: str,
) -> None:
    url = url.format(
        app=pg.url(app_db), nope=pg.url("nope"), down=f"postgresql://x@127.0.0.1:{pg.port + 1}/x"
    )
    r = repo.run("backup", "--source", url, check_code=code, env_extra={**pg.env(), **(env or {})})
    assert words in assert_one_line_error(r)
    assert "secret" not in r.err
    assert repo.snapshots() == []


def test_password_file_in_the_url(repo: Repo, pg: PgCluster, app_db: str, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("pg test secret\n")
    repo.backup("--source", f"{pg.url(app_db)}?password_file={pw}", env_extra={"PGPASSWORD": None})
    assert len(repo.snapshots()) == 1


def test_command_output_is_stored_with_its_hash(repo: Repo) -> None:
    repo.backup("--stdin-from-command", "--stdin-filename", "nums.txt", "--", "seq", "1", "100000")
    snap = repo.snapshots()[-1]
    assert snap["paths"] == ["/nums.txt"] and snap["source"] == "command"
    want = "".join(f"{i}\n" for i in range(1, 100001)).encode()
    assert snap["sources"][0]["entries"][0]["sha256"] == hashlib.sha256(want).hexdigest()
    assert repo.run("dump", "latest").stdout == want


def test_a_command_that_fails_halfway_records_no_snapshot(repo: Repo) -> None:
    r = repo.run(
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "seq 1 50000; echo broken >&2; exit 3",
        check_code=13,
    )
    msg = assert_one_line_error(r)
    assert "exited with status 3" in msg and "broken" in msg
    assert repo.snapshots() == []


def test_stdin(repo: Repo) -> None:
    repo.backup("--stdin", "--stdin-filename", "db/dump.sql", input=b"hello\n" * 1000)
    assert repo.run("dump", "latest", "/db/dump.sql").stdout == b"hello\n" * 1000


def test_hooks_run_around_the_backup_and_after_a_failure(repo: Repo, tmp_path: Path) -> None:
    log = tmp_path / "log"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    repo.backup(
        str(src),
        "--before",
        f"echo before >> {log}",
        "--after",
        f'echo "after $DRENGINE_RESULT" >> {log}',
    )
    assert log.read_text() == "before\nafter success\n"
    r = repo.run(
        "backup",
        str(src),
        "--before",
        "exit 7",
        "--after",
        f'echo "after $DRENGINE_RESULT" >> {log}',
        check_code=14,
    )
    assert "before-hook 'exit 7' exited with status 7" in assert_one_line_error(r)
    assert log.read_text().endswith("after failure\n")
    assert len(repo.snapshots()) == 1


def test_text_that_is_not_utf8_survives(repo: Repo, pg: PgCluster) -> None:
    # SQL_ASCII stores text bytes unchecked: whatever a legacy application wrote.
    pg.psql(
        "postgres",
        "CREATE DATABASE legacy ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0",
    )
    pg.psql("legacy", "CREATE TABLE t (id int PRIMARY KEY, s text)")
    pg.psql(
        "legacy",
        "INSERT INTO t SELECT g, E'caf\\xe9 \\xff\\xfe ' || g FROM generate_series(1, 500) g",
    )
    assert pg.psql("legacy", "SELECT octet_length(s) FROM t WHERE id = 1") == "9"
    repo.backup("--source", pg.url("legacy"), env_extra=pg.env())
    repo.run("restore", "latest", "--to", pg.url("legacy_copy"), env_extra=pg.env())
    assert checksums(pg, "legacy_copy") == checksums(pg, "legacy")
    assert pg.psql("legacy_copy", "SHOW server_encoding") == "SQL_ASCII"


def test_a_damaged_dump_loads_nothing(repo: Repo, pg: PgCluster, app_db: str) -> None:
    repo.backup("--source", pg.url(app_db), env_extra=pg.env())
    packs = sorted((repo.path / "data").rglob("*"), key=lambda p: p.stat().st_size)
    victim = packs[-1]  # the largest pack: dump data
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    for extra in ((), ("--jobs", "2")):
        r = repo.run(
            "restore", "latest", "--to", pg.url("damaged"), *extra, check_code=1, env_extra=pg.env()
        )
        assert "authentication" in assert_one_line_error(r) or "hash" in r.err
        assert (
            pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'damaged'") == "0"
        )


def test_paths_and_sources_mix_in_one_snapshot(
    repo: Repo, pg: PgCluster, app_db: str, tmp_path: Path
) -> None:
    src = tmp_path / "etc"
    src.mkdir()
    (src / "app.conf").write_text("port = 5432\n")
    # (With --stdin-from-command every argument is the command, as in restic: --stdin here.)
    repo.backup(
        str(src), "--source", pg.url(app_db), "--stdin", "--stdin-filename", "notes.txt",
        env_extra=pg.env(), input=b"notes\n",
    )  # fmt: skip
    snap = repo.snapshots()[-1]
    assert snap["source"] == "mixed"
    assert [p["kind"] for p in snap["sources"]] == ["files", "postgresql", "stdin"]
    assert set(snap["paths"]) == {str(src), "/postgresql/app.dump", "/notes.txt"}
    target = tmp_path / "restored"
    repo.restore("latest", target)
    assert (target / str(src).lstrip("/") / "app.conf").read_text() == "port = 5432\n"
    assert (target / "postgresql" / "app.dump").read_bytes().startswith(b"PGDMP")
    repo.run("restore", "latest", "--to", pg.url("mixed_copy"), env_extra=pg.env())
    assert checksums(pg, "mixed_copy") == checksums(pg, app_db)
    r = repo.run("dump", "latest", check_code=2)
    assert "holds 2 streams" in assert_one_line_error(r)


def test_no_password_on_any_command_line(
    repo: Repo, pg: PgCluster, app_db: str, tmp_path: Path
) -> None:
    """Wrappers in front of the PostgreSQL tools record every command line drengine runs."""
    log = tmp_path / "argv.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("psql", "pg_dump", "pg_dumpall", "pg_restore"):
        w = bindir / tool
        w.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {pg.bin / tool} "$@"\n')
        w.chmod(0o755)
    pw = tmp_path / "pw"
    pw.write_text("pg test secret\n")
    env = {"PGPASSWORD": None, "PATH": f"{bindir}:/usr/bin:/bin"}
    repo.backup("--source", f"{pg.url(app_db)}?globals&password_file={pw}", env_extra=env)
    repo.run(
        "restore", "latest", "--to", f"{pg.url('argv_copy')}?password_file={pw}", env_extra=env
    )
    lines = log.read_text().splitlines()
    assert {ln.split()[0] for ln in lines} == {"psql", "pg_dump", "pg_dumpall", "pg_restore"}
    assert not any("secret" in ln for ln in lines)
    assert "secret" not in repo.run("snapshots", "--json").out


def test_credentials_from_pgpass(repo: Repo, pg: PgCluster, app_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    pgpass = home / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{pg.port}:*:drtest:pg test secret\n")
    pgpass.chmod(0o600)
    repo.backup("--source", pg.url(app_db), env_extra={"PGPASSWORD": None, "HOME": str(home)})
    assert len(repo.snapshots()) == 1

"""Drills of database snapshots against real servers: PostgreSQL into a throwaway cluster and
into a scratch database, a damaged dump, and MariaDB into a throwaway server."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import CLI, PASSWORD, Repo
from my_server import MariaDB
from pg_server import PgCluster

APP_SQL = """
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, balance numeric(12,2));
INSERT INTO accounts (name, balance) SELECT 'a' || g, g * 1.5 FROM generate_series(1, 5000) g;
CREATE INDEX accounts_name ON accounts (name);
CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 1000;
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.psql("postgres", "CREATE DATABASE app")
        cluster.psql("app", APP_SQL)
        yield cluster
    finally:
        cluster.stop()


def _policy(tmp_path: Path, repo: Repo, source: str, drill: str) -> Path:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    p = tmp_path / "policy.yaml"
    p.write_text(
        f"name: db1\nrepository: {repo.path}\npassword_file: {pw}\n"
        f"sources: [{json.dumps(source)}]\nschedule: 1h\nretention: {{keep_last: 3}}\n"
        "targets: {rpo: 1h, rto: 10m}\n" + drill
    )
    return p


@pytest.fixture
def sandboxes() -> Iterator[Path]:
    """A short directory: a server's socket path must fit in 107 bytes (pytest's tmp paths
    are long), open to the unprivileged user the throwaway servers run as."""
    d = Path(tempfile.mkdtemp(prefix="dd", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _env(box: Path, extra: dict[str, str]) -> dict[str, str | None]:
    return {"DRENGINE_STATE_DIR": str(box / "state"), "DRENGINE_DRILL_DIR": str(box), **extra}


def _drill(cli: CLI, box: Path, p: Path, env: dict[str, str], code: int = 0) -> Any:
    r = cli("drill", "run", str(p), "--json", check_code=code, env_extra=_env(box, env))
    assert "Traceback" not in r.err
    return r.json()["document"]


def _no_server_left(box: Path) -> None:
    assert not [p for p in box.iterdir() if p.name.startswith("drengine-drill-")]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(box) not in ps


CHECKS = """drill:
  schedule: 1d
  checks:
    - {sql: "SELECT count(*) FROM accounts", expect: "5000"}
    - {sql: "SELECT count(*) > 0 FROM rich", expect: "t"}
"""


def test_a_postgres_drill_restores_into_a_throwaway_cluster_and_checks_it(
    cli: CLI, repo: Repo, pg: PgCluster, tmp_path: Path, sandboxes: Path
) -> None:
    p = _policy(tmp_path, repo, pg.url("app") + "?globals", CHECKS)
    cli("run", str(p), env_extra=_env(sandboxes, pg.env()))
    # The admin's libpq environment names the production server: the drill must not follow.
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[prod]\nhost=127.0.0.1\nport={pg.port}\nuser=drtest\n")
    prod = {**pg.env(), "PGSERVICEFILE": str(services), "PGSERVICE": "prod"}
    doc = _drill(cli, sandboxes, p, prod)
    assert doc["verdict"] == "passed", doc["reasons"]
    by = {c["check"]: c for c in doc["checks"] if c["kind"] == "postgresql"}
    assert {"roles and tablespaces", "row counts", "schema fingerprint", "pg_amcheck"} <= set(by)
    assert all(c["passed"] for c in by.values())
    assert by["SQL: SELECT count(*) FROM accounts"]["detail"] == "gave '5000'"
    phases = {x["phase"] for x in doc["measured"]["phases"]}
    assert {"sandbox", "load", "verify", "fetch"} <= phases
    _no_server_left(sandboxes)
    # The source cluster was never touched: no scratch databases were made on it.
    assert "drengine_drill" not in pg.psql(
        "postgres", "SELECT string_agg(datname, ',') FROM pg_database"
    )


def test_a_postgres_drill_into_scratch_databases_drops_them_and_a_damaged_dump_fails(
    cli: CLI, repo: Repo, pg: PgCluster, tmp_path: Path, sandboxes: Path
) -> None:
    scratch = CHECKS + f"  postgresql: {json.dumps(pg.url(''))}\n"
    p = _policy(tmp_path, repo, pg.url("app"), scratch)
    cli("run", str(p), env_extra=_env(sandboxes, pg.env()))
    doc = _drill(cli, sandboxes, p, pg.env())
    assert doc["verdict"] == "passed", doc["reasons"]
    assert any("(as drengine_drill_" in c["target"] for c in doc["checks"])
    assert "drengine_drill" not in pg.psql(
        "postgres", "SELECT string_agg(datname, ',') FROM pg_database"
    )
    packs = [f for f in (repo.path / "data").rglob("*") if f.is_file()]
    pack = max(packs, key=lambda f: f.stat().st_size)  # the dump's (trees are small)
    pack.chmod(0o644)
    with open(pack, "r+b") as f:
        f.seek(pack.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    doc = _drill(cli, sandboxes, p, pg.env(), code=20)
    assert doc["verdict"] == "failed"
    why = " ".join(doc["reasons"])
    assert "public.accounts" in why and "restore" in why
    assert "drengine_drill" not in pg.psql(
        "postgres", "SELECT string_agg(datname, ',') FROM pg_database"
    )


def test_a_mariadb_drill_restores_into_a_throwaway_server_and_checks_tables(
    cli: CLI, repo: Repo, tmp_path: Path, sandboxes: Path
) -> None:
    my = MariaDB()
    try:
        my.root_sql(
            "CREATE DATABASE shop; USE shop;"
            "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, total DECIMAL(10,2));"
            "INSERT INTO orders (total) SELECT seq FROM seq_1_to_2000;"
        )
        check = '{sql: "SELECT COUNT(*) FROM orders", expect: "2000"}'
        drill = f"drill:\n  schedule: 1d\n  checks: [{check}]\n"
        p = _policy(tmp_path, repo, my.url("shop"), drill)
        cli("run", str(p), env_extra=_env(sandboxes, my.env()))
        doc = _drill(cli, sandboxes, p, my.env())
    finally:
        my.stop()
    assert doc["verdict"] == "passed", doc["reasons"]
    by = {c["check"]: c for c in doc["checks"]}
    assert by["CHECK TABLE"]["passed"] and by["row counts"]["passed"]
    assert by["SQL: SELECT COUNT(*) FROM orders"]["detail"] == "gave '2000'"
    _no_server_left(sandboxes)

"""The throwaway servers of restore drills: they start inside the sandbox, serve drengine's
own clients through a socket only, ignore the admin's option files, and leave no process
behind, whether stopped or cleaned up after a killed drill."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pg_server import pg_bin, require

from drengine.core.errors import SourceFailed
from drengine.drills import my_sandbox, pg_sandbox
from drengine.drills.my_sandbox import MySandbox
from drengine.drills.pg_sandbox import PgSandbox
from drengine.sources.my_session import MyClient, MyTarget
from drengine.sources.pg_session import PgTarget, Psql
from drengine.sources.urls import split_url


@pytest.fixture
def base() -> Iterator[Path]:
    # As a drill makes it: 0700, owned by us. Not under pytest's tmp dir, whose parents are
    # closed to the server's user.
    d = Path(tempfile.mkdtemp(prefix="drengine-sb-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def need_pg() -> None:
    if pg_bin() is None:
        require("PostgreSQL (initdb)")


def need_mariadb() -> None:
    if not (shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")) or not (
        shutil.which("mariadb-install-db") and shutil.which("mariadb")
    ):
        require("MariaDB (mariadbd, mariadb-install-db)")


def pids_in(d: Path) -> list[int]:
    """Processes whose working directory is inside ``d`` (a server's is its data dir)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and Path(os.readlink(p / "cwd")).is_relative_to(d):
                found.append(int(p.name))
        except OSError:
            continue
    return found


def pg_query(url: str, database: str, sql: str) -> list[list[str]]:
    s = Psql(PgTarget.from_url(urlsplit(url)), database)
    try:
        return s.query(sql)
    finally:
        s.close()


def my_query(target: MyTarget, sql: str) -> list[list[str]]:
    c = MyClient(target)
    try:
        return c.query(sql)
    finally:
        c.close()


def test_pg_sandbox_serves_drengine_clients_on_a_socket_only(base: Path) -> None:
    need_pg()
    with PgSandbox(base) as pg:
        url = pg.url("drill")
        assert split_url(url).scheme == "postgresql"
        assert pids_in(base / "postgresql")
        pg_query(url, "postgres", "CREATE DATABASE drill")
        pg_query(url, "drill", "CREATE TABLE t (x int)")
        pg_query(url, "drill", "INSERT INTO t SELECT generate_series(1, 10)")
        assert pg_query(url, "drill", "SELECT count(*) FROM t") == [["10"]]
        got = pg_query(url, "drill", "SELECT current_setting('listen_addresses') = '', "
                                     "current_setting('fsync')")  # fmt: skip
        assert got == [["t", "on"]]
    pg.stop()  # idempotent
    assert not pids_in(base)
    shutil.rmtree(base / "postgresql")


def test_my_sandbox_serves_drengine_clients_on_a_socket_only(base: Path) -> None:
    need_mariadb()
    with MySandbox(base) as my:
        target = MyTarget.from_url(split_url(my.url("drill")))
        assert target.no_defaults and target.args()[0] == "--no-defaults"
        assert pids_in(base / "mysql")
        my_query(dataclasses.replace(target, database=""), "CREATE DATABASE drill")
        my_query(target, "CREATE TABLE t (x INT)")
        my_query(target, "INSERT INTO t SELECT seq FROM seq_1_to_10")
        assert my_query(target, "SELECT count(*) FROM t") == [["10"]]
        assert my_query(target, "SELECT @@skip_networking") == [["1"]]
    my.stop()
    assert not pids_in(base)
    shutil.rmtree(base / "mysql")


def test_my_sandbox_ignores_the_admins_option_files(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_mariadb()
    # Production credentials, and a command that fails whenever the file is read: the
    # URL's user and socket would override the rest.
    (tmp_path / ".my.cnf").write_text(
        "[client]\nuser=nosuch\npassword=wrong\ninit-command=DO no_such_function()\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    with MySandbox(base) as my:
        target = MyTarget.from_url(urlsplit(my.url()))
        assert my_query(target, "SELECT 1") == [["1"]]
        with pytest.raises(SourceFailed, match="no_such_function"):  # the file is read
            my_query(dataclasses.replace(target, no_defaults=False), "SELECT 1")


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_cleanup_stale_stops_the_server_of_a_killed_drill(base: Path, kind: str) -> None:
    if kind == "postgresql":
        need_pg()
        PgSandbox(base).start()  # and forgotten, as by a drill killed with SIGKILL
        pidfile, cleanup = base / "postgresql/data/postmaster.pid", pg_sandbox.cleanup_stale
    else:
        need_mariadb()
        MySandbox(base).start()
        pidfile, cleanup = base / "mysql/mysqld.pid", my_sandbox.cleanup_stale
    pid = int(pidfile.read_text().split()[0])
    assert pid in pids_in(base)
    cleanup(base)
    assert not pids_in(base)
    assert not os.path.exists(f"/proc/{pid}/cwd")  # gone (or a zombie, which has no cwd)

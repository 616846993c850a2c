"""MariaDB as a source, against a real server the test starts: a schema with several
tables, blobs, a view and a trigger, backed up while a writer goes on, restored table by
table; bad input."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Repo, assert_one_line_error
from my_server import MariaDB

SCHEMA = """
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(200) NOT NULL,
                        note TEXT, photo LONGBLOB, joined DATETIME(6), score DOUBLE);
CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer INT NOT NULL,
                     total DECIMAL(12,2), raw VARBINARY(64), INDEX (customer),
                     FOREIGN KEY (customer) REFERENCES customers(id)) ENGINE=InnoDB;
CREATE TABLE order_log (id BIGINT PRIMARY KEY AUTO_INCREMENT, order_id BIGINT);
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW
  INSERT INTO order_log (order_id) VALUES (NEW.id);
INSERT INTO customers (name, note, photo, joined, score)
  SELECT CONCAT('name ', seq, ' \\'quote\\' tab\\t nl\\n ', _utf8mb4 0xF09F9880),
         REPEAT('note ', seq % 50), RANDOM_BYTES(200), NOW(6), seq / 7
    FROM seq_1_to_3000;
INSERT INTO orders (customer, total, raw)
  SELECT 1 + seq % 3000, seq * 1.5, UNHEX(MD5(seq)) FROM seq_1_to_20000;
"""


@pytest.fixture(scope="module")
def my() -> Iterator[MariaDB]:
    server = MariaDB()
    try:
        server.root_sql(SCHEMA)
        yield server
    finally:
        server.stop()


def table_digest(my: MariaDB, db: str, table: str) -> str:
    rows = my.root_sql(f"SELECT * FROM `{table}` ORDER BY id", database=db)
    return hashlib.sha256(rows.encode("utf-8", "surrogateescape")).hexdigest()


def test_mariadb_backup_while_writing_restores_table_by_table(repo: Repo, my: MariaDB) -> None:
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            subprocess.run(
                ["mariadb", "--no-defaults", f"--socket={my.socket}", "-uroot", "shop", "-e",
                 "INSERT INTO orders (customer, total) VALUES (1, 5)"],
                capture_output=True, check=False,
            )  # fmt: skip

    t = threading.Thread(target=writer)
    t.start()
    try:
        repo.backup("--source", my.url("shop"), env_extra=my.env())
    finally:
        stop.set()
        t.join()
    snap = repo.snapshots()[-1]
    part = snap["sources"][0]
    assert snap["source"] == "mysql" and snap["paths"] == ["/mysql/shop.sql"]
    assert part["counts"] == "dump snapshot" and part["tables"]["customers"] == 3000
    # One snapshot: the trigger's log holds exactly one row per order the dump holds.
    assert part["tables"]["orders"] == part["tables"]["order_log"] >= 20000
    assert "10." in part["server_version"] and part["tool"] in ("mariadb-dump", "mysqldump")
    assert my.env()["MYSQL_PWD"] not in repo.run("snapshots", "--json").out
    dump = repo.run("dump", "latest").stdout
    assert hashlib.sha256(dump).hexdigest() == part["entries"][0]["sha256"]
    # restore compares the restored row counts with the recorded ones: it passing proves
    # the counts describe the dumped data, writer or not.
    r = repo.run("restore", "latest", "--to", my.url("shop_copy"), "--json", env_extra=my.env())
    loaded = r.json()["loaded"][0]
    assert loaded["schema_matches"] is True and loaded["rows"] == sum(part["tables"].values())
    restored_orders = int(my.root_sql("SELECT COUNT(*) FROM orders", database="shop_copy"))
    assert restored_orders == part["tables"]["orders"]
    n = part["tables"]["orders"]
    assert table_digest(my, "shop_copy", "customers") == table_digest(my, "shop", "customers")
    # The writer went on after the dump: compare the rows the dump holds.
    for table in ("orders", "order_log"):
        q = f"SELECT * FROM {table} ORDER BY id LIMIT {n}"
        assert my.root_sql(q, database="shop") == my.root_sql(q, database="shop_copy")
    assert my.root_sql("SELECT COUNT(*) FROM big_orders", database="shop_copy") != "0"
    charset = my.root_sql(
        "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
        "WHERE SCHEMA_NAME = 'shop_copy'"
    )
    assert charset == "utf8mb4_unicode_ci"


def test_mariadb_restore_refuses_a_non_empty_database(repo: Repo, my: MariaDB) -> None:
    repo.backup("--source", my.url("shop"), env_extra=my.env())
    r = repo.run("restore", "latest", "--to", my.url("shop"), check_code=1, env_extra=my.env())
    assert "not empty" in assert_one_line_error(r) and "--clean" in r.err


def test_mariadb_a_load_that_fails_leaves_no_database(repo: Repo, my: MariaDB) -> None:
    repo.backup("--source", my.url("shop"), env_extra=my.env())
    # An older server (the record says a far newer one) is refused before anything.
    import os
    from urllib.parse import urlsplit

    from drengine.core.errors import RestoreError
    from drengine.sources.my_session import MyClient, MyTarget
    from drengine.sources.mysql_restore import _check_version

    os.environ["MYSQL_PWD"] = my.env()["MYSQL_PWD"]
    try:
        target = MyTarget.from_url(urlsplit(my.url("x")))
        c = MyClient(target, database="")
        try:
            with pytest.raises(RestoreError, match="older version"):
                _check_version(c, {"server_version": "99.1.0-MariaDB"}, target)
        finally:
            c.close()
    finally:
        del os.environ["MYSQL_PWD"]
    # A user without the rights to create tables: the load fails, the database it created
    # is dropped again.
    my.root_sql("CREATE USER 'weak'@'%' IDENTIFIED BY 'w'; GRANT CREATE, DROP ON *.* TO 'weak'@'%'")
    url = f"mysql://weak@127.0.0.1:{my.port}/shop_weak"
    r = repo.run("restore", "latest", "--to", url, check_code=1, env_extra={"MYSQL_PWD": "w"})
    assert "failed" in assert_one_line_error(r)
    assert my.root_sql("SHOW DATABASES LIKE 'shop_weak'") == ""


@pytest.mark.parametrize(
    ("url", "env", "code", "words"),
    [
        ("{shop}", {"MYSQL_PWD": "wrong"}, 13, "Access denied"),
        ("{nope}", None, 13, "'nope' does not exist"),
        ("{down}", None, 13, "Can't connect"),
        ("mysql://u:secret@127.0.0.1:1/x", None, 2, "visible to every user in ps"),
        ("mysql://127.0.0.1/", None, 2, "name the database"),
    ],
)
def test_mariadb_bad_input(
    repo: Repo, my: MariaDB, url: str, env: dict[str, str] | None, code: int, words: str
) -> None:
    url = url.format(
        shop=my.url("shop"), nope=my.url("nope"), down=f"mysql://x@127.0.0.1:{my.port + 1}/x"
    )
    r = repo.run("backup", "--source", url, check_code=code, env_extra={**my.env(), **(env or {})})
    assert words in assert_one_line_error(r)
    assert "secret" not in r.err
    assert repo.snapshots() == []


def test_credentials_from_my_cnf(repo: Repo, my: MariaDB, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cnf = home / ".my.cnf"
    cnf.write_text('[client]\npassword="my test secret"\n')
    cnf.chmod(0o600)
    repo.backup("--source", my.url("shop"), env_extra={"MYSQL_PWD": None, "HOME": str(home)})
    assert len(repo.snapshots()) == 1

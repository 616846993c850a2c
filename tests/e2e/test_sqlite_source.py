"""SQLite as a source: a consistent copy while another thread keeps inserting, rebuilt by
``restore --to sqlite:///``."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from e2e_support import Repo, assert_one_line_error


def _make_db(path: Path, wal: bool) -> None:
    c = sqlite3.connect(path)
    if wal:
        c.execute("PRAGMA journal_mode=WAL")
    c.executescript(
        '''
        CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT, blob BLOB, n REAL);
        CREATE TABLE "odd ""name""" (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE INDEX t_body ON t(body);
        CREATE VIEW v AS SELECT id FROM t WHERE n > 10;
        CREATE TABLE log (at INTEGER);
        CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.id); END;
        PRAGMA user_version = 42;
        '''
    )
    c.executemany(
        "INSERT INTO t (body, blob, n) VALUES (?, ?, ?)",
        [
            (f"row {i}\nline two 'q' \"dq\" \u00e9", bytes(range(i % 256)) * 3, i / 3)
            for i in range(20000)
        ],
    )
    c.execute('INSERT INTO "odd ""name""" VALUES (\'a\', x\'00ff\')')
    c.commit()
    c.close()


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
def test_sqlite_backup_while_writing_restores_a_sound_database(
    repo: Repo, tmp_path: Path, wal: bool
) -> None:
    db = tmp_path / "app.db"
    _make_db(db, wal)
    committed_before = 20000
    stop = threading.Event()

    def writer() -> None:
        c = sqlite3.connect(db, timeout=60)
        while not stop.is_set():
            c.execute("INSERT INTO t (body, n) VALUES ('concurrent', 1)")
            c.commit()
            time.sleep(0.001)
        c.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        repo.backup("--source", f"sqlite://{db}")
    finally:
        stop.set()
        t.join()
    snap = repo.snapshots()[-1]
    part = snap["sources"][0]
    assert snap["source"] == "sqlite" and snap["paths"] == [f"/sqlite{db}.sql"]
    rows = part["tables"]["t"]
    assert (
        rows > committed_before and part["tables"]["log"] == rows
    )  # one snapshot: the trigger's rows match
    assert part["user_version"] == 42
    out = tmp_path / "restored" / "app.db"
    out.parent.mkdir()
    r = repo.run("restore", "latest", "--to", f"sqlite://{out}", "--json")
    assert r.json()["loaded"][0]["schema_matches"] is True
    c = sqlite3.connect(out)
    assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert c.execute("SELECT count(*) FROM t").fetchone()[0] == rows
    assert c.execute("PRAGMA user_version").fetchone()[0] == 42
    src = sqlite3.connect(db)
    for q in ("SELECT * FROM t WHERE id <= 20000 ORDER BY id", 'SELECT * FROM "odd ""name"""'):
        assert c.execute(q).fetchall() == src.execute(q).fetchall()
    # restore --target gives the dump and the database file rebuilt from it.
    target = tmp_path / "t"
    r = repo.restore("latest", target)
    assert "rebuilt" in r.out
    rebuilt = sqlite3.connect(target / str(db).lstrip("/"))
    assert rebuilt.execute("SELECT count(*) FROM t").fetchone()[0] == rows
    assert (target / "sqlite" / (str(db).lstrip("/") + ".sql")).exists()
    # The restored file is never overwritten.
    r = repo.run("restore", "latest", "--to", f"sqlite://{out}", check_code=2)
    assert "exists" in assert_one_line_error(r)


def test_sqlite_bad_input(repo: Repo, tmp_path: Path) -> None:
    r = repo.run("backup", "--source", f"sqlite://{tmp_path}/missing.db", check_code=13)
    assert "no such file" in assert_one_line_error(r)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    r = repo.run("backup", "--source", f"sqlite://{garbage}", check_code=13)
    assert "not a database" in assert_one_line_error(r)
    r = repo.run("backup", "--source", "sqlite://relative.db", check_code=2)
    assert repo.snapshots() == []

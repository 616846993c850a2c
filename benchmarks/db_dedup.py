"""How much a second database dump adds to the repository after a small change.

Starts a throwaway PostgreSQL cluster and MariaDB server (the test suite's fixtures), loads
pgbench at a given scale (and the same rows into MariaDB), backs each up, changes 1% of the
rows (in one range, as recent rows usually are; and spread over the whole table, the worst
case for chunk-level dedup), backs up again, and prints what each second backup added.

    python benchmarks/db_dedup.py [--scale 10] [--results benchmarks/results/db_dedup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from my_server import MariaDB  # noqa: E402
from pg_server import PgCluster  # noqa: E402

MiB = 1 << 20


def drengine(repo: Path, *args: str, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "drengine", "--repo", str(repo), *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"drengine {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}


def measure(repo: Path, url: str, change: object, env: dict[str, str]) -> dict[str, float]:
    t0 = time.monotonic()
    first = drengine(repo, "backup", "--json", "--source", url, env=env)
    t1 = time.monotonic()
    change()  # type: ignore[operator]
    t2 = time.monotonic()
    second = drengine(repo, "backup", "--json", "--source", url, env=env)
    t3 = time.monotonic()
    total = int(second["bytes_total"])  # type: ignore[arg-type]
    new = int(second["bytes_new"])  # type: ignore[arg-type]
    return {
        "dump_mib": round(total / MiB, 1),
        "first_backup_s": round(t1 - t0, 2),
        "second_backup_s": round(t3 - t2, 2),
        "first_stored_mib": round(int(first["bytes_stored"]) / MiB, 1),  # type: ignore[arg-type]
        "second_new_mib": round(new / MiB, 1),
        "second_new_percent": round(100 * new / total, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale (100,000 rows each)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "db_dedup.json"))
    a = ap.parse_args()
    rows = a.scale * 100_000
    work = Path(tempfile.mkdtemp(prefix="drengine-dbbench-"))
    env = {**os.environ, "DRENGINE_PASSWORD": "bench", "DRENGINE_CACHE_DIR": str(work / "cache")}
    results: dict[str, dict[str, float]] = {}
    pg = PgCluster()
    my = MariaDB()
    try:
        env.update(pg.env())
        env.update(my.env())
        pg.psql("postgres", "CREATE DATABASE bench")
        pg.pgbench_init("bench", a.scale)
        my.root_sql("CREATE DATABASE bench")
        my.root_sql(
            "CREATE TABLE bench.accounts (aid INT PRIMARY KEY, "
            "bid INT, abalance INT, filler CHAR(84)) ENGINE=InnoDB; INSERT INTO bench.accounts "
            f"SELECT seq, 1 + seq DIV 100000, 0, '' FROM seq_1_to_{rows}",
            database="bench",
        )
        ranged = f"SET abalance = abalance + 1 WHERE aid <= {rows // 100}"
        spread = "SET abalance = abalance + 1 WHERE aid % 100 = 7"
        cases = {
            "postgresql, 1% of rows in one range": (
                pg.url("bench"),
                lambda: pg.psql("bench", f"UPDATE pgbench_accounts {ranged}"),
            ),
            "postgresql, 1% of rows spread out": (
                pg.url("bench"),
                lambda: pg.psql("bench", f"UPDATE pgbench_accounts {spread}"),
            ),
            "mariadb, 1% of rows in one range": (
                my.url("bench"),
                lambda: my.root_sql(f"UPDATE bench.accounts {ranged}"),
            ),
            "mariadb, 1% of rows spread out": (
                my.url("bench"),
                lambda: my.root_sql(f"UPDATE bench.accounts {spread}"),
            ),
        }
        for i, (name, (url, change)) in enumerate(cases.items()):
            repo = work / f"repo{i}"
            subprocess.run(
                [sys.executable, "-m", "drengine", "--repo", str(repo), "init"],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
            results[name] = measure(repo, url, change, env)
            print(f"{name:40} {json.dumps(results[name])}", flush=True)
    finally:
        pg.stop()
        my.stop()
    print()
    print(f"{'case':40} {'dump MiB':>9} {'2nd adds MiB':>13} {'2nd adds %':>11}")
    for name, r in results.items():
        print(
            f"{name:40} {r['dump_mib']:9.1f} {r['second_new_mib']:13.1f} "
            f"{r['second_new_percent']:11.1f}"
        )
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps({"scale": a.scale, "results": results}, indent=2))


if __name__ == "__main__":
    main()

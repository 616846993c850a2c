"""The drengine command line against a real S3 server (SeaweedFS), as a user runs it.

Each test runs ``python -m drengine --repo s3://BUCKET/PREFIX ...`` as a subprocess, with the
endpoint and credentials in the standard AWS variables, and checks restored bytes. The outage
tests pause (SIGSTOP) or kill and restart the server while a backup is uploading.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from s3_cli import Drengine
from seaweed_server import BUCKET, SeaweedS3

pytestmark = pytest.mark.integration

PASSWORD = "integration correct horse"
MiB = 1024 * 1024


def _drengine(server: SeaweedS3 | None, tmp: Path, url: str, **env: str) -> Drengine:
    return Drengine(server, url, tmp / "cache", tmp, PASSWORD, **env)


def _tree(root: Path, big: int = 3 * MiB, big_files: int = 1) -> dict[str, bytes]:
    files = {f"big{i}.bin": os.urandom(big) for i in range(big_files)}
    files.update(
        {
            "small.txt": b"hello s3\n",
            "empty": b"",
            "sub/deeper/medium.bin": os.urandom(100_000),
            "sub/repeat.bin": b"abc" * 200_000,
        }
    )
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _assert_restored(run: Drengine, src: Path, files: dict[str, bytes], target: Path) -> None:
    run("restore", "latest", "--target", str(target))
    restored = target / src.relative_to(src.anchor)
    for rel, data in files.items():
        assert (restored / rel).read_bytes() == data, f"{rel} differs after restore"


def test_init_backup_restore_check(seaweed: SeaweedS3, tmp_path: Path, s3_prefix: str) -> None:
    run = _drengine(seaweed, tmp_path, f"s3://{BUCKET}/{s3_prefix}")
    src = tmp_path / "src"
    files = _tree(src)
    run.init()
    run("backup", str(src))
    run("backup", str(src))  # unchanged: a second snapshot, no new data
    snaps = run("snapshots", "--json").stdout
    assert snaps.count('"short_id"') == 2
    _assert_restored(run, src, files, tmp_path / "restore")
    run("check", "--read-data")
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket=BUCKET)["Contents"]]
    mine = [k for k in keys if k.startswith(s3_prefix + "/")]
    assert {k.split("/")[2] for k in mine} >= {"config", "keys", "data", "index", "snapshots"}


def test_no_repository_at_prefix_is_exit_10(seaweed: SeaweedS3, tmp_path: Path) -> None:
    run = _drengine(seaweed, tmp_path, f"s3://{BUCKET}/nothing-here")
    proc = run("snapshots", code=10)
    assert f"s3://{BUCKET}/nothing-here" in proc.stderr


def test_wrong_secret_is_one_clear_error_without_retries(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    run = _drengine(seaweed, tmp_path, f"s3://{BUCKET}/x", AWS_SECRET_ACCESS_KEY="wrong")
    start = time.monotonic()
    proc = run("snapshots", code=1)
    assert time.monotonic() - start < 20
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drengine: error: "), proc.stderr
    assert "rejected the credentials" in lines[0] and "AWS_SECRET_ACCESS_KEY" in lines[0]


def test_dead_endpoint_fails_with_a_clear_error_within_the_budget(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _drengine(
        None,
        tmp_path,
        "s3://bkt/repo",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        DRENGINE_S3_RETRY_BUDGET="3",
    )
    start = time.monotonic()
    proc = run("snapshots", code=1, timeout=60)
    assert time.monotonic() - start < 30
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"drengine: error: cannot reach s3 endpoint http://127.0.0.1:{port}")
    assert "gave up after" in error


def _backup_through_outage(server: SeaweedS3, tmp_path: Path, prefix: str, outage: Any) -> None:
    """Start a backup of many small packs; once packs arrive, run ``outage()``; check all."""
    run = _drengine(server, tmp_path, f"s3://{BUCKET}/{prefix}", DRENGINE_S3_READ_TIMEOUT="1")
    src = tmp_path / "src"
    files = _tree(src, big=16 * MiB, big_files=3)
    run.init("--pack-size", "1")
    backup = subprocess.Popen(
        run.cmd("backup", str(src)),
        env=run.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    client = server.client(connect_timeout=1, read_timeout=2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and backup.poll() is None:
        page = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/data/", MaxKeys=1)
        if page.get("KeyCount", 0):
            break
        time.sleep(0.02)
    client.close()
    assert backup.poll() is None, "the backup ended before the outage began"
    outage()
    _, err = backup.communicate(timeout=150)
    assert backup.returncode == 0, f"backup failed through the outage:\n{err[-3000:]}"
    assert "retrying in" in err, "the outage did not reach the backup (no retries logged)"
    run("check", "--read-data")
    _assert_restored(run, src, files, tmp_path / "restore")


def test_backup_rides_out_a_paused_server(
    seaweed: SeaweedS3, tmp_path: Path, s3_prefix: str
) -> None:
    def pause_for_five_seconds() -> None:
        seaweed.pause()
        try:
            time.sleep(5)
        finally:
            seaweed.resume()

    _backup_through_outage(seaweed, tmp_path, s3_prefix, pause_for_five_seconds)


def test_backup_rides_out_a_30_second_outage(own_seaweed: SeaweedS3, tmp_path: Path) -> None:
    # The bar: the server is killed and stays down for 30 seconds (connections are
    # refused), then takes a few seconds to start; the backup must finish regardless.
    restarter = threading.Thread(target=own_seaweed.restart, kwargs={"down_for": 30.0})
    _backup_through_outage(own_seaweed, tmp_path, "restart", restarter.start)
    restarter.join()


def test_restore_and_check_in_worker_processes(
    seaweed_env: SeaweedS3, tmp_path: Path, s3_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers open the S3 repository again with the options it was opened with."""
    from drengine.engine import check_procs, restore_procs
    from drengine.repository.repo import Repository
    from drengine.storage.url import open_backend

    url = f"s3://{BUCKET}/{s3_prefix}"
    run = _drengine(
        seaweed_env, tmp_path, url, DRENGINE_RESTORE_PROCESSES="2", DRENGINE_CHECK_PROCESSES="2"
    )
    src = tmp_path / "src"
    files = _tree(src, big=2 * MiB)
    for i in range(60):
        files[f"many/f{i}.txt"] = os.urandom(100 + 37 * i)
        (src / "many").mkdir(exist_ok=True)
        (src / f"many/f{i}.txt").write_bytes(files[f"many/f{i}.txt"])
    run.init()
    run("backup", str(src))
    repo = Repository.open(open_backend(url), PASSWORD.encode())
    monkeypatch.setenv(restore_procs.ENV, "2")  # what the CLI's restore and check decide
    monkeypatch.setenv(check_procs.ENV, "2")
    assert restore_procs.process_count(repo, 61) == 2
    assert check_procs.process_count(repo, 3, 1) == 2
    _assert_restored(run, src, files, tmp_path / "restore")
    assert "no errors found" in run("check", "--read-data").stdout

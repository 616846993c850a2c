"""The drengine command line against a real S3 server (SeaweedFS), as a user runs it.

Each test runs ``python -m drengine --repo s3://BUCKET/PREFIX ...`` as a subprocess, with the
endpoint and credentials in the standard AWS variables, and checks restored bytes. The outage
tests pause (SIGSTOP) or kill and restart the server while a backup is uploading.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from seaweed_server import BUCKET, SeaweedS3

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "integration correct horse"
MiB = 1024 * 1024


class Drengine:
    """Runs the CLI on one S3 repository with a controlled environment."""

    def __init__(self, server: SeaweedS3 | None, tmp: Path, url: str, **env: str) -> None:
        self.url = url
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DRENGINE_", "AWS_"))}
        base.update(server.env() if server else {})
        base.update(
            DRENGINE_PASSWORD=PASSWORD,
            DRENGINE_CACHE_DIR=str(tmp / "cache"),
            PYTHONPATH=str(PROJECT_ROOT),
            NO_COLOR="1",
        )
        base.update(env)
        self.env = base
        self.cwd = tmp

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "drengine", "--repo", self.url, *args]

    def __call__(
        self, *args: str, code: int = 0, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.cmd(*args),
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == code, (
            f"drengine {' '.join(args)}: exit {proc.returncode}, wanted {code}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
        )
        return proc

    def init(self, *extra: str) -> None:
        self("init", "--kdf-memory-mib", "8", "--kdf-iterations", "1", *extra)


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
    run = Drengine(seaweed, tmp_path, f"s3://{BUCKET}/{s3_prefix}")
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
    run = Drengine(seaweed, tmp_path, f"s3://{BUCKET}/nothing-here")
    proc = run("snapshots", code=10)
    assert f"s3://{BUCKET}/nothing-here" in proc.stderr


def test_wrong_secret_is_one_clear_error_without_retries(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    run = Drengine(seaweed, tmp_path, f"s3://{BUCKET}/x", AWS_SECRET_ACCESS_KEY="wrong")
    start = time.monotonic()
    proc = run("snapshots", code=1)
    assert time.monotonic() - start < 20
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drengine: error: access denied"), proc.stderr


def test_dead_endpoint_fails_with_a_clear_error_within_the_budget(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = Drengine(
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
    run = Drengine(server, tmp_path, f"s3://{BUCKET}/{prefix}", DRENGINE_S3_READ_TIMEOUT="1")
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


def test_backup_rides_out_a_server_restart(own_seaweed: SeaweedS3, tmp_path: Path) -> None:
    # Killed, down for two seconds, then a few seconds to start: connections are refused.
    restarter = threading.Thread(target=own_seaweed.restart, kwargs={"down_for": 2.0})
    _backup_through_outage(own_seaweed, tmp_path, "restart", restarter.start)
    restarter.join()

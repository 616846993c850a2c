"""A killed backup leaves a valid repository, and the next backup reuses its uploads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from e2e_support import CLI, Repo

MIB = 1 << 20
SIZE_MIB = 160


def _write_random(path: Path, mib: int) -> None:
    rng = np.random.default_rng(7)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(rng.bytes(MIB))


def _wait_for_index(repo: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A finished index object, not the local backend's temporary file being written.
        if any(not p.name.startswith(".") for p in (repo / "index").glob("*")):
            return
        assert proc.poll() is None, "backup finished before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("no index object appeared")


def _interrupted_then_resumed(cli: CLI, tmp_path: Path, sig: int) -> None:
    repo = Repo(cli, tmp_path / "repo")
    repo.init("--pack-size", "1")  # an index object every 16 MiB of packs
    src = tmp_path / "src"
    src.mkdir()
    _write_random(src / "big.bin", SIZE_MIB)
    proc = subprocess.Popen(
        [sys.executable, "-m", "drengine", "--repo", str(repo.path), "backup", str(src)],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for_index(repo.path, proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGTERM:  # stopped cleanly: one sentence, the documented code
        assert proc.returncode == 130
        assert err.decode().strip().endswith("drengine: error: interrupted")
    assert not list((repo.path / "snapshots").glob("*")), "an interrupted backup wrote a snapshot"

    repo.run("check", "--read-data")  # valid: exit 0 (unindexed packs are only warnings)
    second = repo.backup(str(src))
    # Most of what the first run uploaded is indexed and reused, not uploaded again.
    assert second["bytes_stored"] < SIZE_MIB * MIB * 0.95, second
    out = tmp_path / "out"
    repo.run("restore", "latest", "--target", str(out))
    assert (out / src.relative_to("/") / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    repo.run("check", "--read-data")


def test_sigkill_mid_backup_leaves_valid_repo_and_uploads_are_reused(
    cli: CLI, tmp_path: Path
) -> None:
    _interrupted_then_resumed(cli, tmp_path, signal.SIGKILL)


def test_sigterm_mid_backup_indexes_what_it_uploaded(cli: CLI, tmp_path: Path) -> None:
    _interrupted_then_resumed(cli, tmp_path, signal.SIGTERM)

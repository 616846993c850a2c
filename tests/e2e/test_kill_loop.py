"""Kill backup and prune at every storage write, before and during it: the repository stays
valid after each kill, every snapshot restores exactly, and the next run completes."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import CLI, PASSWORD, Repo, restored_path

from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import run_check
from drengine.engine.prune import run_prune
from drengine.engine.restore import run_restore
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.local import LocalBackend

HARNESS = Path(__file__).with_name("kill_harness.py")


def _harness(
    cli: CLI, repo: Repo, mode: str, n: int, *args: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(HARNESS), mode, str(n), "--", "--repo", str(repo.path), *args],
        env=cli.env,
        cwd=cli.workdir,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _writes(cli: CLI, repo: Repo, *args: str) -> int:
    """How many storage writes the command makes (it runs for real)."""
    proc = _harness(cli, repo, "count", 0, *args)
    assert proc.returncode == 0, proc.stderr.decode()
    found = re.findall(rb"writes=(\d+)", proc.stderr)
    return int(found[-1])


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _open(repo: Repo) -> Repository:
    return Repository.open(LocalBackend(repo.path), PASSWORD.encode())


def _assert_valid(
    repo: Repo, tmp_path: Path, expected: dict[str, dict[str, bytes]], src: Path
) -> None:
    """check --read-data passes (warnings allowed) and every snapshot restores exactly.
    In-process through the engine, which is what the CLI calls: a kill loop checks the
    repository dozens of times."""
    opened = _open(repo)
    checked = run_check(opened, 1.0)
    assert checked.errors == [], checked.errors
    snaps = {s.id: s for s in opened.snapshots()}
    assert snaps.keys() == expected.keys()
    opened.load_index()
    for snap_id, snap in snaps.items():
        target = tmp_path / f"restore-{snap_id[:8]}"
        result = run_restore(opened, snap, str(target))
        assert result.errors == []
        got = _tree(restored_path(target, src))
        assert got == expected[snap_id], f"snapshot {snap_id[:8]} restored differently"
        subprocess.run(["rm", "-rf", str(target)], check=True)


def _source(tmp_path: Path, version: int) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    rng = random.Random(version)
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True, exist_ok=True)
        for f in range(4):
            size = rng.choice([10, 3000, 70_000, 1_000_000])
            (src / f"d{d}" / f"f{f}").write_bytes(rng.randbytes(size))
    return src, _tree(src)


def _fresh(base: Path, repo: Repo, cli: CLI, cache: Path) -> None:
    """Put the repository and the local cache back to the state before the killed run."""
    subprocess.run(["rm", "-rf", str(repo.path), str(cli.cache_dir)], check=True)
    subprocess.run(["cp", "-a", str(base), str(repo.path)], check=True)
    subprocess.run(["cp", "-a", str(cache), str(cli.cache_dir)], check=True)


def _kill_points(cli: CLI, tmp_path: Path, repo: Repo, *args: str) -> tuple[Path, Path, int]:
    """Save the current state (repository and cache) and count the writes of the command."""
    base, cache = tmp_path / "base", tmp_path / "base-cache"
    subprocess.run(["cp", "-a", str(repo.path), str(base)], check=True)
    subprocess.run(["cp", "-a", str(cli.cache_dir), str(cache)], check=True)
    total = _writes(cli, repo, *args)
    _fresh(base, repo, cli, cache)
    return base, cache, total


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["before", "during"])
def test_backup_killed_at_every_write(
    cli: CLI, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(cli.cache_dir))  # in-process runs too
    repo = Repo(cli, tmp_path / "repo")
    repo.init("--pack-size", "1")
    src, first = _source(tmp_path, 1)
    snap = repo.backup(str(src))["snapshot_id"]
    src, second = _source(tmp_path, 2)  # every file changes: the next backup writes a lot
    base, cache, total = _kill_points(cli, tmp_path, repo, "backup", str(src))
    assert total >= 6, total  # packs vary with how two sealer threads share the blobs
    killed = 0
    for n in range(1, total + 1):
        _fresh(base, repo, cli, cache)
        proc = _harness(cli, repo, mode, n, "backup", str(src))
        # Two sealer threads share the blobs between their packs as they come, so a run may
        # need a write or two fewer than the counted one and finish before write n.
        assert proc.returncode in (-9, 0), (n, proc.returncode, proc.stderr.decode()[-2000:])
        killed += proc.returncode == -9
        expected = {snap: first}
        # Killed at its last writes, the backup had written its snapshot: whole, or none.
        written = [
            p.name
            for p in (repo.path / "snapshots").iterdir()
            if p.name != snap and not p.name.startswith(".tmp-")
        ]
        expected.update(dict.fromkeys(written, second))
        _assert_valid(repo, tmp_path, expected, src)
        done = run_backup(
            _open(repo), BackupOptions([FileSource([str(src)])])
        )  # the next run completes
        expected[done.snapshot.id] = second
        _assert_valid(repo, tmp_path, expected, src)
    assert killed >= total - 3, (killed, total)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["before", "during"])
def test_prune_killed_at_every_write(
    cli: CLI, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(cli.cache_dir))
    repo = Repo(cli, tmp_path / "repo")
    repo.init("--pack-size", "1")
    expected: dict[str, dict[str, bytes]] = {}
    for version in (1, 2, 3):
        src, files = _source(tmp_path, version)
        expected[repo.backup(str(src))["snapshot_id"]] = files
    oldest = repo.snapshots()[0]["id"]
    repo.run("forget", oldest)
    del expected[oldest]
    base, cache, total = _kill_points(cli, tmp_path, repo, "prune", "--max-unused", "0")
    assert total >= 5, total
    killed = 0
    for n in range(1, total + 1):
        _fresh(base, repo, cli, cache)
        proc = _harness(cli, repo, mode, n, "prune", "--max-unused", "0")
        assert proc.returncode in (-9, 0), (n, proc.returncode, proc.stderr.decode()[-2000:])
        killed += proc.returncode == -9
        _assert_valid(repo, tmp_path, expected, src)
        run_prune(_open(repo), max_unused=0.0)  # the next prune completes the work
        _assert_valid(repo, tmp_path, expected, src)
        left = [p for p in repo.path.rglob(".tmp-*") if p.parent.name != "locks"]
        assert left == [], "prune removes what killed runs left half-written"
        # The killed run's lock is stale (its process is gone): reported, never broken
        # silently; unlock removes it, and (a minute later) a lock it wrote halfway.
        for half in (repo.path / "locks").glob(".tmp-*"):
            os.utime(half, (time.time() - 120, time.time() - 120))
        repo.run("unlock")
        assert os.listdir(repo.path / "locks") == []
    assert killed >= total - 1, (killed, total)


@pytest.mark.slow
def test_repair_index_killed_at_every_write(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repair killed midway leaves the repository as readable as before it, or better."""
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(cli.cache_dir))
    repo = Repo(cli, tmp_path / "repo")
    repo.init("--pack-size", "1")
    expected: dict[str, dict[str, bytes]] = {}
    for version in (1, 2):
        src, files = _source(tmp_path, version)
        expected[repo.backup(str(src))["snapshot_id"]] = files
    for index in (repo.path / "index").iterdir():
        index.write_bytes(b"damaged")  # every index object garbage: only the packs know
    base, cache, total = _kill_points(cli, tmp_path, repo, "repair", "index")
    assert total >= 3, total
    for n in range(1, total + 1):
        _fresh(base, repo, cli, cache)
        proc = _harness(cli, repo, "before", n, "repair", "index")
        assert proc.returncode in (-9, 0), (n, proc.returncode, proc.stderr.decode()[-2000:])
        repo.run("repair", "index")  # run again: it completes
        _assert_valid(repo, tmp_path, expected, src)

"""A full disk under the repository: the backup fails in one sentence, leaves a valid
repository and no temporary files, and prune can still free space. (The full restore target
is tested with restore.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import CLI, Repo, assert_one_line_error, small_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "3m") as mount:
        yield mount


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def test_a_full_repository_disk_fails_cleanly_and_prune_frees_it(
    cli: CLI, tmp_path: Path, small_disk: Path
) -> None:
    repo = Repo(cli, small_disk / "repo")
    repo.init("--pack-size", "1", "--compression-level", "0")
    src = tmp_path / "src"
    src.mkdir()
    (src / "first.bin").write_bytes(os.urandom(1_500_000))
    first = repo.backup(str(src))["snapshot_id"]
    (src / "first.bin").unlink()
    (src / "second.bin").write_bytes(os.urandom(2_500_000))  # does not fit beside the first

    result = repo.run("backup", str(src), check_code=1)
    line = assert_one_line_error(result)
    assert "No space left on device" in line, line
    assert _leftovers(small_disk) == [], "a failed write left its temporary file"
    assert [s["id"] for s in repo.snapshots()] == [first]
    repo.run("check", "--read-data")  # valid (packs of the failed run are only unindexed)

    # Make room the usual way: forget the old snapshot, prune (on the full disk).
    repo.run("forget", first)
    repo.run("prune")
    assert _leftovers(small_disk) == []
    repo.backup(str(src))
    repo.run("check", "--read-data")
    out = tmp_path / "out"
    repo.restore("latest", out)
    restored = out / src.relative_to("/") / "second.bin"
    assert restored.read_bytes() == (src / "second.bin").read_bytes()

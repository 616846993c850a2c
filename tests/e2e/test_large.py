"""A file over 100 MiB and 10,000 small files: round trip, then an incremental no-op backup."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from e2e_support import CLI, make_repo, restored_path

MIB = 1 << 20
BIG_MIB = 110
DIRS = 100
FILES_PER_DIR = 100


def make_big_file(path: Path) -> str:
    """110 MiB: 36 MiB unique random, a 24 MiB random segment three times, 2 MiB of zeros."""
    digest = hashlib.sha256()
    repeated = [os.urandom(MIB) for _ in range(24)]
    blocks = iter(
        [lambda: os.urandom(MIB)] * 36
        + [lambda b=b: b for b in repeated] * 3
        + [lambda: bytes(MIB)] * 2
    )
    with open(path, "wb") as f:
        for make in blocks:
            block = make()
            f.write(block)
            digest.update(block)
        tail = os.urandom(12345)  # not a multiple of any block size
        f.write(tail)
        digest.update(tail)
    return digest.hexdigest()


def make_small_files(root: Path) -> dict[str, str]:
    hashes = {}
    for d in range(DIRS):
        directory = root / f"d{d:03}"
        directory.mkdir()
        for i in range(FILES_PER_DIR):
            data = f"dir {d} file {i}\n".encode() * (i % 40 + 1) + os.urandom(i % 7)
            name = f"f{i:03}.txt"
            (directory / name).write_bytes(data)
            hashes[f"small/d{d:03}/{name}"] = hashlib.sha256(data).hexdigest()
    return hashes


def hash_tree(root: Path) -> dict[str, str]:
    hashes = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(MIB):
                    digest.update(block)
            hashes[path.relative_to(root).as_posix()] = digest.hexdigest()
    return hashes


@pytest.mark.slow
def test_large_file_and_many_small_files(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    (src / "small").mkdir(parents=True)
    expected = make_small_files(src / "small")
    expected["big.bin"] = make_big_file(src / "big.bin")
    n_files = DIRS * FILES_PER_DIR + 1
    total_bytes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())

    first = repo.backup(str(src), timeout=300)
    assert first["files_total"] == n_files, first
    assert first["files_new"] == n_files, first
    assert first["bytes_total"] == total_bytes, first
    assert first["errors"] == [], first
    # The repeated 24 MiB segment is stored once (give or take chunks at its edges).
    assert first["bytes_new"] < total_bytes - 24 * MIB, first

    target = tmp_path / "restore"
    repo.restore(first["snapshot_id"], target, timeout=300)
    assert hash_tree(restored_path(target, src)) == expected

    second = repo.backup(str(src), timeout=300)
    assert second["snapshot_id"] != first["snapshot_id"]
    assert second["files_total"] == n_files, second
    assert second["files_unmodified"] == n_files, second
    assert second["files_new"] == 0 and second["files_changed"] == 0, second
    assert second["bytes_total"] == total_bytes, second
    # No new data blobs; at most a little tree metadata (e.g. if access times are recorded).
    assert second["bytes_new"] <= 2 * MIB, second
    assert second["bytes_stored"] <= 2 * MIB, second

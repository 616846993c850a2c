"""Restore never follows a symlink below the target: planted links at a directory, at any
parent, at an entry's name, or swapped in during the restore, and bounded directory fds."""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path
from typing import Any

import pytest
from test_restore_support import Builder

from drengine.core.model import Node, Snapshot
from drengine.engine import restore as restore_module
from drengine.engine.restore import run_restore
from drengine.repository.repo import Repository


def _snapshot(repo: Repository, password: bytes) -> tuple[Repository, Snapshot]:
    """a/b/secret.txt, a/file.txt, a/link, a/fifo, a/h1 + top_h2 (hard links), top.txt."""
    b = Builder(repo, password)
    hard = {"links": 2, "inode": 77, "device": 5}
    secret = b.file(b"secret.txt", b"root's secret\n", mode=0o600)
    inner = b.dir(b"b", [secret])
    link = Node(name=b"link", type="symlink", mode=0o777, target=b"../top.txt", mtime_ns=5)
    fifo = Node(name=b"fifo", type="fifo", mode=0o640, mtime_ns=6)
    a = b.dir(
        b"a",
        [inner, b.file(b"file.txt", b"in a\n"), link, fifo, b.file(b"h1", b"hard\n", **hard)],
    )
    return b.snapshot([a, b.file(b"top.txt", b"top\n"), b.file(b"top_h2", b"hard\n", **hard)])


@pytest.fixture
def snap(mem_repo: Repository, repo_password: bytes) -> tuple[Repository, Snapshot]:
    return _snapshot(mem_repo, repo_password)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim").write_bytes(b"must stay\n")
    return path


def _outside_unchanged(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"must stay\n"


def _errors(result: Any, target: Path) -> dict[str, str]:
    return {os.path.relpath(e["path"], target): e["error"] for e in result.errors}


def test_symlink_at_a_parent_directory_is_refused(
    snap: tuple[Repository, Snapshot], tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "a")
    result = run_restore(*snap, str(target))
    _outside_unchanged(outside)
    errors = _errors(result, target)
    assert "is not a directory" in errors.pop("a")
    below = {"a/b", "a/b/secret.txt", "a/file.txt", "a/link", "a/fifo", "a/h1"}
    assert set(errors) == below
    assert all(msg.startswith(f"not restored: {target}/a ") for msg in errors.values())
    assert os.readlink(target / "a") == str(outside)  # left as it was
    assert (target / "top.txt").read_bytes() == b"top\n"
    assert (target / "top_h2").read_bytes() == b"hard\n"  # the other name of a/h1


def test_symlink_at_a_directory_reports_everything_below(
    snap: tuple[Repository, Snapshot], tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "target"
    (target / "a").mkdir(parents=True)
    os.symlink(outside, target / "a" / "b")
    result = run_restore(*snap, str(target))
    _outside_unchanged(outside)
    errors = _errors(result, target)
    assert set(errors) == {"a/b", "a/b/secret.txt"}
    assert "not a directory" in errors["a/b"] and "not restored" in errors["a/b/secret.txt"]
    assert (target / "a" / "file.txt").read_bytes() == b"in a\n"


def test_symlinks_at_entry_names_are_replaced_not_followed(
    snap: tuple[Repository, Snapshot], tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "target"
    (target / "a").mkdir(parents=True)
    for name in ("top.txt", "top_h2", "a/file.txt", "a/link", "a/fifo", "a/h1"):
        os.symlink(outside / "victim", target / name)
    result = run_restore(*snap, str(target))
    assert result.errors == []
    _outside_unchanged(outside)
    for name, content in (("top.txt", b"top\n"), ("a/file.txt", b"in a\n"), ("a/h1", b"hard\n")):
        assert stat.S_ISREG(os.lstat(target / name).st_mode)
        assert (target / name).read_bytes() == content
    assert os.lstat(target / "a/h1").st_ino == os.lstat(target / "top_h2").st_ino
    assert os.readlink(target / "a/link") == "../top.txt"
    assert stat.S_ISFIFO(os.lstat(target / "a/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(target / "a/fifo").st_mode) == 0o640


def test_directory_swapped_for_a_symlink_during_restore(
    snap: tuple[Repository, Snapshot],
    tmp_path: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the directories are made and checked, a user who can write the target swaps
    one for a symlink: nothing may be written through it."""
    target = tmp_path / "target"
    real = restore_module.pack_batches

    def swap_then_batch(*args: Any, **kwargs: Any) -> Any:
        os.rename(target / "a" / "b", target / "a" / "b.moved")
        os.symlink(outside, target / "a" / "b")
        return real(*args, **kwargs)

    monkeypatch.setattr(restore_module, "pack_batches", swap_then_batch)
    run_restore(*snap, str(target))
    _outside_unchanged(outside)


def test_target_itself_may_be_a_symlink(snap: tuple[Repository, Snapshot], tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "via-link")
    result = run_restore(*snap, str(tmp_path / "via-link"))
    assert result.errors == []
    assert (real / "a" / "b" / "secret.txt").read_bytes() == b"root's secret\n"


def _wide(repo: Repository, password: bytes, dirs: int) -> tuple[Repository, Snapshot]:
    b = Builder(repo, password)
    top = [
        b.dir(b"d%04d" % i, [b.file(b"f", b"%d" % i), b.dir(b"sub", [b.file(b"g", b"g%d" % i)])])
        for i in range(dirs)
    ]
    return b.snapshot([b.dir(b"wide", top)])


def _check_wide(target: Path, dirs: int) -> None:
    for i in range(dirs):
        assert (target / f"wide/d{i:04d}/f").read_bytes() == b"%d" % i
        assert (target / f"wide/d{i:04d}/sub/g").read_bytes() == b"g%d" % i


def test_directory_descriptors_are_bounded(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, snap = _wide(mem_repo, repo_password, 400)
    made: list[Any] = []

    class Recording(restore_module.DirFds):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(restore_module, "DirFds", Recording)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 96), hard))
    try:
        result = run_restore(reader, snap, str(tmp_path / "t"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.errors == []
    assert result.files == 800 and result.dirs == 801
    (fds,) = made
    assert fds.peak <= 24  # 96 // 4
    _check_wide(tmp_path / "t", 400)
    for i in (0, 399):
        assert stat.S_IMODE(os.lstat(tmp_path / f"t/wide/d{i:04d}/sub").st_mode) == 0o755

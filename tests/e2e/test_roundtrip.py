"""Back up a tree holding what real file systems hold, restore it, compare everything."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    CLI,
    Repo,
    assert_same_tree,
    make_repo,
    restored_path,
    scan_tree,
    sha256_file,
    write_random,
)

MIB = 1 << 20
SPARSE_SIZE = 64 * MIB
BASE_NS = 1_600_000_000_123_456_789  # 2020-09-13, with every nanosecond digit set


def xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def build_tree(src: Path) -> dict[str, Any]:
    """Create the source tree; returns facts the tests check beyond the generic comparison."""
    srcb = os.fsencode(src)
    src.mkdir()
    facts: dict[str, Any] = {"xattrs": xattrs_supported(src)}

    (src / "plain.txt").write_bytes(b"hello, world\n")
    write_random(src / "random.bin", 300_000)
    (src / "compressible.txt").write_bytes(b"the same line over and over\n" * 20_000)
    (src / "empty_file").write_bytes(b"")
    (src / "empty_dir").mkdir()

    # Names that are not UTF-8, contain a newline, a backslash, a leading dash, 255 bytes.
    with open(os.path.join(srcb, b"caf\xe9"), "wb") as f:
        f.write(b"latin-1 name\n")
    os.mkdir(os.path.join(srcb, b"dir\xff\xfe"))
    with open(os.path.join(srcb, b"dir\xff\xfe", b"\xe9t\xe9"), "wb") as f:
        f.write(b"inside a non-UTF-8 directory\n")
    (src / "new\nline").write_bytes(b"newline in name\n")
    (src / "back\\slash and space ünïcødé").write_bytes(b"unicode\n")
    (src / "-rf").write_bytes(b"leading dash\n")
    (src / ("L" * 255)).write_bytes(b"longest name\n")

    # Symlinks: dangling, relative, absolute, to a directory (must not be followed).
    sub = src / "sub"
    sub.mkdir()
    (sub / "deeper").mkdir()
    (sub / "deeper" / "leaf.txt").write_bytes(b"leaf\n")
    write_random(sub / "data.bin", 70_000)
    links = src / "links"
    links.mkdir()
    os.symlink("does-not-exist", links / "dangling")
    os.symlink("../plain.txt", links / "relative")
    os.symlink(str(src / "plain.txt"), links / "absolute")
    os.symlink("../sub", links / "to_dir")

    # Hard links: two names, one inode, in different directories.
    (src / "hard1").write_bytes(b"one inode, two names\n" * 100)
    os.link(src / "hard1", sub / "hard2")

    # Sparse: 64 MiB with 1 MiB of random data in the middle.
    with open(src / "sparse", "wb") as f:
        f.truncate(SPARSE_SIZE)
        f.seek(SPARSE_SIZE // 2)
        f.write(os.urandom(MIB))
    facts["sparse_blocks_source"] = os.stat(src / "sparse").st_blocks * 512
    with open(src / "sparse_tail", "wb") as f:  # data, then a hole up to the end
        f.write(os.urandom(100_000))
        f.truncate(16 * MIB)
    with open(src / "all_hole", "wb") as f:  # no data at all
        f.truncate(16 * MIB)

    # Modes: read-only, executable, setuid (after chown: chown clears it), setgid and sticky dirs.
    (src / "readonly").write_bytes(b"read only\n")
    os.chmod(src / "readonly", 0o444)
    (src / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(src / "exec.sh", 0o755)
    (src / "private").write_bytes(b"private\n")
    os.chmod(src / "private", 0o600)
    (src / "setgid_dir").mkdir()
    (src / "setgid_dir" / "inside").write_bytes(b"x\n")
    os.chown(src / "setgid_dir", 0, 5678)
    os.chmod(src / "setgid_dir", 0o2775)
    (src / "sticky_dir").mkdir()
    os.chmod(src / "sticky_dir", 0o1777)
    (src / "restricted_dir").mkdir()
    (src / "restricted_dir" / "f").write_bytes(b"in a 0700 dir\n")
    (src / "readonly_dir" / "inner").mkdir(parents=True)
    (src / "readonly_dir" / "inner" / "f").write_bytes(b"in a read-only dir\n")
    (src / "closed_dir").mkdir()
    (src / "closed_dir" / "f").write_bytes(b"in a mode 000 dir\n")

    # Ownership: a file, a directory and a symlink owned by others.
    (src / "owned").write_bytes(b"owned by 1234:5678\n")
    os.chown(src / "owned", 1234, 5678)
    (src / "owned_dir").mkdir()
    (src / "owned_dir" / "f").write_bytes(b"f\n")
    os.chown(src / "owned_dir", 4321, 8765)
    os.symlink("plain.txt", src / "owned_link")
    os.lchown(src / "owned_link", 2222, 3333)
    (src / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chown(src / "setuid", 1234, 5678)
    os.chmod(src / "setuid", 0o4755)

    if facts["xattrs"]:
        os.setxattr(src / "plain.txt", "user.comment", b"a comment")
        os.setxattr(src / "random.bin", "user.binary", b"\x00\xff\x01binary value\n")
        os.setxattr(src / "sub", "user.on_dir", b"directory attribute")
        os.setxattr(src / "empty_file", "user.empty", b"")

    os.chmod(src / "restricted_dir", 0o700)
    os.chmod(src / "readonly_dir" / "inner", 0o555)
    os.chmod(src / "readonly_dir", 0o555)
    os.chmod(src / "closed_dir", 0)

    # Nanosecond mtimes on everything, deepest first so directory times stay put.
    paths = sorted(
        (
            os.path.join(dirpath, name)
            for dirpath, dirs, files in os.walk(srcb)
            for name in dirs + files
        ),
        key=lambda p: p.count(b"/"),
        reverse=True,
    )
    for i, path in enumerate([*paths, srcb]):
        ns = BASE_NS + i * 1_000_000_007
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    return facts


@dataclass
class RoundTrip:
    repo: Repo
    src: Path
    target: Path
    restored: Path
    before: dict[bytes, dict[str, Any]]
    summary: dict[str, Any]
    facts: dict[str, Any]
    work: Path


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory: pytest.TempPathFactory) -> RoundTrip:
    work = tmp_path_factory.mktemp("roundtrip").resolve()
    cli = CLI(work)
    repo = make_repo(cli, work / "repo")
    src = work / "src"
    facts = build_tree(src)
    before = scan_tree(src)
    summary = repo.backup(str(src))
    # Backing up must not change the source (e.g. atime-preserving tricks touching mtimes).
    assert_same_tree(before, scan_tree(src))
    target = work / "restore"
    repo.restore(summary["snapshot_id"], target)
    return RoundTrip(repo, src, target, restored_path(target, src), before, summary, facts, work)


def test_restored_tree_identical(roundtrip: RoundTrip) -> None:
    """Names (bytes), types, modes, sizes, contents, mtime_ns, owners, link targets, xattrs."""
    assert roundtrip.restored.is_dir(), f"nothing restored at {roundtrip.restored}"
    assert_same_tree(roundtrip.before, scan_tree(roundtrip.restored))


def test_backup_summary_counts(roundtrip: RoundTrip) -> None:
    regular = {k: v for k, v in roundtrip.before.items() if v["type"] == "file"}
    summary = roundtrip.summary
    # hard1 and sub/hard2 are two names of one file: each counts, as restic counts them.
    assert summary["files_total"] == len(regular), summary
    assert summary["files_new"] == summary["files_total"], summary
    assert summary["files_unmodified"] == 0, summary
    assert summary["errors"] == [], summary
    total = sum(v["size"] for v in regular.values())
    hard = roundtrip.before[b"hard1"]["size"]
    assert summary["bytes_total"] in (total, total - hard), summary


def test_symlinks_not_followed(roundtrip: RoundTrip) -> None:
    links = roundtrip.restored / "links"
    assert os.readlink(links / "dangling") == "does-not-exist"
    assert os.readlink(links / "relative") == "../plain.txt"
    assert os.readlink(links / "absolute") == str(roundtrip.src / "plain.txt")
    assert os.readlink(links / "to_dir") == "../sub"
    for name in ("dangling", "relative", "absolute", "to_dir"):
        assert stat.S_ISLNK(os.lstat(links / name).st_mode), name


def test_symlink_mtime_and_owner(roundtrip: RoundTrip) -> None:
    for name in ("links/relative", "links/dangling", "owned_link"):
        src = os.lstat(roundtrip.src / name)
        dst = os.lstat(roundtrip.restored / name)
        assert dst.st_mtime_ns == src.st_mtime_ns, name
    st = os.lstat(roundtrip.restored / "owned_link")
    assert (st.st_uid, st.st_gid) == (2222, 3333)


def test_hard_links_share_an_inode(roundtrip: RoundTrip) -> None:
    one = os.lstat(roundtrip.restored / "hard1")
    two = os.lstat(roundtrip.restored / "sub" / "hard2")
    assert one.st_ino == two.st_ino, "hard links restored as separate files"
    assert one.st_nlink == 2


def test_sparse_file_stays_sparse(roundtrip: RoundTrip) -> None:
    path = roundtrip.restored / "sparse"
    st = os.stat(path)
    assert st.st_size == SPARSE_SIZE
    assert sha256_file(path) == sha256_file(roundtrip.src / "sparse")
    if roundtrip.facts["sparse_blocks_source"] > 8 * MIB:
        pytest.skip("the tmp file system does not store sparse files")
    allocated = st.st_blocks * 512
    assert allocated <= 8 * MIB, f"restored sparse file allocates {allocated} bytes"
    for name in ("sparse_tail", "all_hole"):
        st = os.stat(roundtrip.restored / name)
        assert st.st_size == 16 * MIB, name
        assert st.st_blocks * 512 <= 4 * MIB, f"{name} allocates {st.st_blocks * 512} bytes"


def test_ownership_and_special_modes(roundtrip: RoundTrip) -> None:
    r = roundtrip.restored
    st = os.lstat(r / "owned")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    st = os.lstat(r / "owned_dir")
    assert (st.st_uid, st.st_gid) == (4321, 8765)
    st = os.lstat(r / "setuid")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
    assert stat.S_IMODE(os.lstat(r / "setgid_dir").st_mode) == 0o2775
    assert stat.S_IMODE(os.lstat(r / "sticky_dir").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(r / "readonly").st_mode) == 0o444
    assert stat.S_IMODE(os.lstat(r / "exec.sh").st_mode) == 0o755


def test_nanosecond_mtimes(roundtrip: RoundTrip) -> None:
    for name in ("plain.txt", "sub", "sub/deeper", "empty_dir", "readonly", "."):
        src = os.lstat(roundtrip.src / name).st_mtime_ns
        dst = os.lstat(roundtrip.restored / name).st_mtime_ns
        assert src % 1_000_000_000 != 0
        assert dst == src, f"{name}: mtime {dst} != {src}"


def test_xattrs(roundtrip: RoundTrip) -> None:
    if not roundtrip.facts["xattrs"]:
        pytest.skip("the tmp file system does not support user.* xattrs")
    r = roundtrip.restored
    assert os.getxattr(r / "plain.txt", "user.comment") == b"a comment"
    assert os.getxattr(r / "random.bin", "user.binary") == b"\x00\xff\x01binary value\n"
    assert os.getxattr(r / "sub", "user.on_dir") == b"directory attribute"
    assert os.getxattr(r / "empty_file", "user.empty") == b""


def test_restore_include_one_subdirectory(roundtrip: RoundTrip) -> None:
    target = roundtrip.work / "restore-include-sub"
    snap = roundtrip.summary["snapshot_id"]
    roundtrip.repo.restore(snap, target, "--include", str(roundtrip.src / "sub"))
    restored = restored_path(target, roundtrip.src)
    assert sorted(os.listdir(restored)) == ["sub"]
    # sub/hard2's other name is outside the include: the file must still be complete.
    expected = scan_tree(roundtrip.src / "sub")
    actual = scan_tree(restored / "sub")
    assert_same_tree(expected, actual)


def test_restore_include_non_utf8_file(roundtrip: RoundTrip) -> None:
    target = roundtrip.work / "restore-include-cafe"
    snap = roundtrip.summary["snapshot_id"]
    wanted = os.path.join(os.fsencode(roundtrip.src), b"caf\xe9")
    roundtrip.repo.restore(snap, target, "--include", wanted)
    restored = os.fsencode(restored_path(target, roundtrip.src))
    assert os.listdir(restored) == [b"caf\xe9"]
    with open(os.path.join(restored, b"caf\xe9"), "rb") as f:
        assert f.read() == b"latin-1 name\n"


def test_special_files(cli: CLI, tmp_path: Path) -> None:
    """FIFOs, sockets and device nodes are recreated, never opened for reading."""
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    src.mkdir()
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "loop", 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    names = ["fifo", "null", "loop", "regular", "."]
    if len(os.fsencode(src / "sock")) < 100:  # sun_path holds 108 bytes
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(src / "sock"))
        names.append("sock")
    (src / "regular").write_bytes(b"regular\n")
    for i, name in enumerate(names):
        ns = BASE_NS + i * 999_999_937
        os.utime(src / name, ns=(ns, ns))
    before = scan_tree(src)
    summary = repo.backup(str(src), timeout=60)
    target = tmp_path / "restore"
    repo.restore(summary["snapshot_id"], target)
    assert_same_tree(before, scan_tree(restored_path(target, src)))


def test_exclude_glob(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    (src / "a" / "b").mkdir(parents=True)
    kept = {
        "keep.txt": b"keep\n",
        "a/notes.tmpl": b"template, not tmp\n",
        "a/b/data.bin": os.urandom(5000),
        "tmp": b"a file called tmp\n",
    }
    excluded = {"top.tmp": b"x\n", "a/one.tmp": b"y\n", "a/b/two.tmp": os.urandom(4000)}
    for name, data in {**kept, **excluded}.items():
        (src / name).write_bytes(data)
    summary = repo.backup(str(src), "--exclude", "*.tmp")

    listed = {e["path"] for e in repo.ls(summary["snapshot_id"])}
    for name in excluded:
        assert str(src / name) not in listed
    for name in kept:
        assert str(src / name) in listed

    target = tmp_path / "restore"
    repo.restore(summary["snapshot_id"], target)
    restored = restored_path(target, src)
    found = {
        p.relative_to(restored).as_posix(): p.read_bytes()
        for p in restored.rglob("*")
        if p.is_file()
    }
    assert found == kept


def test_backup_of_a_single_file_and_a_relative_path(cli: CLI, tmp_path: Path) -> None:
    """A file given directly is stored under its absolute path; relative paths are made absolute."""
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    src.mkdir()
    (src / "alone.txt").write_bytes(b"just me\n")
    (src / "sibling").write_bytes(b"not backed up\n")
    os.utime(src / "alone.txt", ns=(BASE_NS, BASE_NS))
    # The CLI runs with cwd=tmp_path, so "src/alone.txt" is relative to it.
    summary = repo.backup("src/alone.txt")
    snap = repo.snapshots()[0]
    assert snap["paths"] == [str(src / "alone.txt")]
    assert summary["files_total"] == 1
    target = tmp_path / "restore"
    repo.restore(summary["snapshot_id"], target)
    restored = restored_path(target, src)
    assert os.listdir(restored) == ["alone.txt"]
    assert (restored / "alone.txt").read_bytes() == b"just me\n"
    assert os.stat(restored / "alone.txt").st_mtime_ns == BASE_NS


def test_changed_content_with_same_size_and_mtime_is_backed_up(cli: CLI, tmp_path: Path) -> None:
    """The files cache must not trust size+mtime alone (ctime/inode change too)."""
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    src.mkdir()
    path = src / "f"
    path.write_bytes(b"AAAA" * 1000)
    os.utime(path, ns=(BASE_NS, BASE_NS))
    repo.backup(str(src))
    with open(path, "r+b") as f:
        f.write(b"BBBB")
    os.utime(path, ns=(BASE_NS, BASE_NS))
    second = repo.backup(str(src))
    assert second["files_changed"] == 1, second
    assert repo.run("dump", "latest", str(path)).stdout == b"BBBB" + b"AAAA" * 999

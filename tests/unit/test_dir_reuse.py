"""Unchanged directories: their tree blob is reused from the files cache, never re-encoded,
and never reused when anything it depends on changed (the tree must equal what a backup
without any cache builds)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drengine.core import model
from drengine.core.cache_dir import repo_cache_dir
from drengine.core.model import Node, Snapshot
from drengine.engine.backup import BackupOptions, run_backup
from drengine.pipeline import content as content_mod
from drengine.pipeline.saver import BlobSaver
from drengine.repository import layout
from drengine.repository.index_split import index_batches
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord
from drengine.repository.repo import Repository
from drengine.sources import files_cache, files_meta, files_read_procs, files_walk
from drengine.sources.excludes import ExcludeRules
from drengine.sources.files import FileSource

_SETTLE_S = 0.05  # past the files cache's racy margin (20 ms on fine timestamps)


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """The names of every tree the backups encode."""
    seen: list[list[bytes]] = []

    def counting(nodes: list[Node]) -> bytes:
        seen.append(sorted(n.name for n in nodes))
        return model.encode_tree(nodes)

    def counting_parts(parts: list[tuple[bytes, bytes]]) -> bytes:
        seen.append(sorted(name for name, _ in parts))
        return model.encode_tree_parts(parts)

    monkeypatch.setattr(content_mod, "encode_tree", counting)
    monkeypatch.setattr(content_mod, "encode_tree_parts", counting_parts)
    return seen


def _tree(root: Path) -> None:
    for d in ("a/b/c", "a/d", "e"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(("", "a", "a/b", "a/b/c", "a/d", "e")):
        for j in range(3):
            (root / d / f"f{j}.txt").write_bytes(f"{d} {i} {j}\n".encode() * (j * 700 + 1))
    os.symlink("a/b", root / "link")
    (root / "a" / "big.bin").write_bytes(os.urandom(40_000))
    time.sleep(_SETTLE_S)


def _every_directory_was_encoded(encoded: list[list[bytes]], src: Path) -> None:
    """The six directories of ``_tree`` and each one above ``src``."""
    assert len(encoded) == 6 + len(src.parts) - 1


def _backup(repo: Repository, src: Path, cache: bool = True, **kw: object) -> Snapshot:
    source = FileSource([str(src)], **kw)  # type: ignore[arg-type]
    return run_backup(repo, BackupOptions([source], use_files_cache=cache)).snapshot


def _subtree(repo: Repository, snap: Snapshot, path: Path) -> bytes:
    tree = snap.tree
    for part in path.parts[1:]:
        (node,) = [n for n in repo.load_tree(tree) if n.name == os.fsencode(part)]
        assert node.subtree is not None
        tree = node.subtree
    return tree


def test_an_unchanged_directory_is_not_encoded_again(
    mem_repo: Repository, tmp_path: Path, encoded: list[list[bytes]]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    first = _backup(mem_repo, src)
    encoded.clear()
    second = _backup(mem_repo, src)
    assert second.tree == first.tree
    # Only the directories above the backed-up path were encoded (they are not walked).
    assert [names for names in encoded if b"f0.txt" in names or b"c" in names] == []
    assert len(encoded) == len(src.parts) - 1
    assert second.summary["files_unmodified"] == first.summary["files_total"] == 19
    assert second.summary["bytes_total"] == first.summary["bytes_total"]
    assert second.summary["dirs_total"] == first.summary["dirs_total"]


def _write_same_size_keep_mtime(p: Path) -> None:
    st = p.stat()
    p.write_bytes(bytes(b ^ 1 for b in p.read_bytes()))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells


def _replace_symlink(p: Path) -> None:
    p.unlink()
    os.symlink("a/d", p)


def _try_xattr(p: Path) -> None:
    try:
        os.setxattr(p, "user.drengine-test", b"v")
    except OSError:
        pytest.skip("no user extended attributes on this file system")


MUTATIONS: dict[str, Callable[[Path], None]] = {
    "content, same size and mtime": lambda s: _write_same_size_keep_mtime(s / "a/b/c/f1.txt"),
    "appended": lambda s: (s / "a/b/c/f2.txt").open("ab").write(b"more"),
    "new file deep": lambda s: (s / "a/b/c/new.txt").write_bytes(b"new"),
    "file removed": lambda s: (s / "a/d/f0.txt").unlink(),
    "file mode": lambda s: (s / "e/f1.txt").chmod(0o600),
    "directory mode": lambda s: (s / "a/b").chmod(0o700),
    "symlink target": lambda s: _replace_symlink(s / "link"),
    "directory renamed": lambda s: (s / "a/d").rename(s / "a/d2"),
    "empty directory": lambda s: (s / "a/b/c/empty").mkdir(),
    "directory removed": lambda s: shutil.rmtree(s / "e"),
    "hard link": lambda s: os.link(s / "a/f0.txt", s / "a/b/hard"),
    "large file changed": lambda s: (s / "a/big.bin").write_bytes(os.urandom(40_000)),
    "xattr": lambda s: _try_xattr(s / "a/b/c/f0.txt"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_change_gives_the_tree_a_backup_without_cache_gives(
    mem_repo: Repository, tmp_path: Path, mutation: str, encoded: list[list[bytes]]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    _backup(mem_repo, src)
    _backup(mem_repo, src)  # rows of every directory, reused
    MUTATIONS[mutation](src)
    time.sleep(_SETTLE_S)
    encoded.clear()
    cached = _backup(mem_repo, src)
    assert encoded  # something changed: at least the path to it was encoded again
    fresh = _backup(mem_repo, src, cache=False)
    assert _subtree(mem_repo, cached, src) == _subtree(mem_repo, fresh, src)
    again = _backup(mem_repo, src)  # and the rows written after the change hold
    assert _subtree(mem_repo, again, src) == _subtree(mem_repo, fresh, src)


def test_changed_excludes_are_never_answered_from_old_rows(
    mem_repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    rules = ExcludeRules(patterns=("f1.txt",))
    _backup(mem_repo, src, exclude=rules)
    _backup(mem_repo, src, exclude=rules)
    cached = _backup(mem_repo, src)
    fresh = _backup(mem_repo, src, cache=False)
    assert _subtree(mem_repo, cached, src) == _subtree(mem_repo, fresh, src)
    assert cached.summary["files_total"] == 19


def test_rows_are_not_stored_for_entries_changed_too_recently(
    mem_repo: Repository,
    tmp_path: Path,
    encoded: list[list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    _tree(src)
    with monkeypatch.context() as m:  # every entry changed "just now"
        m.setattr(files_walk, "racy_margin_ns", lambda c, m: 10**18)
        _backup(mem_repo, src)
    encoded.clear()
    _backup(mem_repo, src)
    _every_directory_was_encoded(encoded, src)


def test_rows_of_a_backup_that_failed_are_never_used(
    mem_repo: Repository,
    tmp_path: Path,
    encoded: list[list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    _tree(src)
    close = BlobSaver.close

    def close_then_fail(self: BlobSaver) -> None:
        close(self)  # every tree uploaded and indexed: only the generation tells
        raise RuntimeError("failed after the uploads")

    monkeypatch.setattr(files_cache, "_FLUSH_EVERY", 1)  # rows reach SQLite at once
    with monkeypatch.context() as m:
        m.setattr(BlobSaver, "close", close_then_fail)
        with pytest.raises(RuntimeError):
            _backup(mem_repo, src)
    encoded.clear()
    _backup(mem_repo, src)
    _every_directory_was_encoded(encoded, src)


def test_a_pack_lost_since_the_last_backup_drops_every_row(
    mem_repo: Repository, tmp_path: Path, encoded: list[list[bytes]], repo_password: bytes
) -> None:
    src = _backed_up_twice(mem_repo, tmp_path)
    mem_repo.load_index()
    data_packs = {e.pack_id for _, e in mem_repo.index.entries() if e.type == BlobType.DATA}
    tree_packs = {e.pack_id for _, e in mem_repo.index.entries() if e.type == BlobType.TREE}
    assert data_packs and not data_packs & tree_packs
    for pack in data_packs:  # the trees survive: only the packs' absence tells
        mem_repo.backend.delete(layout.pack_name(pack.hex()))
    _backup_without_rows(mem_repo, src, encoded, repo_password)


def test_blobs_lost_from_the_index_drop_every_row(
    mem_repo: Repository, tmp_path: Path, encoded: list[list[bytes]], repo_password: bytes
) -> None:
    """The packs are all in storage, but the index no longer lists the data blobs (an index
    object lost or damaged): rows must not name blobs a restore cannot find."""
    src = _backed_up_twice(mem_repo, tmp_path)
    mem_repo.load_index()
    trees: dict[bytes, list[BlobRecord]] = {}
    for blob_id, e in mem_repo.index.entries():
        if e.type == BlobType.TREE:
            trees.setdefault(e.pack_id, []).append(
                BlobRecord(e.type, blob_id, e.offset, e.length, e.raw_length)
            )
    for obj in list(mem_repo.backend.list(layout.INDEX)):
        mem_repo.backend.delete(obj.name)
    for part in index_batches(list(trees.items())):
        mem_repo.save_index(part)
    _backup_without_rows(mem_repo, src, encoded, repo_password)


def test_a_cache_that_recorded_packs_without_their_entries_drops_its_rows(
    mem_repo: Repository, tmp_path: Path, encoded: list[list[bytes]]
) -> None:
    src = _backed_up_twice(mem_repo, tmp_path)
    db = sqlite3.connect(repo_cache_dir(mem_repo.id) / "files.sqlite")
    with db:
        db.execute("INSERT INTO packs VALUES (?)", (b"\x01" * 32,))  # as older versions did
    db.close()
    encoded.clear()
    _backup(mem_repo, src)
    _every_directory_was_encoded(encoded, src)
    encoded.clear()
    _backup(mem_repo, src)
    assert len(encoded) == len(src.parts) - 1  # the rows written again are used


def _backed_up_twice(repo: Repository, tmp_path: Path) -> Path:
    """``_tree`` backed up twice, the second time past the racy margin: the cache's
    directory and entry rows are stored."""
    src = tmp_path / "src"
    _tree(src)
    _backup(repo, src)
    time.sleep(_SETTLE_S)
    _backup(repo, src)
    return src


def _backup_without_rows(
    damaged: Repository, src: Path, encoded: list[list[bytes]], repo_password: bytes
) -> None:
    """A backup after damage uses no row, reads every file again, and restores exactly."""
    repo = Repository.open(damaged.backend, repo_password)
    encoded.clear()
    snap = _backup(repo, src)
    _every_directory_was_encoded(encoded, src)
    assert snap.summary["files_unmodified"] == 0
    _every_file_reads_back(Repository.open(damaged.backend, repo_password), snap, src)


def _every_file_reads_back(reader: Repository, snap: Snapshot, src: Path) -> None:
    reader.load_index()
    stack = [(src, _subtree(reader, snap, src))]
    files = 0
    while stack:
        path, tree = stack.pop()
        for node in reader.load_tree(tree):
            p = path / os.fsdecode(node.name)
            if node.type == "dir":
                assert node.subtree is not None
                stack.append((p, node.subtree))
            elif node.type == "file":
                files += 1
                assert b"".join(reader.read_blob(b) for b in node.content) == p.read_bytes()
    assert files == 19


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The names of every entry a backup builds a node for (in this process: a read worker
    builds those of the small files it reads, so there are none here)."""
    monkeypatch.setenv(files_read_procs.ENV, "0")
    names: list[bytes] = []
    real = files_walk.node_from_stat

    def counting(name: bytes, place: files_meta.Place, st: os.stat_result) -> Node:
        names.append(name)
        return real(name, place, st)

    monkeypatch.setattr(files_walk, "node_from_stat", counting)
    return names


def test_unchanged_entries_of_a_changed_directory_keep_their_json(
    mem_repo: Repository, tmp_path: Path, built: list[bytes]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    _backup(mem_repo, src)
    (src / "a/b/c/f1.txt").write_bytes(b"changed\n")
    (src / "a/f2.txt").write_bytes(b"changed too\n")
    time.sleep(_SETTLE_S)
    built.clear()
    cached = _backup(mem_repo, src)
    # The directories walked to the changes and the two changed files; nothing else.
    assert sorted(set(built) - {os.fsencode(p) for p in src.parts}) == [
        b"a",
        b"b",
        b"c",
        b"d",
        b"e",
        b"f1.txt",
        b"f2.txt",
    ]
    assert cached.summary["files_changed"] == 2
    assert cached.summary["files_unmodified"] == 17
    assert cached.summary["bytes_total"] == sum(
        p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()
    )
    fresh = _backup(mem_repo, src, cache=False)
    assert _subtree(mem_repo, cached, src) == _subtree(mem_repo, fresh, src)


def _damage_entry_records(repo: Repository) -> int:
    db = sqlite3.connect(repo_cache_dir(repo.id) / "files.sqlite")
    with db:
        rows = db.execute("SELECT dir, entries FROM dir_entries").fetchall()
        for d, entries in rows:
            flipped = bytes([entries[-1] ^ 1])
            db.execute(
                "UPDATE dir_entries SET entries = ? WHERE dir = ?", (entries[:-1] + flipped, d)
            )
    db.close()
    return len(rows)


def test_damaged_entry_records_cost_speed_only(
    mem_repo: Repository, tmp_path: Path, built: list[bytes]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    _backup(mem_repo, src)
    assert _damage_entry_records(mem_repo) >= 6
    (src / "a/b/c/f1.txt").write_bytes(b"changed\n")
    time.sleep(_SETTLE_S)
    built.clear()
    cached = _backup(mem_repo, src)
    assert {b"f0.txt", b"f2.txt"} <= set(built)  # built again: the records were not trusted
    fresh = _backup(mem_repo, src, cache=False)
    assert _subtree(mem_repo, cached, src) == _subtree(mem_repo, fresh, src)

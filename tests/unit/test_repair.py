"""repair index and repair snapshots bring a damaged repository back to a clean check, and
one bad object never stops the other commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drengine.core.errors import DrengineError
from drengine.core.model import Node, Snapshot
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import run_check
from drengine.engine.prune import PruneRefused, run_prune
from drengine.engine.repair_index import run_repair_index
from drengine.engine.repair_snapshots import REPAIRED_TAG, run_repair_snapshots
from drengine.repository import layout
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.faults import FaultyBackend
from drengine.storage.memory import MemoryBackend

Files = dict[str, bytes]


def entries(repo: Repository, snap: Snapshot) -> dict[str, Node]:
    out: dict[str, Node] = {}
    stack = [("", snap.tree)]
    while stack:
        prefix, tree = stack.pop()
        for node in repo.load_tree(tree):
            path = f"{prefix}/{os.fsdecode(node.name)}"
            out[path] = node
            if node.type == "dir" and node.subtree is not None:
                stack.append((path, node.subtree))
    return out


def read_file(repo: Repository, node: Node) -> bytes:
    return b"".join(repo.read_blob(b) for b in node.content)


def fresh(repo: Repository, password: bytes) -> Repository:
    return Repository.open(repo.backend, password)


def raw(repo: Repository) -> dict[str, bytes]:
    backend = repo.backend
    assert isinstance(backend, MemoryBackend)
    return backend.raw_objects()


@pytest.fixture
def backed_up(mem_repo: Repository, tmp_path: Path) -> tuple[Repository, Path, Files, Snapshot]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {
        "big.bin": os.urandom(90_000),  # several chunks, several packs (32 KiB packs)
        "small.txt": b"small and intact",
        "sub/other.bin": os.urandom(40_000),
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    snap = run_backup(
        mem_repo, BackupOptions([FileSource([str(src)])], use_files_cache=False)
    ).snapshot
    return mem_repo, src, files, snap


def _pack_of(repo: Repository, node: Node, which: int = 0) -> bytes:
    repo.load_index()
    return repo.lookup(node.content[which]).pack_id


def test_a_lost_index_is_rebuilt_from_the_packs(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, src, files, snap = backed_up
    for oid in repo.index_ids():
        repo.delete_index(oid)
    assert run_check(fresh(repo, repo_password)).errors  # blobs not in the index
    res = run_repair_index(fresh(repo, repo_password))
    assert res.packs > 0 and res.packs_unreadable == []
    assert run_check(fresh(repo, repo_password), 1.0).errors == []
    reader = fresh(repo, repo_password)
    reader.load_index()
    found = entries(reader, snap)
    for rel, data in files.items():
        assert read_file(reader, found[f"{src}/{rel}"]) == data


def test_a_garbage_index_object_stops_nothing_but_prune_until_repaired(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, src, _, snap = backed_up
    garbage = layout.INDEX + "ab" * 32
    repo.backend.put(garbage, os.urandom(500))
    other = fresh(repo, repo_password)
    assert [s.id for s in other.snapshots()] == [snap.id]
    other.load_index()  # reported and skipped, not raised
    assert garbage in other.damaged
    run_backup(fresh(repo, repo_password), BackupOptions([FileSource([str(src)])]))
    checked = run_check(fresh(repo, repo_password))
    assert any(garbage in e for e in checked.errors)
    with pytest.raises(PruneRefused, match="repair index"):
        run_prune(fresh(repo, repo_password))
    run_repair_index(fresh(repo, repo_password))
    assert garbage not in raw(repo)
    assert run_check(fresh(repo, repo_password)).errors == []
    run_prune(fresh(repo, repo_password))


def test_a_lost_pack_is_repaired_by_repair_snapshots(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, src, files, snap = backed_up
    before = entries(repo_loaded(repo), snap)
    big = before[f"{src}/big.bin"]
    lost = _pack_of(repo, big, 1)
    hit = {
        rel
        for rel in files
        if any(repo.lookup(b).pack_id == lost for b in before[f"{src}/{rel}"].content)
    }
    repo.delete_pack(lost)
    assert any("missing" in e for e in run_check(fresh(repo, repo_password)).errors)
    with pytest.raises(PruneRefused):
        run_prune(fresh(repo, repo_password))

    index = run_repair_index(fresh(repo, repo_password))
    assert index.packs_lost == 1
    dry = run_repair_snapshots(fresh(repo, repo_password), dry_run=True)
    assert [old for old, _ in dry.repaired] == [snap.id] and repo.snapshot_ids() == [snap.id]
    res = run_repair_snapshots(fresh(repo, repo_password), forget=True)
    assert [old for old, _ in res.repaired] == [snap.id] and res.forgotten == [snap.id]
    assert any("big.bin: lost" in d for d in res.damaged_entries)

    reader = fresh(repo, repo_password)
    reader.load_index()
    (repaired,) = reader.snapshots()
    assert REPAIRED_TAG in repaired.tags and repaired.original == snap.id
    found = entries(reader, repaired)
    node = found[f"{src}/big.bin"]
    assert node.damaged and len(node.content) < len(big.content)
    assert node.size == len(read_file(reader, node)) < len(files["big.bin"])
    for rel in files.keys() - hit:  # what was not hit stays whole
        assert read_file(reader, found[f"{src}/{rel}"]) == files[rel]
        assert not found[f"{src}/{rel}"].damaged
    checked = run_check(fresh(repo, repo_password), 1.0)
    assert checked.errors == []
    assert any("repaired" in w for w in checked.warnings)
    run_prune(fresh(repo, repo_password))
    assert run_check(fresh(repo, repo_password), 1.0).errors == []


def repo_loaded(repo: Repository) -> Repository:
    repo.load_index()
    return repo


def test_a_pack_in_the_wrong_directory_is_reported_and_moved_back(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, *_ = backed_up
    objects = raw(repo)
    name = sorted(n for n in objects if n.startswith(layout.DATA))[0]
    pack_id = name.rsplit("/", 1)[1]
    wrong = f"data/{'00' if pack_id[:2] != '00' else '01'}/{pack_id}"
    repo.backend.put(wrong, objects.pop(name))
    checked = run_check(fresh(repo, repo_password))
    assert any("not in its place" in e for e in checked.errors), checked.errors
    res = run_repair_index(fresh(repo, repo_password))
    assert res.packs_moved == 1
    assert name in raw(repo) and wrong not in raw(repo)
    assert run_check(fresh(repo, repo_password), 1.0).errors == []


def test_a_damaged_pack_trailer_keeps_the_old_index_entries(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, *_ = backed_up
    objects = raw(repo)
    name = sorted(n for n in objects if n.startswith(layout.DATA))[0]
    data = bytearray(objects[name])
    data[-10] ^= 0xFF  # inside the trailer's ciphertext
    objects[name] = bytes(data)
    res = run_repair_index(fresh(repo, repo_password))
    assert res.packs_from_old_index == [name.rsplit("/", 1)[1]]
    assert run_check(fresh(repo, repo_password)).errors == []


def test_read_all_packs_indexes_only_blobs_that_verify(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, src, _, snap = backed_up
    big = entries(repo_loaded(repo), snap)[f"{src}/big.bin"]
    entry = repo.lookup(big.content[0])
    name = layout.pack_name(entry.pack_id.hex())
    objects = raw(repo)
    data = bytearray(objects[name])
    data[entry.offset + 5] ^= 0x01
    objects[name] = bytes(data)
    res = run_repair_index(fresh(repo, repo_password), read_all=True)
    assert res.blobs_dropped == 1
    after = fresh(repo, repo_password)
    after.load_index()
    assert after.index.lookup(big.content[0]) is None


def test_unreadable_snapshot_objects_are_forgotten_by_repair(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, *_ = backed_up
    bad = layout.SNAPSHOTS + "cd" * 32
    repo.backend.put(bad, b"not a snapshot")
    res = run_repair_snapshots(fresh(repo, repo_password), forget=True)
    assert res.unrepairable == ["cd" * 32] and bad not in raw(repo)
    assert run_check(fresh(repo, repo_password)).errors == []


def test_stray_files_are_reported_by_check_and_ignored_by_prune(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, *_ = backed_up
    for stray in ("data/ab/.nfs000000001234", "data/README", "snapshots/notes.txt", "index/x"):
        repo.backend.put(stray, b"hello")
    checked = run_check(fresh(repo, repo_password))
    assert sorted(e.split(":")[0] for e in checked.errors) == sorted(
        ["data/ab/.nfs000000001234", "data/README", "snapshots/notes.txt", "index/x"]
    )
    run_prune(fresh(repo, repo_password))  # no ValueError, nothing of the strays touched
    assert "data/README" in raw(repo)


# ---- storage that misbehaves while prune and repair run (FaultyBackend) ----------------------


def _faulty(repo: Repository) -> FaultyBackend:
    backend = FaultyBackend(MemoryBackend())
    for name, data in raw(repo).items():
        backend.inner.put(name, data)
    return backend


def _restores(repo: Repository, src: Path, files: Files, snap_id: str) -> None:
    repo.load_index()
    (snap,) = [s for s in repo.snapshots() if s.id == snap_id]
    found = entries(repo, snap)
    for rel, data in files.items():
        assert read_file(repo, found[f"{src}/{rel}"]) == data


@pytest.mark.parametrize("method", ["put", "delete"])
def test_prune_that_storage_fails_midway_loses_nothing(
    backed_up: tuple[Repository, Path, Files, Snapshot],
    repo_password: bytes,
    tmp_path: Path,
    method: str,
) -> None:
    repo, src, files, first = backed_up
    (src / "small.txt").write_bytes(b"changed")
    second = run_backup(
        fresh(repo, repo_password), BackupOptions([FileSource([str(src)])])
    ).snapshot
    repo.delete_snapshot(first.id)
    backend = _faulty(repo)
    # Midway: packs repacked but no index written yet (prune always writes one), or the
    # second deletion (of at least two old index objects).
    backend.fail(method, nth=1 if method == "put" else 2, prefix="index/")
    with pytest.raises(DrengineError):
        run_prune(Repository.open(backend, repo_password), max_unused=0.0)
    backend.clear()
    assert run_check(Repository.open(backend, repo_password), 1.0).errors == []
    run_prune(Repository.open(backend, repo_password), max_unused=0.0)  # completes it
    files = {**files, "small.txt": b"changed"}
    _restores(Repository.open(backend, repo_password), src, files, second.id)


def test_repair_index_stops_when_storage_fails_instead_of_dropping_packs(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, src, files, snap = backed_up
    backend = _faulty(repo)
    before = dict(backend.inner.raw_objects())
    backend.fail("get", nth=3, prefix="data/")  # one pack's trailer cannot be read now
    with pytest.raises(DrengineError, match="repair index stopped, nothing changed"):
        run_repair_index(Repository.open(backend, repo_password))
    after = backend.inner.raw_objects()
    assert {n for n in after if not n.startswith("locks/")} == {
        n for n in before if not n.startswith("locks/")
    }
    backend.clear()
    run_repair_index(Repository.open(backend, repo_password))
    _restores(Repository.open(backend, repo_password), src, files, snap.id)


def test_repair_index_salvages_a_pack_whose_content_is_damaged_in_storage(
    backed_up: tuple[Repository, Path, Files, Snapshot], repo_password: bytes
) -> None:
    repo, *_ = backed_up
    backend = _faulty(repo)
    # Every read of one pack comes back corrupted (a failing disk sector, say): its trailer
    # does not authenticate, so the old index entries are tried, and they do not verify.
    name = sorted(n for n in backend.inner.raw_objects() if n.startswith(layout.DATA))[0]
    backend.corrupt("get", prefix=name)
    res = run_repair_index(Repository.open(backend, repo_password))
    assert res.packs_salvaged == 1 and res.blobs_dropped > 0
    backend.clear()
    checked = run_check(Repository.open(backend, repo_password), 1.0)
    # The blobs that pack held are gone now: check says which snapshots need repair.
    assert checked.errors and all("not in the index" in e for e in checked.errors)

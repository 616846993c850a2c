"""``TreeCache(read_runs=True)``: trees read in runs of their pack give the same nodes and
the same failures as trees read one by one, in far fewer reads, and memory stays bounded."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from drengine.engine import tree_paths
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.tree_paths import TreeCache, check_expansion, subtrees_first
from drengine.repository import layout
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.pack import HEADER_SIZE
from drengine.repository.pack_blobs import BlobsByPack
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.local import LocalBackend


@pytest.fixture
def repo(repo_factory, tmp_path: Path) -> tuple[Repository, bytes]:  # type: ignore[no-untyped-def]
    """A snapshot of 80 directories in four levels (so 100 trees), on local storage with
    1 MiB packs: the trees share a pack or two."""
    src = tmp_path / "src"
    for a in range(4):
        for b in range(4):
            for c in range(5):
                d = src / f"a{a}" / f"b{b}" / f"c{c}"
                d.mkdir(parents=True)
                (d / "f").write_bytes(b"%d %d %d\n" % (a, b, c))
    repo = repo_factory(LocalBackend(tmp_path / "repo"), pack_size=1 << 20)
    snap = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot
    assert snap is not None
    return repo, snap.tree


def _counting(repo: Repository) -> list[int]:
    reads: list[int] = []
    real = repo.read_pack

    def read_pack(pack_id: bytes, offset: int = 0, length: int | None = None) -> bytes:
        reads.append(length or 0)
        return real(pack_id, offset, length)

    repo.read_pack = read_pack  # type: ignore[method-assign]
    return reads


def _all(trees: TreeCache, root: bytes) -> dict[bytes, object]:
    got: dict[bytes, object] = {}
    for tree_id, nodes in subtrees_first(root, trees.load, got):
        got[tree_id] = nodes
    return got


def test_runs_give_the_same_trees_in_few_reads(repo: tuple[Repository, bytes]) -> None:
    r, root = repo
    one_by_one = _all(TreeCache(r), root)
    r.load_index()
    reads = _counting(r)
    in_runs = _all(TreeCache(r, read_runs=True), root)
    assert in_runs == one_by_one and len(in_runs) > 90
    tree_reads = [n for n in reads if n != HEADER_SIZE]  # not the packs' salts
    assert len(tree_reads) <= 4, reads  # a ranged read per pack of trees, not 100


def _tree_pack(r: Repository, tree_id: bytes) -> tuple[Path, int, int]:
    e = r.index.lookup(tree_id)
    assert e is not None and e.type == BlobType.TREE
    path = Path(r.backend.location) / layout.pack_name(e.pack_id.hex())
    return path, e.offset, e.length


def test_a_damaged_tree_fails_as_when_read_alone(repo: tuple[Repository, bytes]) -> None:
    r, root = repo
    r.load_index()
    victim = next(iter(_all(TreeCache(r), root)))  # the first tree written: deep down
    path, off, length = _tree_pack(r, victim)
    with open(path, "r+b") as f:  # one byte of its ciphertext flipped
        f.seek(off + length // 2)
        b = f.read(1)
        f.seek(off + length // 2)
        f.write(bytes([b[0] ^ 0x40]))
    alone, runs = TreeCache(r), TreeCache(r, read_runs=True)
    assert alone.load_below(victim) is None and runs.load_below(victim) is None
    assert runs.failed == alone.failed
    # The others still read: the damage costs that tree only. Read along with the trees
    # around it (kept as stored, opened when the walk gets there), it fails the same way.
    walked = TreeCache(r, read_runs=True)
    assert check_expansion(walked, [root], "x") > 0
    assert walked.failed == alone.failed


def test_memory_for_trees_read_along_stays_bounded(
    repo: tuple[Repository, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, root = repo
    r.load_index()
    monkeypatch.setattr(tree_paths, "_STORED_BYTES", 2000)
    monkeypatch.setattr(tree_paths, "_RUN_BYTES", 3000)
    trees = TreeCache(r, read_runs=True)
    peak = 0
    got: dict[bytes, object] = {}
    for tree_id, nodes in subtrees_first(root, trees.load, got):
        got[tree_id] = nodes
        peak = max(peak, trees._stored_bytes)
    assert got == _all(TreeCache(r), root)
    assert peak <= 2000


def test_a_missing_tree_pack_reads_as_alone(repo: tuple[Repository, bytes]) -> None:
    r, root = repo
    r.load_index()
    path, _, _ = _tree_pack(r, root)
    os.unlink(path)
    runs = TreeCache(r, read_runs=True)
    assert runs.load_below(root) is None  # first: the pack is not known missing yet
    assert f"is missing from {r.backend.location}" in runs.failed[root]


def test_blobs_of_a_pack_are_the_index_filtered(repo: tuple[Repository, bytes]) -> None:
    r, _ = repo
    r.load_index()
    everything = list(r.index.entries())
    packs = {e.pack_id for _, e in everything}
    for t in BlobType:
        for p in packs:
            want = sorted(((b, e) for b, e in everything if e.pack_id == p and e.type == t),
                          key=lambda it: it[1].offset)  # fmt: skip
            assert r.index.by_pack(t).of(p) == want
    assert r.index.by_pack(BlobType.TREE).of(b"\x00" * 32) == []


@pytest.mark.parametrize("seed", range(20))
def test_a_run_is_the_widest_window_reaching_back_first(seed: int) -> None:
    rng = random.Random(seed)
    packs = [b"P" * 32, b"Q" * 32]
    rows = []
    for no in range(2):
        off = rng.randrange(100)
        for _ in range(rng.randrange(1, 40)):
            n = rng.randrange(1, 500)
            rows.append((no, off, n))
            off += n + rng.choice([0, 0, 0, 10, 300, 5000])
    ids = [bytes([i % 256, i // 256]) + bytes(30) for i in range(len(rows))]
    by = BlobsByPack(
        BlobType.TREE, packs, np.array([r[0] for r in rows], np.uint32),
        np.frombuffer(b"".join(ids), dtype="V32"), np.array([r[1] for r in rows], np.uint32),
        np.array([r[2] for r in rows], np.uint32), np.array([r[2] for r in rows], np.uint32),
    )  # fmt: skip
    max_bytes, max_gap = rng.choice([600, 2000, 10**6]), rng.choice([0, 20, 400])
    for k, (no, off, n) in enumerate(rows):
        e = IndexEntry(packs[no], BlobType.TREE, off, n, n)
        same = [j for j, r in enumerate(rows) if r[0] == no]
        spans = [(rows[j][1], rows[j][2]) for j in same]
        first, last = _brute_run(spans, same.index(k), max_bytes, max_gap)
        want = [ids[same[j]] for j in range(first, last + 1)]
        assert [b for b, _ in by.around(ids[k], e, max_bytes, max_gap)] == want
    assert by.around(b"x" * 32, IndexEntry(packs[0], BlobType.TREE, 0, 1, 1), 10, 10) == []


def _brute_run(spans: list[tuple[int, int]], i: int, max_bytes: int, gap: int) -> tuple[int, int]:
    """The run around ``spans[i]`` (offset, length), one blob at a time, back first."""

    def end(j: int) -> int:
        return spans[j][0] + spans[j][1]

    def joins(a: int, b: int) -> bool:
        return end(a) <= spans[b][0] <= end(a) + gap

    first = last = i
    while first > 0 and joins(first - 1, first) and end(last) - spans[first - 1][0] <= max_bytes:
        first -= 1
    while (
        last + 1 < len(spans)
        and joins(last, last + 1)
        and end(last + 1) - spans[first][0] <= max_bytes
    ):
        last += 1
    return first, last

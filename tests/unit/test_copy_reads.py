"""copy reads as restore does: trees in runs of their pack, a directory's data blobs in
ranged reads of neighbouring blobs; what it copies is what was backed up, and a damaged
source blob still fails the copy without a snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_tree_runs import _counting

from drengine.core.errors import DrengineError
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.copy import run_copy
from drengine.engine.tree_paths import TreeCache, walk_tree
from drengine.repository import layout
from drengine.repository.layout import BlobType
from drengine.repository.pack import HEADER_SIZE
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.local import LocalBackend


@pytest.fixture
def two(repo_factory, tmp_path: Path) -> tuple[Repository, Repository, Path]:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    for d in range(12):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(25):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(200 + 37 * f))
    (src / "big").write_bytes(os.urandom(3 << 20))
    a = repo_factory(LocalBackend(tmp_path / "a"), pack_size=1 << 20)
    run_backup(a, BackupOptions([FileSource([str(src)])]))
    b = repo_factory(LocalBackend(tmp_path / "b"))
    return a, b, src


def _files(repo: Repository) -> dict[bytes, bytes]:
    repo.load_index()
    snap = repo.find_snapshot("latest")
    return {
        path.rsplit(b"/src/", 1)[-1]: b"".join(repo.read_blob(b) for b in node.content)
        for path, node in walk_tree(TreeCache(repo), snap.tree)
        if node.type == "file"
    }


def test_copy_reads_in_runs_and_copies_every_file(two: tuple[Repository, Repository, Path]) -> None:
    a, b, src = two
    reads = _counting(a)
    res = run_copy(a, b, a.snapshots())
    assert len(res.copied) == 1 and res.blobs_new > 300
    data_reads = [n for n in reads if n != HEADER_SIZE]  # not the packs' salts
    assert len(data_reads) < 80, len(data_reads)  # a read per blob: 300 and more
    want = {str(p.relative_to(src)).encode(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    assert _files(b) == want


def test_a_damaged_source_blob_fails_the_copy(two: tuple[Repository, Repository, Path]) -> None:
    a, b, _ = two
    a.load_index()
    e = next(e for _, e in a.index.entries() if e.type == BlobType.DATA)
    path = Path(a.backend.location) / layout.pack_name(e.pack_id.hex())
    with open(path, "r+b") as f:  # one byte of one small file's ciphertext flipped
        f.seek(e.offset + e.length // 2)
        byte = f.read(1)
        f.seek(e.offset + e.length // 2)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(DrengineError):
        run_copy(a, b, a.snapshots())
    assert b.snapshot_ids() == []

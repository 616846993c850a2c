"""The damaged-repository matrix: for each kind of damage, what check, backup, restore, prune
and repair do.

``DAMAGES`` says what each damage is and ``MATRIX`` what each command must do with it: the two
tables are the documentation. Below them, one function per row (registered with ``@case``)
sets the damage up and asserts the outcome; ``test_damage_matrix`` runs them all. A row whose
``xfail`` is set is behaviour the product intends and the code does not (yet) have: it is
marked ``xfail(strict=True)`` so it shows, and turns into a failure once fixed.

Every case starts from the same repository, built once per module and copied into a fresh
``MemoryBackend`` per test: two snapshots (the second after one file changed and one was
added) of a small tree, chunks of 1-16 KiB and 32 KiB packs, so each file of some size spans
several packs. The files cache is copied too, so backups after the damage take the same path
as a real second run (unchanged files are cache hits and must be re-read when their data is
gone). The pack damaged in the pack cases (the "victim") is a data pack holding part of
``big.bin``, chosen so that some files of each snapshot have data in it and some do not.

What "restores exactly" means here: every file of the snapshot is in the target with its exact
content, nothing else is (no temporary files), and the restore reports no errors. Where files
must fail, exactly those are reported and none of them exists in the target.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drengine.core.errors import DrengineError, IntegrityError, StorageError
from drengine.core.model import Node, Snapshot
from drengine.crypto.keys import KdfParams
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import CheckResult, run_check
from drengine.engine.prune import PruneRefused, run_prune
from drengine.engine.repair_index import run_repair_index
from drengine.engine.repair_snapshots import REPAIRED_TAG, run_repair_snapshots
from drengine.engine.restore import run_restore
from drengine.repository import layout
from drengine.repository.config import Settings
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.base import Backend
from drengine.storage.faults import FaultyBackend
from drengine.storage.memory import MemoryBackend
from drengine.storage.retry import RetryingBackend, RetryPolicy, TransientStorageError

Files = dict[str, bytes]  # "/"-separated path below the backed-up directory -> content

# ---- the tables ------------------------------------------------------------------------------

DAMAGES: dict[str, str] = {
    "missing-index": "every index object deleted",
    "index-missing-blob": "the index rewritten (one new object superseding and replacing the "
    "old ones) with one data blob of big.bin left out; the pack still holds it",
    "missing-pack": "one data pack (the victim) deleted",
    "truncated-pack": "the victim pack cut to half its size",
    "misplaced-pack": "the victim pack moved from data/<id[:2]>/<id> to data/00/<id>",
    "garbage-data": "random bytes stored as data/<xx>/<64 hex starting xx>",
    "stray-data": "a file data/ab/.nfs000000001234",
    "garbage-index": "random bytes stored as index/<64 hex>",
    "stray-index": "a file index/README",
    "garbage-snapshots": "random bytes stored as snapshots/<64 hex>",
    "stray-snapshots": "a file snapshots/notes.txt",
    "garbage-keys": "random bytes stored as keys/<64 hex>",
    "stray-keys": "a file keys/README",
    "garbage-locks": "random bytes stored as locks/<64 hex>",
    "stray-locks": "a file locks/README",
    "damaged-snapshot": "one byte of the newest snapshot object flipped",
    "damaged-only-key": "one byte of the only key file flipped",
    "damaged-key-with-spare": "a second key file for the same password added, then one byte "
    "of the original key file flipped",
    "fault-put-pack": "storage (FaultyBackend) fails the 2nd pack upload of a backup",
    "fault-get-corrupt": "storage returns every read of the victim pack with one byte flipped",
    "fault-get-fails": "storage fails every read of the victim pack (StorageError)",
    "fault-get-transient": "storage fails the first 3 reads of the victim pack with "
    "TransientStorageError, under the RetryingBackend that S3 repositories use",
}


@dataclass(frozen=True)
class Row:
    damage: str
    command: str
    expect: str
    xfail: str = ""  # why the code does not do what the row expects (the mismatch)


# fmt: off
MATRIX: list[Row] = [
    # -- 1. every index object deleted
    Row("missing-index", "check", "errors: each snapshot's root tree is not in the index; "
        "warnings: every stored pack is in no index"),
    Row("missing-index", "backup", "succeeds, stores every blob again (none deduplicated), "
        "and its snapshot restores exactly"),
    Row("missing-index", "restore", "each old snapshot: a DrengineError or every file "
        "reported; no file written"),
    Row("missing-index", "prune", "PruneRefused; no object added or removed"),
    Row("missing-index", "repair", "repair index indexes every pack; then check --read-data "
        "has no errors or warnings and both snapshots restore exactly"),
    # -- 2. the index lacks one blob the pack still has
    Row("index-missing-blob", "check", "exactly one error, naming that blob"),
    Row("index-missing-blob", "restore", "both snapshots: exactly big.bin fails, the others "
        "restore exactly"),
    Row("index-missing-blob", "backup", "succeeds, stores the blob again in a new pack, and "
        "its snapshot restores exactly"),
    Row("index-missing-blob", "prune", "PruneRefused; no object added or removed"),
    Row("index-missing-blob", "repair", "repair index: check --read-data clean, both "
        "snapshots restore exactly"),
    # -- 3. a data pack deleted
    Row("missing-pack", "check", "an error: the victim pack is missing (and nothing else)"),
    Row("missing-pack", "backup", "succeeds; the lost blobs the current files still have are "
        "stored again; its snapshot restores exactly"),
    Row("missing-pack", "restore", "both snapshots: exactly the files with a blob in the "
        "victim fail, the others restore exactly"),
    Row("missing-pack", "prune", "PruneRefused; no object added or removed"),
    Row("missing-pack", "repair", "repair index, repair snapshots --forget: check --read-data "
        "without errors (warnings only for repaired entries), prune runs, repaired files "
        "restore to their remaining content, marked damaged (a restore warning), others exact"),
    # -- 4. a data pack truncated to half
    Row("truncated-pack", "check", "an error: the victim pack is truncated"),
    Row("truncated-pack", "check-read-data", "errors naming the victim pack"),
    Row("truncated-pack", "backup", "succeeds; blobs beyond the cut that current files have "
        "are stored again (not deduplicated against); its snapshot restores exactly"),
    Row("truncated-pack", "restore", "both snapshots: exactly the files with a blob beyond the "
        "cut fail, the others restore exactly"),
    Row("truncated-pack", "prune", "PruneRefused (used blobs beyond the end); nothing changed"),
    Row("truncated-pack", "repair", "repair index (salvages the blobs before the cut into a "
        "new pack), repair snapshots --forget: check clean, prune runs, repaired files restore "
        "to what was before the cut, marked damaged, others exact"),
    Row("truncated-pack", "repair-read-data", "after the repair above, check --read-data is "
        "clean too"),
    # -- 8. a pack in the wrong directory
    Row("misplaced-pack", "check", "an error: the victim is not in its place"),
    Row("misplaced-pack", "restore", "both snapshots: exactly the files with a blob in the "
        "victim fail, the others restore exactly"),
    Row("misplaced-pack", "backup", "succeeds and its snapshot restores exactly"),
    Row("misplaced-pack", "prune", "PruneRefused; nothing changed (the misplaced copy kept)"),
    Row("misplaced-pack", "repair", "repair index moves it back; check --read-data clean, "
        "both snapshots restore exactly"),
    # -- 5. garbage and stray names in each directory
    Row("garbage-data", "backup", "succeeds and its snapshot restores exactly"),
    Row("garbage-data", "snapshots", "lists both snapshots"),
    Row("garbage-data", "restore-latest", "restores the newest snapshot exactly"),
    Row("garbage-data", "check", "a warning: an unindexed pack; no errors"),
    Row("garbage-data", "prune", "runs (removes it as an unindexed pack); both snapshots "
        "still restore exactly"),
    Row("stray-data", "backup", "succeeds and its snapshot restores exactly"),
    Row("stray-data", "snapshots", "lists both snapshots"),
    Row("stray-data", "restore-latest", "restores the newest snapshot exactly"),
    Row("stray-data", "check", "one error naming the stray"),
    Row("stray-data", "prune", "runs, leaves the stray where it is; snapshots restore"),
    Row("garbage-index", "backup", "succeeds and its snapshot restores exactly"),
    Row("garbage-index", "snapshots", "lists both snapshots"),
    Row("garbage-index", "restore-latest", "restores the newest snapshot exactly"),
    Row("garbage-index", "check", "one error naming the index object"),
    Row("garbage-index", "prune", "PruneRefused (its packs would look unused); nothing changed"),
    Row("garbage-index", "repair", "repair index removes it; check clean; prune runs"),
    Row("stray-index", "backup", "succeeds and its snapshot restores exactly"),
    Row("stray-index", "snapshots", "lists both snapshots"),
    Row("stray-index", "restore-latest", "restores the newest snapshot exactly"),
    Row("stray-index", "check", "one error naming the stray"),
    Row("stray-index", "prune", "runs, leaves the stray where it is; snapshots restore"),
    Row("garbage-snapshots", "backup", "succeeds and its snapshot restores exactly"),
    Row("garbage-snapshots", "snapshots", "lists both snapshots"),
    Row("garbage-snapshots", "restore-latest", "restores the newest snapshot exactly"),
    Row("garbage-snapshots", "check", "one error naming the snapshot object"),
    Row("garbage-snapshots", "prune", "PruneRefused: a garbage snapshot object cannot be told "
        "from a damaged snapshot whose data is in use (repair snapshots --forget removes it)"),
    Row("garbage-snapshots", "repair", "repair snapshots --forget deletes it; check clean; "
        "prune runs"),
    Row("stray-snapshots", "backup", "succeeds and its snapshot restores exactly"),
    Row("stray-snapshots", "snapshots", "lists both snapshots"),
    Row("stray-snapshots", "restore-latest", "restores the newest snapshot exactly"),
    Row("stray-snapshots", "check", "one error naming the stray"),
    Row("stray-snapshots", "prune", "runs, leaves the stray where it is; snapshots restore"),
    Row("garbage-keys", "backup", "succeeds and its snapshot restores exactly"),
    Row("garbage-keys", "snapshots", "lists both snapshots"),
    Row("garbage-keys", "restore-latest", "restores the newest snapshot exactly"),
    Row("garbage-keys", "check", "one error naming the damaged key file"),
    Row("garbage-keys", "prune", "runs; snapshots restore"),
    Row("stray-keys", "backup", "succeeds and its snapshot restores exactly"),
    Row("stray-keys", "snapshots", "lists both snapshots"),
    Row("stray-keys", "restore-latest", "restores the newest snapshot exactly"),
    Row("stray-keys", "check", "one error naming the stray"),
    Row("stray-keys", "prune", "runs, leaves the stray where it is; snapshots restore"),
    Row("garbage-locks", "backup", "succeeds and its snapshot restores exactly"),
    Row("garbage-locks", "snapshots", "lists both snapshots"),
    Row("garbage-locks", "restore-latest", "restores the newest snapshot exactly"),
    Row("garbage-locks", "check", "a warning naming the unreadable lock; no errors"),
    Row("garbage-locks", "prune", "runs; snapshots restore"),
    Row("stray-locks", "backup", "succeeds and its snapshot restores exactly"),
    Row("stray-locks", "snapshots", "lists both snapshots"),
    Row("stray-locks", "restore-latest", "restores the newest snapshot exactly"),
    Row("stray-locks", "check", "one error naming the stray"),
    Row("stray-locks", "prune", "runs, leaves the stray where it is; snapshots restore"),
    # -- 6. the newest snapshot damaged
    Row("damaged-snapshot", "snapshots", "lists only the older snapshot"),
    Row("damaged-snapshot", "restore-latest", "'latest' is the older snapshot; restores "
        "exactly"),
    Row("damaged-snapshot", "backup", "succeeds and its snapshot restores exactly"),
    Row("damaged-snapshot", "check", "an error naming the damaged snapshot"),
    Row("damaged-snapshot", "prune", "PruneRefused (it cannot know what that snapshot uses); "
        "nothing changed"),
    Row("damaged-snapshot", "repair", "repair snapshots --forget deletes it; check clean; "
        "prune runs; the older snapshot restores exactly"),
    # -- 7. a damaged key file
    Row("damaged-only-key", "open", "Repository.open raises IntegrityError naming the key "
        "file"),
    Row("damaged-key-with-spare", "open", "opens with the spare key file"),
    Row("damaged-key-with-spare", "check", "one error naming the damaged key file"),
    Row("damaged-key-with-spare", "restore-latest", "restores the newest snapshot exactly"),
    # -- 9. I/O faults
    Row("fault-put-pack", "backup", "raises a DrengineError, writes no snapshot; check "
        "without errors; the next backup succeeds and restores exactly"),
    Row("fault-get-corrupt", "restore", "big.bin (blobs read one by one) is reported; only "
        "files with a blob in the victim may fail; none is written wrong; the rest exact"),
    Row("fault-get-fails", "restore", "exactly the files with a blob in the victim fail, "
        "the others restore exactly"),
    Row("fault-get-transient", "restore", "retried: restores exactly"),
]
# fmt: on

# ---- the repository every case starts from ---------------------------------------------------

_rng = random.Random(20261126)
V1: Files = {
    "big.bin": _rng.randbytes(90_000),  # ~18 chunks over several packs
    "mid.bin": _rng.randbytes(30_000),
    "small.txt": b"small and intact\n",
    "sub/other.bin": _rng.randbytes(20_000),
    "sub/tiny.txt": b"tiny",
}
V2: Files = {**V1, "mid.bin": _rng.randbytes(35_000), "sub/new.bin": _rng.randbytes(12_000)}


@dataclass
class Base:
    objects: dict[str, bytes]
    cache: Path  # the files cache directory of the repository (DRENGINE_CACHE_DIR/<repo id>)
    src: Path
    snap1: str
    snap2: str
    files: dict[str, Files]  # snapshot ID -> its files
    nodes: dict[str, dict[str, Node]]  # snapshot ID -> path -> file node
    where: dict[bytes, IndexEntry]  # blob ID -> where it is stored
    blobs: dict[bytes, bytes]  # data blob ID -> plaintext
    victim: bytes  # the data pack the pack cases damage
    victim_blob: bytes  # a blob of big.bin in the victim
    cut: int  # the victim's size after truncation

    def hit(self, snap: str, lost: Callable[[bytes], bool]) -> set[str]:
        """The files of a snapshot with at least one blob for which ``lost`` is true."""
        return {p for p, n in self.nodes[snap].items() if any(lost(b) for b in n.content)}

    def in_victim(self, blob: bytes) -> bool:
        return self.where[blob].pack_id == self.victim

    def beyond_cut(self, blob: bytes) -> bool:
        e = self.where[blob]
        return e.pack_id == self.victim and e.offset + e.length > self.cut

    def remaining(self, snap: str, lost: Callable[[bytes], bool]) -> Files:
        """The snapshot's files after a repair: each keeps the content of its blobs that were
        not lost, in order."""
        return {
            p: b"".join(self.blobs[b] for b in n.content if not lost(b))
            for p, n in self.nodes[snap].items()
        }


def _write(root: Path, files: Files) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def walk_snapshot(repo: Repository, snap: Snapshot) -> Iterator[tuple[str, Node]]:
    """(absolute path, node) of every entry of a snapshot."""
    stack = [("", snap.tree)]
    while stack:
        prefix, tree = stack.pop()
        for node in repo.load_tree(tree):
            path = f"{prefix}/{os.fsdecode(node.name)}"
            yield path, node
            if node.type == "dir" and node.subtree is not None:
                stack.append((path, node.subtree))


def file_nodes(repo: Repository, snap: Snapshot, src: Path) -> dict[str, Node]:
    top = f"{src}/"
    return {
        p[len(top) :]: n
        for p, n in walk_snapshot(repo, snap)
        if n.type == "file" and p.startswith(top)
    }


def snapshot_blobs(repo: Repository, snap: Snapshot) -> set[bytes]:
    """Every blob (trees and data) a snapshot references."""
    out = {snap.tree}
    for _, node in walk_snapshot(repo, snap):
        out.update(node.content)
        if node.subtree is not None:
            out.add(node.subtree)
    return out


def _pick_victim(
    where: dict[bytes, IndexEntry],
    sizes: dict[bytes, int],
    nodes: dict[str, dict[str, Node]],
) -> tuple[bytes, bytes]:
    """A data pack holding part of big.bin, with blobs both before and beyond half its size,
    that some but not all files of each snapshot have data in, and each snapshot beyond
    half its size."""
    by_pack: dict[bytes, list[bytes]] = defaultdict(list)
    for bid, e in where.items():
        by_pack[e.pack_id].append(bid)
    big = next(iter(nodes.values()))["big.bin"].content
    for pack in sorted({where[b].pack_id for b in big}):
        cut = sizes[pack] // 2
        ends = [where[b].offset + where[b].length for b in by_pack[pack]]
        if not (any(e <= cut for e in ends) and any(e > cut for e in ends)):
            continue
        hits = [
            {p for p, n in ns.items() if any(where[b].pack_id == pack for b in n.content)}
            for ns in nodes.values()
        ]
        # Each snapshot must also have data beyond the cut (which blobs land there depends
        # on how the sealer threads split the work, so this is checked, not assumed).
        beyond = [
            any(
                where[b].pack_id == pack and where[b].offset + where[b].length > cut
                for n in ns.values()
                for b in n.content
            )
            for ns in nodes.values()
        ]
        if all(beyond) and all(
            0 < len(h) < len(ns) for h, ns in zip(hits, nodes.values(), strict=True)
        ):
            return pack, next(b for b in big if where[b].pack_id == pack)
    raise AssertionError("no data pack fits the pack cases; the fixture tree needs a change")


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory,
    repo_password: bytes,
    cheap_kdf: KdfParams,
    small_settings: Settings,
) -> Base:
    root = tmp_path_factory.mktemp("matrix-base")
    src, cache = root / "src", root / "cache"
    cache.mkdir()
    backend = MemoryBackend()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRENGINE_CACHE_DIR", str(cache))
        repo = Repository.init(backend, repo_password, small_settings, cheap_kdf)
        _write(src, V1)
        snap1 = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot.id
        _write(src, V2)
        # Past the files cache's racy margin, so its directory and entry rows are stored
        # and every later backup here may reuse them (a loaded machine did so by chance).
        time.sleep(0.1)
        snap2 = run_backup(repo, BackupOptions([FileSource([str(src)])])).snapshot.id
    reader = Repository.open(backend, repo_password)
    reader.load_index()
    where = dict(reader.index.entries())
    snaps = {s.id: s for s in reader.snapshots()}
    assert list(snaps) == [snap1, snap2]
    nodes = {sid: file_nodes(reader, s, src) for sid, s in snaps.items()}
    files = {snap1: dict(V1), snap2: dict(V2)}
    for sid in snaps:
        assert sorted(nodes[sid]) == sorted(files[sid])
    used = {b for ns in nodes.values() for n in ns.values() for b in n.content}
    blobs = {b: reader.read_blob(b) for b in used}
    sizes = reader.list_packs()
    assert len(sizes) >= 5, "the pack cases need several packs"
    victim, victim_blob = _pick_victim(where, sizes, nodes)
    assert where[victim_blob].type == BlobType.DATA
    return Base(
        objects=dict(backend.raw_objects()),
        cache=cache / repo.id,
        src=src,
        snap1=snap1,
        snap2=snap2,
        files=files,
        nodes=nodes,
        where=where,
        blobs=blobs,
        victim=victim,
        victim_blob=victim_blob,
        cut=sizes[victim] // 2,
    )


@dataclass
class World:
    """One test's copy of the base repository, and what it needs to run commands."""

    base: Base
    backend: MemoryBackend
    tmp: Path
    password: bytes
    kdf: KdfParams
    _dirs: int = field(default=0)

    @property
    def objects(self) -> dict[str, bytes]:
        return self.backend.raw_objects()  # live: changes here damage the repository

    @property
    def src(self) -> Path:
        return self.base.src

    def open(self, backend: Backend | None = None) -> Repository:
        """A fresh Repository object, as each CLI command opens one."""
        return Repository.open(backend if backend is not None else self.backend, self.password)

    def new_dir(self, what: str) -> Path:
        self._dirs += 1
        return self.tmp / f"{what}-{self._dirs}"

    def packs(self) -> set[str]:
        return {n for n in self.objects if n.startswith(layout.DATA)}

    def snapshot_names(self) -> set[str]:
        return {n for n in self.objects if n.startswith(layout.SNAPSHOTS)}


@pytest.fixture
def world(
    base: Base,
    tmp_path: Path,
    drengine_cache_dir: Path,
    repo_password: bytes,
    cheap_kdf: KdfParams,
) -> World:
    backend = MemoryBackend()
    backend.raw_objects().update(base.objects)
    shutil.copytree(base.cache, drengine_cache_dir / base.cache.name)
    return World(base, backend, tmp_path, repo_password, cheap_kdf)


# ---- what the cases assert -------------------------------------------------------------------


def found_files(target: Path) -> Files:
    """Every non-directory entry below ``target``, by path relative to it."""
    out: Files = {}
    for dirpath, dirnames, filenames in os.walk(target):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            assert os.path.isfile(path) and not os.path.islink(path), f"unexpected {path}"
            out[os.path.relpath(path, target)] = Path(path).read_bytes()
    return out


def expect_restore(
    w: World,
    ref: str,
    expected: Files,
    *,
    failing: AbstractSet[str] = frozenset(),
    damaged: AbstractSet[str] = frozenset(),
    src: Path | None = None,
    backend: Backend | None = None,
    repo: Repository | None = None,
) -> None:
    """Restore as ``drengine restore`` does (open, find, load the index, run) and assert:
    exactly ``failing`` are reported and absent, every other file is there with exactly its
    expected content, nothing else is written, and exactly ``damaged`` carry a warning."""
    src = src or w.src
    if repo is None:
        repo = w.open(backend)
        snap = repo.find_snapshot(ref)
        repo.load_index()
    else:
        snap = repo.find_snapshot(ref)
    target = w.new_dir("restore")
    result = run_restore(repo, snap, str(target))
    top = target / src.relative_to("/")
    assert sorted(e["path"] for e in result.errors) == sorted(str(top / p) for p in failing), (
        result.errors
    )
    assert sorted(x["path"] for x in result.warnings) == sorted(str(top / p) for p in damaged)
    rel = str(src.relative_to("/"))
    want = {f"{rel}/{p}": data for p, data in expected.items() if p not in failing}
    got = found_files(target)
    assert sorted(got) == sorted(want)
    for p, data in want.items():
        assert got[p] == data, f"{p} restored with the wrong content"


def expect_all_restore(w: World) -> None:
    """Both snapshots of the base restore exactly."""
    for sid in (w.base.snap1, w.base.snap2):
        expect_restore(w, sid, w.base.files[sid])


def expect_refused(w: World) -> None:
    before = dict(w.objects)
    with pytest.raises(PruneRefused):
        run_prune(w.open())
    assert dict(w.objects) == before  # nothing deleted, nothing written (its lock is gone)


def backup_and_restore(w: World) -> Snapshot:
    """A backup of the current tree succeeds and its snapshot restores exactly."""
    before = w.snapshot_names()
    res = run_backup(w.open(), BackupOptions([FileSource([str(w.src)])]))
    assert res.errors == []
    assert w.snapshot_names() == before | {layout.SNAPSHOTS + res.snapshot.id}
    expect_restore(w, res.snapshot.id, w.base.files[w.base.snap2])
    return res.snapshot


def check(w: World, read: float = 0.0) -> CheckResult:
    return run_check(w.open(), read_fraction=read)


def flip(w: World, name: str, pos: int = 40) -> None:
    data = bytearray(w.objects[name])
    data[pos % len(data)] ^= 0xFF
    w.objects[name] = bytes(data)


CASES: dict[tuple[str, str], Callable[[World], None]] = {}


def case(damage: str, command: str) -> Callable[[Callable[[World], None]], Callable[[World], None]]:
    def register(fn: Callable[[World], None]) -> Callable[[World], None]:
        assert (damage, command) not in CASES
        CASES[(damage, command)] = fn
        return fn

    return register


# ---- 1. every index object deleted -----------------------------------------------------------


def drop_index(w: World) -> None:
    for name in [n for n in w.objects if n.startswith(layout.INDEX)]:
        del w.objects[name]


@case("missing-index", "check")
def _(w: World) -> None:
    drop_index(w)
    res = check(w)
    assert res.errors and all("is not in the index" in e for e in res.errors), res.errors
    for sid in (w.base.snap1, w.base.snap2):
        assert any(e.startswith(f"snapshot {sid[:8]}:") for e in res.errors), res.errors
    unindexed = {x.split()[1] for x in res.warnings if "is not in any index" in x}
    assert unindexed == {n.rsplit("/", 1)[1] for n in w.packs()}


@case("missing-index", "backup")
def _(w: World) -> None:
    drop_index(w)
    old = {bytes.fromhex(n.rsplit("/", 1)[1]) for n in w.packs()}
    snap = backup_and_restore(w)
    reader = w.open()
    reader.load_index()
    for bid in snapshot_blobs(reader, snap):
        entry = reader.index.lookup(bid)
        assert entry is not None and entry.pack_id not in old  # stored again, not deduplicated


@case("missing-index", "restore")
def _(w: World) -> None:
    drop_index(w)
    for sid in (w.base.snap1, w.base.snap2):
        repo = w.open()
        snap = repo.find_snapshot(sid)
        repo.load_index()
        target = w.new_dir("restore")
        try:
            result = run_restore(repo, snap, str(target))
        except DrengineError:
            result = None  # the root tree cannot be read: allowed, as long as nothing is written
        assert not target.exists() or found_files(target) == {}
        if result is not None:
            top = target / w.src.relative_to("/")
            reported = {e["path"] for e in result.errors}
            assert {str(top / p) for p in w.base.files[sid]} <= reported


@case("missing-index", "prune")
def _(w: World) -> None:
    drop_index(w)
    expect_refused(w)


@case("missing-index", "repair")
def _(w: World) -> None:
    drop_index(w)
    res = run_repair_index(w.open())
    assert res.packs == len(w.packs()) and res.packs_unreadable == []
    checked = check(w, 1.0)
    assert checked.errors == [] and checked.warnings == []
    expect_all_restore(w)


# ---- 2. the index lacks one blob --------------------------------------------------------------


def drop_blob(w: World) -> bytes:
    """Rewrite the index without the victim blob: one new object supersedes the old ones,
    which are then deleted."""
    repo = w.open()
    repo.load_index()
    blob = w.base.victim_blob
    packs: dict[bytes, list[BlobRecord]] = defaultdict(list)
    for bid, e in repo.index.entries():
        if bid != blob:
            packs[e.pack_id].append(BlobRecord(e.type, bid, e.offset, e.length, e.raw_length))
    old = repo.index_ids()
    assert len(packs) == len(w.packs())  # every pack is still listed
    repo.save_index(sorted(packs.items()), supersedes=[bytes.fromhex(o) for o in old])
    for oid in old:
        repo.delete_index(oid)
    after = w.open()
    after.load_index()
    assert after.index.lookup(blob) is None and len(after.index) == len(w.base.where) - 1
    return blob


@case("index-missing-blob", "check")
def _(w: World) -> None:
    blob = drop_blob(w)
    res = check(w)
    assert len(res.errors) == 1 and blob.hex() in res.errors[0], res.errors


@case("index-missing-blob", "restore")
def _(w: World) -> None:
    blob = drop_blob(w)
    for sid in (w.base.snap1, w.base.snap2):
        users = w.base.hit(sid, lambda b: b == blob)
        assert users == {"big.bin"}
        expect_restore(w, sid, w.base.files[sid], failing=users)


@case("index-missing-blob", "backup")
def _(w: World) -> None:
    blob = drop_blob(w)
    old = {bytes.fromhex(n.rsplit("/", 1)[1]) for n in w.packs()}
    backup_and_restore(w)
    reader = w.open()
    reader.load_index()
    entry = reader.index.lookup(blob)
    assert entry is not None and entry.pack_id not in old  # stored again


@case("index-missing-blob", "prune")
def _(w: World) -> None:
    drop_blob(w)
    expect_refused(w)


@case("index-missing-blob", "repair")
def _(w: World) -> None:
    drop_blob(w)
    run_repair_index(w.open())
    checked = check(w, 1.0)
    assert checked.errors == [] and checked.warnings == []
    expect_all_restore(w)


# ---- 3. a data pack deleted -------------------------------------------------------------------


def victim_name(w: World) -> str:
    return layout.pack_name(w.base.victim.hex())


def drop_pack(w: World) -> None:
    del w.objects[victim_name(w)]


@case("missing-pack", "check")
def _(w: World) -> None:
    drop_pack(w)
    res = check(w)
    assert res.errors == [f"pack {w.base.victim.hex()} is missing (indexed, not in storage)"]


@case("missing-pack", "backup")
def _(w: World) -> None:
    drop_pack(w)
    backup_and_restore(w)
    reader = w.open()
    reader.load_index(present=reader.list_packs())
    lost = {
        b for n in w.base.nodes[w.base.snap2].values() for b in n.content if w.base.in_victim(b)
    }
    assert lost
    for b in lost:
        entry = reader.index.lookup(b)
        assert entry is not None and entry.pack_id != w.base.victim  # uploaded again


@case("missing-pack", "restore")
def _(w: World) -> None:
    drop_pack(w)
    for sid in (w.base.snap1, w.base.snap2):
        hit = w.base.hit(sid, w.base.in_victim)
        expect_restore(w, sid, w.base.files[sid], failing=hit)


@case("missing-pack", "prune")
def _(w: World) -> None:
    drop_pack(w)
    expect_refused(w)


def expect_repaired(w: World, lost: Callable[[bytes], bool]) -> None:
    """After repair snapshots --forget: each damaged snapshot is replaced by its repair,
    whose hit files hold what remained (marked damaged, a restore warning) and whose
    other files are exact."""
    reader = w.open()
    reader.load_index()
    snaps = reader.snapshots()
    originals = {s.original if s.original else s.id: s for s in snaps}
    assert sorted(originals) == sorted([w.base.snap1, w.base.snap2])
    for orig, snap in originals.items():
        hit = w.base.hit(orig, lost)
        assert hit and REPAIRED_TAG in snap.tags and snap.original == orig
        nodes = file_nodes(reader, snap, w.src)
        assert {p for p, n in nodes.items() if n.damaged} == hit
        remaining = w.base.remaining(orig, lost)
        for p in hit:
            assert len(remaining[p]) < len(w.base.files[orig][p])
        expect_restore(w, snap.id, remaining, damaged=hit)


@case("missing-pack", "repair")
def _(w: World) -> None:
    drop_pack(w)
    index = run_repair_index(w.open())
    assert index.packs_lost == 1
    res = run_repair_snapshots(w.open(), forget=True)
    both = sorted([w.base.snap1, w.base.snap2])
    assert sorted(old for old, _ in res.repaired) == both and sorted(res.forgotten) == both
    checked = check(w, 1.0)
    assert checked.errors == []
    assert checked.warnings and all("was repaired" in x for x in checked.warnings)
    run_prune(w.open())
    assert check(w, 1.0).errors == []
    expect_repaired(w, w.base.in_victim)


# ---- 4. a data pack truncated to half ----------------------------------------------------------


def truncate_pack(w: World) -> None:
    name = victim_name(w)
    w.objects[name] = w.objects[name][: w.base.cut]


@case("truncated-pack", "check")
def _(w: World) -> None:
    truncate_pack(w)
    res = check(w)
    assert res.errors == [f"pack {w.base.victim.hex()} is truncated ({w.base.cut} bytes)"]


@case("truncated-pack", "check-read-data")
def _(w: World) -> None:
    truncate_pack(w)
    res = check(w, 1.0)
    assert res.errors and all(w.base.victim.hex() in e for e in res.errors), res.errors
    assert any("truncated" in e for e in res.errors)


@case("truncated-pack", "backup")
def _(w: World) -> None:
    truncate_pack(w)
    backup_and_restore(w)
    reader = w.open()
    reader.load_index(present=reader.list_packs())
    beyond = {
        b for n in w.base.nodes[w.base.snap2].values() for b in n.content if w.base.beyond_cut(b)
    }
    assert beyond
    for b in beyond:
        entry = reader.index.lookup(b)
        assert entry is not None and entry.pack_id != w.base.victim


@case("truncated-pack", "restore")
def _(w: World) -> None:
    truncate_pack(w)
    for sid in (w.base.snap1, w.base.snap2):
        hit = w.base.hit(sid, w.base.beyond_cut)
        expect_restore(w, sid, w.base.files[sid], failing=hit)


@case("truncated-pack", "prune")
def _(w: World) -> None:
    truncate_pack(w)
    expect_refused(w)


def repair_truncated(w: World) -> None:
    truncate_pack(w)
    index = run_repair_index(w.open())
    assert index.packs_from_old_index == [w.base.victim.hex()]
    res = run_repair_snapshots(w.open(), forget=True)
    both = sorted([w.base.snap1, w.base.snap2])
    assert sorted(old for old, _ in res.repaired) == both and sorted(res.forgotten) == both
    run_prune(w.open())


@case("truncated-pack", "repair")
def _(w: World) -> None:
    repair_truncated(w)
    checked = check(w)
    assert checked.errors == []
    assert all("was repaired" in x for x in checked.warnings), checked.warnings
    expect_repaired(w, w.base.beyond_cut)


@case("truncated-pack", "repair-read-data")
def _(w: World) -> None:
    repair_truncated(w)
    assert check(w, 1.0).errors == []


# ---- 8. a pack in the wrong directory -----------------------------------------------------------


def misplace_pack(w: World) -> str:
    pid = w.base.victim.hex()
    wrong = f"{layout.DATA}{'01' if pid.startswith('00') else '00'}/{pid}"
    w.objects[wrong] = w.objects.pop(victim_name(w))
    return wrong


@case("misplaced-pack", "check")
def _(w: World) -> None:
    wrong = misplace_pack(w)
    res = check(w)
    assert len(res.errors) == 1, res.errors
    assert "not in its place" in res.errors[0] and wrong in res.errors[0]


@case("misplaced-pack", "restore")
def _(w: World) -> None:
    misplace_pack(w)
    for sid in (w.base.snap1, w.base.snap2):
        hit = w.base.hit(sid, w.base.in_victim)
        expect_restore(w, sid, w.base.files[sid], failing=hit)


@case("misplaced-pack", "backup")
def _(w: World) -> None:
    misplace_pack(w)
    backup_and_restore(w)


@case("misplaced-pack", "prune")
def _(w: World) -> None:
    misplace_pack(w)
    expect_refused(w)


@case("misplaced-pack", "repair")
def _(w: World) -> None:
    wrong = misplace_pack(w)
    res = run_repair_index(w.open())
    assert res.packs_moved == 1
    assert victim_name(w) in w.objects and wrong not in w.objects
    checked = check(w, 1.0)
    assert checked.errors == [] and checked.warnings == []
    expect_all_restore(w)


# ---- 5. garbage objects and stray names -------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    name: str
    reported_as: str  # "error" or "warning" by check
    mention: str  # what check's message contains
    prune_refuses: bool = False


def _hex(seed: int) -> str:
    return random.Random(seed).randbytes(32).hex()


GARBAGE_HEX = _hex(5)
PLANTED: dict[str, Planted] = {
    "garbage-data": Planted(
        layout.pack_name(GARBAGE_HEX), "warning", f"pack {GARBAGE_HEX} is not in any index"
    ),
    "stray-data": Planted("data/ab/.nfs000000001234", "error", "data/ab/.nfs000000001234"),
    "garbage-index": Planted(
        layout.INDEX + GARBAGE_HEX, "error", layout.INDEX + GARBAGE_HEX, prune_refuses=True
    ),
    "stray-index": Planted("index/README", "error", "index/README"),
    "garbage-snapshots": Planted(
        layout.SNAPSHOTS + GARBAGE_HEX, "error", GARBAGE_HEX, prune_refuses=True
    ),
    "stray-snapshots": Planted("snapshots/notes.txt", "error", "snapshots/notes.txt"),
    "garbage-keys": Planted(layout.KEYS + GARBAGE_HEX, "error", layout.KEYS + GARBAGE_HEX),
    "stray-keys": Planted("keys/README", "error", "keys/README"),
    "garbage-locks": Planted(layout.LOCKS + GARBAGE_HEX, "warning", GARBAGE_HEX),
    "stray-locks": Planted("locks/README", "error", "locks/README"),
}


def plant(w: World, p: Planted) -> None:
    assert p.name not in w.objects
    w.backend.put(p.name, random.Random(p.name).randbytes(700))


def _planted_cases(damage: str, p: Planted) -> None:
    @case(damage, "backup")
    def _backup(w: World) -> None:
        plant(w, p)
        backup_and_restore(w)

    @case(damage, "snapshots")
    def _snapshots(w: World) -> None:
        plant(w, p)
        assert [s.id for s in w.open().snapshots()] == [w.base.snap1, w.base.snap2]

    @case(damage, "restore-latest")
    def _restore(w: World) -> None:
        plant(w, p)
        expect_restore(w, "latest", w.base.files[w.base.snap2])

    @case(damage, "check")
    def _check(w: World) -> None:
        plant(w, p)
        res = check(w)
        if p.reported_as == "error":
            assert len(res.errors) == 1 and p.mention in res.errors[0], res.errors
        else:
            assert res.errors == []
            assert any(p.mention in x for x in res.warnings), res.warnings

    @case(damage, "prune")
    def _prune(w: World) -> None:
        plant(w, p)
        if p.prune_refuses:
            expect_refused(w)
            return
        run_prune(w.open())
        if "stray" in damage:
            assert p.name in w.objects  # strays are never deleted
        expect_all_restore(w)


for _damage, _planted in PLANTED.items():
    _planted_cases(_damage, _planted)


@case("garbage-index", "repair")
def _(w: World) -> None:
    p = PLANTED["garbage-index"]
    plant(w, p)
    run_repair_index(w.open())
    assert p.name not in w.objects
    assert check(w).errors == []
    run_prune(w.open())
    expect_all_restore(w)


@case("garbage-snapshots", "repair")
def _(w: World) -> None:
    p = PLANTED["garbage-snapshots"]
    plant(w, p)
    res = run_repair_snapshots(w.open(), forget=True)
    assert res.unrepairable == [GARBAGE_HEX] and res.repaired == []
    assert p.name not in w.objects
    assert check(w).errors == []
    run_prune(w.open())
    expect_all_restore(w)


# ---- 6. the newest snapshot damaged -----------------------------------------------------------


def damage_snapshot(w: World) -> None:
    flip(w, layout.SNAPSHOTS + w.base.snap2)


@case("damaged-snapshot", "snapshots")
def _(w: World) -> None:
    damage_snapshot(w)
    assert [s.id for s in w.open().snapshots()] == [w.base.snap1]


@case("damaged-snapshot", "restore-latest")
def _(w: World) -> None:
    damage_snapshot(w)
    assert w.open().find_snapshot("latest").id == w.base.snap1
    expect_restore(w, "latest", w.base.files[w.base.snap1])


@case("damaged-snapshot", "backup")
def _(w: World) -> None:
    damage_snapshot(w)
    snap = backup_and_restore(w)
    assert snap.parent == w.base.snap1  # the newest readable one


@case("damaged-snapshot", "check")
def _(w: World) -> None:
    damage_snapshot(w)
    res = check(w)
    assert len(res.errors) == 1 and w.base.snap2 in res.errors[0], res.errors


@case("damaged-snapshot", "prune")
def _(w: World) -> None:
    damage_snapshot(w)
    expect_refused(w)


@case("damaged-snapshot", "repair")
def _(w: World) -> None:
    damage_snapshot(w)
    res = run_repair_snapshots(w.open(), forget=True)
    assert res.unrepairable == [w.base.snap2] and res.forgotten == [w.base.snap2]
    assert w.snapshot_names() == {layout.SNAPSHOTS + w.base.snap1}
    checked = check(w)
    assert checked.errors == [] and checked.warnings == []
    run_prune(w.open())
    assert check(w, 1.0).errors == []
    expect_restore(w, w.base.snap1, w.base.files[w.base.snap1])


# ---- 7. a damaged key file ---------------------------------------------------------------------


def key_names(w: World) -> list[str]:
    return sorted(n for n in w.objects if n.startswith(layout.KEYS))


@case("damaged-only-key", "open")
def _(w: World) -> None:
    (key,) = key_names(w)
    flip(w, key)
    with pytest.raises(IntegrityError, match=key):
        w.open()


def damage_key_with_spare(w: World) -> str:
    (key,) = key_names(w)
    w.open().add_key(w.password, w.kdf)
    flip(w, key)
    return key


@case("damaged-key-with-spare", "open")
def _(w: World) -> None:
    key = damage_key_with_spare(w)
    repo = w.open()
    assert repo.key_name != key and repo.key_name in key_names(w)


@case("damaged-key-with-spare", "check")
def _(w: World) -> None:
    key = damage_key_with_spare(w)
    res = check(w)
    assert len(res.errors) == 1 and key in res.errors[0], res.errors


@case("damaged-key-with-spare", "restore-latest")
def _(w: World) -> None:
    damage_key_with_spare(w)
    expect_restore(w, "latest", w.base.files[w.base.snap2])


# ---- 9. I/O faults ----------------------------------------------------------------------------


@case("fault-put-pack", "backup")
def _(w: World) -> None:
    new = w.new_dir("new")
    files = {f"f{i}.bin": random.Random(i).randbytes(40_000) for i in range(4)}
    _write(new, files)
    faulty = FaultyBackend(w.backend).fail("put", prefix=layout.DATA, nth=2)
    before = w.snapshot_names()
    with pytest.raises(DrengineError):
        run_backup(w.open(faulty), BackupOptions([FileSource([str(new)])]))
    assert len(faulty.injected("fail")) == 1
    assert w.snapshot_names() == before  # no snapshot written
    assert not any(n.startswith(layout.LOCKS) for n in w.objects)
    assert check(w).errors == []
    res = run_backup(w.open(), BackupOptions([FileSource([str(new)])]))
    assert res.errors == []
    expect_restore(w, res.snapshot.id, files, src=new)
    expect_restore(w, w.base.snap2, w.base.files[w.base.snap2])


def _open_with_get_fault(w: World, rule: Callable[[FaultyBackend], object]) -> Repository:
    """The repository on a FaultyBackend, with the snapshot list and index loaded before the
    fault is switched on (it hits the victim's reads during the restore only)."""
    faulty = FaultyBackend(w.backend)
    repo = w.open(faulty)
    repo.load_index()
    rule(faulty)
    return repo


@case("fault-get-corrupt", "restore")
def _(w: World) -> None:
    sid = w.base.snap2
    repo = _open_with_get_fault(w, lambda f: f.corrupt("get", prefix=victim_name(w), seed=3))
    snap = repo.find_snapshot(sid)
    target = w.new_dir("restore")
    result = run_restore(repo, snap, str(target))
    top = target / w.src.relative_to("/")
    failed = {os.path.relpath(e["path"], top) for e in result.errors}
    hit = w.base.hit(sid, w.base.in_victim)
    assert "big.bin" in failed and failed <= hit, result.errors
    rel = str(w.src.relative_to("/"))
    got = found_files(target)
    assert sorted(got) == sorted(f"{rel}/{p}" for p in w.base.files[sid] if p not in failed)
    for p, data in w.base.files[sid].items():
        if p not in failed:
            assert got[f"{rel}/{p}"] == data


@case("fault-get-fails", "restore")
def _(w: World) -> None:
    sid = w.base.snap2
    repo = _open_with_get_fault(
        w, lambda f: f.fail("get", error=StorageError, prefix=victim_name(w))
    )
    hit = w.base.hit(sid, w.base.in_victim)
    expect_restore(w, sid, w.base.files[sid], failing=hit, repo=repo)


@case("fault-get-transient", "restore")
def _(w: World) -> None:
    faulty = FaultyBackend(w.backend)
    policy = RetryPolicy(budget=10.0, base_delay=0.001, max_delay=0.005)
    repo = w.open(RetryingBackend(faulty, policy))
    repo.load_index()
    faulty.fail("get", error=TransientStorageError, prefix=victim_name(w), times=3)
    sid = w.base.snap2
    expect_restore(w, sid, w.base.files[sid], repo=repo)
    assert len(faulty.injected("fail")) == 3


# ---- running the table ------------------------------------------------------------------------


def _param(row: Row) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else []
    return pytest.param(row, id=f"{row.damage}/{row.command}", marks=marks)


def test_every_row_has_its_case_and_every_case_its_row() -> None:
    rows = [(r.damage, r.command) for r in MATRIX]
    assert len(rows) == len(set(rows))
    assert set(rows) == set(CASES)
    assert {r.damage for r in MATRIX} == set(DAMAGES)


@pytest.mark.parametrize("row", [_param(r) for r in MATRIX])
def test_damage_matrix(row: Row, world: World) -> None:
    CASES[(row.damage, row.command)](world)

"""``repair index``: rebuild the index from the packs' own trailers (format §5.2).

Each pack lists its blobs in an encrypted trailer, so the index can always be rebuilt from
the packs alone: after a lost or damaged index object, a lost pack, or a pack moved into the
wrong directory. Under an exclusive lock:

1. Packs stored under a wrong ``data/XX/`` directory are verified against their name and
   written to their place, then the misplaced copy is removed.
2. Every pack's trailer is read (ranged reads of its head and tail). With ``read_all`` the
   whole pack is read instead and only blobs that decrypt and match their ID are indexed,
   so a pack with a damaged body still gives what is intact.
3. A pack whose trailer cannot be read keeps the entries the old index had for it, where
   they fit inside the pack (check --read-data then verifies them); without any, it is
   reported and left unindexed.
4. New index objects are written, then one that supersedes every old index object (damaged
   ones included); then the old objects are deleted, except under S3 Object Lock retention.

Blobs that were indexed in packs that are gone are no longer indexed afterwards: snapshots
that reference them are found by ``check`` and rewritten by ``repair snapshots``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drengine.core.errors import DrengineError, IntegrityError
from drengine.repository import layout
from drengine.repository.index import IndexEntry, index_batches
from drengine.repository.layout import BlobType
from drengine.repository.locks import HeldLock, locked
from drengine.repository.pack import BlobRecord, parse_trailer
from drengine.repository.repo import Repository

_READERS = 8  # trailer reads are small and latency-bound on S3


@dataclass
class RepairIndexResult:
    packs: int = 0
    blobs: int = 0
    packs_moved: int = 0
    packs_unreadable: list[str] = field(default_factory=list)  # not indexed
    packs_from_old_index: list[str] = field(default_factory=list)  # trailer damaged
    blobs_dropped: int = 0  # --read-all-packs: damaged blobs left out
    packs_lost: int = 0  # indexed before, gone from storage
    index_objects_replaced: int = 0
    index_objects_kept: list[str] = field(default_factory=list)  # retained (Object Lock)
    notes: list[str] = field(default_factory=list)


def run_repair_index(
    repo: Repository,
    read_all: bool = False,
    say: Callable[[str], None] = lambda _m: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RepairIndexResult:
    with locked(repo, exclusive=True, operation="repair index") as lock:
        return _repair(repo, lock, read_all, say, now())


def _repair(
    repo: Repository, lock: HeldLock, read_all: bool, say: Callable[[str], None], now: datetime
) -> RepairIndexResult:
    res = RepairIndexResult()
    old_ids = repo.index_ids()
    repo.load_index()  # what the old index knew, for packs whose trailer is damaged
    old: dict[bytes, list[BlobRecord]] = defaultdict(list)
    for bid, e in repo.index.entries():
        old[e.pack_id].append(BlobRecord(e.type, bid, e.offset, e.length, e.raw_length))
    stored = repo.list_packs()
    if repo.strays.misplaced:
        say(f"moving {len(repo.strays.misplaced)} packs into place")
        _move_misplaced(repo, lock, stored, res)
    res.packs_lost = len(old.keys() - stored.keys())

    say(f"reading {len(stored)} packs")

    def one(item: tuple[bytes, int]) -> tuple[bytes, list[BlobRecord] | None, str, int]:
        pack_id, size = item
        try:
            if read_all:
                good, dropped = _verified_records(repo, pack_id)
                why = f"left out {dropped} damaged blobs" if dropped else ""
                return pack_id, good, why, dropped
            return pack_id, repo.read_pack_trailer(pack_id, size), "", 0
        except DrengineError as e:
            return pack_id, None, str(e), 0

    packs: list[tuple[bytes, list[BlobRecord]]] = []
    with ThreadPoolExecutor(_READERS, thread_name_prefix="repair") as pool:
        for pack_id, records, problem, dropped in pool.map(one, sorted(stored.items())):
            res.blobs_dropped += dropped
            name = pack_id.hex()
            if records is None:
                kept = [r for r in old.get(pack_id, []) if r.offset + r.length <= stored[pack_id]]
                if kept:
                    res.packs_from_old_index.append(name)
                    res.notes.append(f"pack {name}: {problem}; kept {len(kept)} old entries")
                    records = kept
                else:
                    res.packs_unreadable.append(name)
                    res.notes.append(f"pack {name}: {problem}; not indexed")
                    continue
            elif problem:  # --read-all-packs dropped damaged blobs
                res.notes.append(f"pack {name}: {problem}")
            if records:
                packs.append((pack_id, records))
    res.packs = len(packs)
    res.blobs = sum(len(r) for _, r in packs)

    say("writing the new index")
    for batch in index_batches(packs):
        repo.save_index(batch)
    repo.save_index([], supersedes=[bytes.fromhex(o) for o in old_ids])
    lock.prove()
    for oid in old_ids:
        until = repo.retained_until(layout.INDEX + oid)
        if until is not None and until > now:
            res.index_objects_kept.append(oid)  # superseded: readers skip it
            continue
        lock.check_valid()
        repo.delete_index(oid)
        res.index_objects_replaced += 1
    return res


def _move_misplaced(
    repo: Repository, lock: HeldLock, stored: dict[bytes, int], res: RepairIndexResult
) -> None:
    for pack_id, name in sorted(repo.strays.misplaced.items()):
        lock.check_valid()
        try:
            stored[pack_id] = repo.relocate_pack(pack_id, name)
        except DrengineError as e:
            res.notes.append(f"{name}: {e}; left where it is")
            continue
        res.packs_moved += 1
        res.notes.append(f"moved {name} to {layout.pack_name(pack_id.hex())}")


def _verified_records(repo: Repository, pack_id: bytes) -> tuple[list[BlobRecord], int]:
    """(the blobs of a whole pack that decrypt and match their ID, how many did not)."""
    data = repo.read_pack(pack_id)
    _, records = parse_trailer(repo.keys.encryption, data, f"pack {pack_id.hex()}")
    view = memoryview(data)
    good = []
    for r in records:
        entry = IndexEntry(pack_id, BlobType(r.type), r.offset, r.length, r.raw_length)
        try:
            repo.open_blob(r.id, entry, view[r.offset : r.offset + r.length])
            good.append(r)
        except IntegrityError:
            continue
    return good, len(records) - len(good)

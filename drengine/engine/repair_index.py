"""``repair index``: rebuild the index from the packs' own trailers (format §5.2).

Each pack lists its blobs in an encrypted trailer, so the index can always be rebuilt from
the packs alone: after a lost or damaged index object, a lost pack, or a pack moved into the
wrong directory. Under an exclusive lock:

1. Packs stored under a wrong ``data/XX/`` directory are verified against their name and
   written to their place, then the misplaced copy is removed.
2. Every pack's trailer is read (ranged reads of its head and tail). With ``read_all`` the
   whole pack is read instead and checked against its name, and every blob is verified.
3. A damaged pack (its trailer cannot be read, or with ``read_all`` it does not match its
   hash or holds damaged blobs) is salvaged: every blob the old index or its trailer lists
   that still reads and verifies is copied into a new pack. A pack with nothing known to
   read is reported and left unindexed.
4. New index objects are written, then one that supersedes every old index object (damaged
   ones included); then the old objects and the salvaged packs are deleted, except under
   S3 Object Lock retention. Afterwards ``check --read-data`` is clean.

Blobs that were indexed in packs that are gone are no longer indexed afterwards: snapshots
that reference them are found by ``check`` and rewritten by ``repair snapshots``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drengine.core.errors import DrengineError, IntegrityError, ObjectNotFound, StorageError
from drengine.repository import blobcodec, layout
from drengine.repository.index_entry import IndexEntry
from drengine.repository.index_split import BLOBS_PER_INDEX, index_batches
from drengine.repository.layout import BlobType
from drengine.repository.locks import HeldLock, locked
from drengine.repository.pack import BlobRecord, PackWriter, parse_trailer
from drengine.repository.repo import Repository

_READERS = 8  # trailer reads are small and latency-bound on S3


@dataclass
class RepairIndexResult:
    packs: int = 0
    blobs: int = 0
    packs_moved: int = 0
    packs_unreadable: list[str] = field(default_factory=list)  # not indexed
    packs_from_old_index: list[str] = field(default_factory=list)  # trailer damaged
    packs_salvaged: int = 0  # damaged packs whose intact blobs were copied to new packs
    blobs_dropped: int = 0  # blobs of damaged packs that did not verify: lost
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

    def one(item: tuple[bytes, int]) -> tuple[bytes, list[BlobRecord] | None, str, bool]:
        """(pack, its records, what is wrong, whether the pack itself is damaged)."""
        pack_id, size = item
        try:
            if read_all:
                listed, good, intact = _verified_records(repo, pack_id)
                dropped = len(listed) - len(good)
                why = f"{dropped} damaged blobs" if dropped else ""
                if not intact:
                    why = ", ".join(w for w in ("does not match its hash", why) if w)
                # A damaged pack is salvaged from everything it lists (what fails counts lost).
                bad = not intact or bool(dropped)
                return pack_id, listed if bad else good, why, bad
            return pack_id, repo.read_pack_trailer(pack_id, size), "", False
        except ObjectNotFound:
            return pack_id, None, "gone from storage since the listing", False
        except IntegrityError as e:  # the content is damaged: salvage what verifies
            return pack_id, None, str(e), True
        except StorageError as e:
            # Storage failed, not the pack: deciding now could salvage and delete a healthy
            # pack. Stop before anything is written.
            raise StorageError(f"repair index stopped, nothing changed: {e}") from None

    packs: list[tuple[bytes, list[BlobRecord]]] = []
    damaged: list[tuple[bytes, list[BlobRecord]]] = []  # rewritten from what still verifies
    with ThreadPoolExecutor(_READERS, thread_name_prefix="repair") as pool:
        for pack_id, records, problem, bad in pool.map(one, sorted(stored.items())):
            name = pack_id.hex()
            if records is None and not bad:  # deleted since the listing
                continue
            if records is None:  # the trailer cannot be read: the old index may know more
                records = [
                    r for r in old.get(pack_id, []) if r.offset + r.length <= stored[pack_id]
                ]
                if records:
                    res.packs_from_old_index.append(name)
                else:
                    res.packs_unreadable.append(name)
                    res.notes.append(f"pack {name}: {problem}; nothing in it can be indexed")
                    continue
            if bad:
                res.notes.append(f"pack {name}: {problem}; salvaging what verifies")
                damaged.append((pack_id, records))
            elif records:
                packs.append((pack_id, records))
    if damaged:
        say(f"salvaging the blobs of {len(damaged)} damaged packs")
        for pack_id, records in damaged:
            new, lost = _salvage(repo, pack_id, records)
            packs += new
            res.blobs_dropped += lost
            res.packs_salvaged += 1
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
    for pack_id, _ in damaged:  # their intact blobs are in new packs, indexed above
        name = layout.pack_name(pack_id.hex())
        until = repo.retained_until(name)
        if until is not None and until > now:
            res.notes.append(f"{name} stays until {until.isoformat()} (S3 Object Lock)")
            continue
        lock.check_valid()
        repo.delete_pack(pack_id)
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


def _verified_records(
    repo: Repository, pack_id: bytes
) -> tuple[list[BlobRecord], list[BlobRecord], bool]:
    """(the blobs a whole pack lists, those that decrypt and match their ID, whether the pack
    matches its name)."""
    data = repo.read_pack(pack_id)
    intact = layout.object_id(data) == pack_id.hex()
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
    return records, good, intact


def _salvage(
    repo: Repository, pack_id: bytes, records: list[BlobRecord]
) -> tuple[list[tuple[bytes, list[BlobRecord]]], int]:
    """Copy every blob of a damaged pack that still reads and verifies into new packs, so
    the damaged one can go and ``check --read-data`` is clean again. (new packs, blobs lost)"""
    written: list[tuple[bytes, list[BlobRecord]]] = []
    writers: dict[BlobType, PackWriter] = {}
    level = repo.settings.compression_level

    def flush(w: PackWriter) -> None:
        records = list(w.records)
        written.append((repo.save_pack(w.finish()), records))

    lost = 0
    for r in records:
        entry = IndexEntry(pack_id, BlobType(r.type), r.offset, r.length, r.raw_length)
        try:
            plain = repo.open_blob(r.id, entry, repo.read_pack(pack_id, r.offset, r.length))
        except IntegrityError:
            lost += 1
            continue
        w = writers.get(entry.type)
        if w is None:
            w = writers[entry.type] = PackWriter(repo.keys.encryption)
        w.add(entry.type, r.id, blobcodec.encode(plain, level), r.raw_length)
        if len(w) >= repo.settings.pack_size or len(w.records) >= BLOBS_PER_INDEX:
            flush(w)
            del writers[entry.type]
    for w in writers.values():
        flush(w)
    return written, lost

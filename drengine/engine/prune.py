"""Prune: remove blobs no snapshot references, repack packs that are mostly unused.

Safety, in order:
1. An exclusive lock: no backup (shared lock) can add blobs while we decide what is unused.
   A backup whose lock went stale (a paused host) checks its lock before writing its
   snapshot and fails instead of referencing packs we may have deleted.
2. Mark: every snapshot's trees are read; if any cannot be read, prune stops (it cannot know
   what those snapshots need).
3. Every used blob must sit in a pack that exists, else prune stops: run check.
4. Repacked blobs are decrypted, verified against their IDs and written into new packs.
5. The new index objects are written, then a final index object that supersedes all the old
   ones; only then are old index objects and packs deleted, and the lock is checked again
   right before the first deletion.
6. Objects still under S3 Object Lock retention are never deleted (on a versioned bucket the
   delete would only hide them behind a delete marker while they stay stored and billed).
   An unused one stays in storage, unindexed, until a later prune after its retention; a
   pack worth repacking is kept as it is; an old index object stays, superseded. Each is
   reported in ``kept_locked``.
A prune killed at any point leaves every snapshot restorable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drengine.core.errors import Cancelled, DrengineError, IntegrityError
from drengine.engine.reachability import referenced_blobs
from drengine.repository import blobcodec, layout
from drengine.repository.index_entry import IndexEntry
from drengine.repository.index_split import BLOBS_PER_INDEX, index_batches
from drengine.repository.layout import BlobType
from drengine.repository.locks import HeldLock, locked
from drengine.repository.pack import BlobRecord, PackWriter, decrypt_blob, parse_trailer
from drengine.repository.repo import Repository


class PruneRefused(DrengineError):
    pass


@dataclass(frozen=True)
class LockedObject:
    """An object prune would have removed but left, as S3 Object Lock still retains it."""

    kind: str  # "pack" or "index"
    name: str
    size: int
    until: str  # end of its retention, RFC 3339 in UTC


@dataclass
class PruneResult:
    dry_run: bool
    snapshots: int = 0
    packs_total: int = 0
    packs_kept: int = 0
    packs_deleted: int = 0  # wholly unused
    packs_repacked: int = 0
    packs_unindexed: int = 0  # in storage, in no index (left by interrupted backups)
    packs_written: int = 0
    blobs_used: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    bytes_repacked: int = 0
    index_objects_replaced: int = 0
    leftovers_removed: int = 0  # temporary files of killed or failed writes
    notes: list[str] = field(default_factory=list)
    kept_locked: list[LockedObject] = field(default_factory=list)


@dataclass
class _PackPlan:
    size: int
    keep: list[tuple[bytes, IndexEntry]] = field(default_factory=list)
    drop: list[tuple[bytes, IndexEntry]] = field(default_factory=list)

    def unused_bytes(self) -> int:
        return sum(e.length for _, e in self.drop)


def run_prune(
    repo: Repository,
    *,
    max_unused: float = 0.05,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda _m: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    cancel: threading.Event | None = None,
) -> PruneResult:
    """Prune under an exclusive lock; ``max_unused`` is the unused share a pack may keep;
    ``now`` is the clock that decides whether an S3 Object Lock retention has ended.

    ``cancel`` stops it at the next phase or repacked pack until the new index is written
    (``Cancelled``; what was repacked is left over for the next prune); once the new index
    is written, the deletions it makes safe are finished."""

    def stop_if_cancelled() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("prune was cancelled before it deleted anything")

    def phase(message: str) -> None:
        stop_if_cancelled()
        say(message)

    with locked(repo, exclusive=True, operation="prune") as lock:
        return _prune(
            repo, lock, max_unused, dry_run, phase, say, stop_if_cancelled,
            _retention_check(repo, now()),
        )  # fmt: skip


def _retention_check(repo: Repository, now: datetime) -> Callable[[str], datetime | None]:
    """name → the end of its S3 Object Lock retention if that is still ahead, else None."""

    def until(name: str) -> datetime | None:
        end = repo.retained_until(name)
        return end if end is not None and end > now else None

    return until


def _prune(
    repo: Repository,
    lock: HeldLock,
    max_unused: float,
    dry_run: bool,
    phase: Callable[[str], None],
    say: Callable[[str], None],
    stop_if_cancelled: Callable[[], None],
    retained: Callable[[str], datetime | None],
) -> PruneResult:
    res = PruneResult(dry_run)
    if not dry_run:
        _remove_leftovers(repo, res)
    phase("loading indexes")
    index_sizes = repo.index_sizes()
    old_indexes = list(index_sizes)
    repo.load_index()
    damaged = repo.damaged_index_objects()
    if damaged:
        # Its packs would look unindexed and be deleted: the index must be rebuilt first.
        raise PruneRefused(
            f"prune stopped: {len(damaged)} index objects cannot be read (first: {damaged[0]});"
            " run drengine repair index"
        )
    stored = repo.list_packs()
    phase("finding the blobs snapshots use")
    reach = referenced_blobs(repo)
    if reach.errors:
        raise PruneRefused(
            f"prune stopped: {len(reach.errors)} snapshots or trees cannot be read "
            f"(first: {reach.errors[0]}); run drengine check"
        )
    res.snapshots = reach.snapshots
    used = reach.blobs

    plans: dict[bytes, _PackPlan] = {}
    placed: set[bytes] = set()
    for bid, entry in sorted(repo.index.entries(), key=lambda x: (x[1].pack_id, x[1].offset)):
        if entry.pack_id not in stored:
            continue
        plan = plans.setdefault(entry.pack_id, _PackPlan(stored[entry.pack_id]))
        if entry.offset + entry.length > stored[entry.pack_id]:
            continue  # beyond the end of a truncated pack: not really stored
        if bid in used and bid not in placed:
            placed.add(bid)
            plan.keep.append((bid, entry))
        else:
            plan.drop.append((bid, entry))
    missing = used - placed
    if missing:
        raise PruneRefused(
            f"prune stopped: {len(missing)} blobs that snapshots use are in no stored pack "
            f"(e.g. {next(iter(missing)).hex()}); run drengine check"
        )
    res.blobs_used = len(used)
    res.packs_total = len(stored)

    delete: list[bytes] = []
    repack: list[bytes] = []
    unindex: set[bytes] = set()  # unused but retained: left in storage, out of the index
    for pack_id, size in stored.items():
        maybe = plans.get(pack_id)
        in_use = maybe is not None and bool(maybe.keep)
        if maybe is not None and in_use and not _worth_repacking(maybe, size, max_unused):
            res.packs_kept += 1
            continue
        name = layout.pack_name(pack_id.hex())
        until = retained(name)
        if until is not None:
            res.kept_locked.append(LockedObject("pack", name, size, until.isoformat()))
            if in_use:
                res.packs_kept += 1  # repacked by a later prune, once it may be deleted
            else:
                unindex.add(pack_id)
        elif maybe is None:
            res.packs_unindexed += 1
            delete.append(pack_id)
            res.bytes_freed += size
        elif not in_use:
            res.packs_deleted += 1
            delete.append(pack_id)
            res.bytes_freed += size
            res.blobs_removed += len(maybe.drop)
        else:
            res.packs_repacked += 1
            repack.append(pack_id)
            res.blobs_removed += len(maybe.drop)
            res.bytes_repacked += sum(e.length for _, e in maybe.keep)
            res.bytes_freed += maybe.unused_bytes()
    index_delete: list[str] = []
    for oid in old_indexes:  # all superseded by the new index; retained ones stay
        until = retained(layout.INDEX + oid)
        if until is None:
            index_delete.append(oid)
        else:
            res.kept_locked.append(
                LockedObject("index", layout.INDEX + oid, index_sizes[oid], until.isoformat())
            )
    if dry_run:
        return res

    phase(f"repacking {len(repack)} packs")
    new_packs = _repack(repo, [(p, plans[p]) for p in repack], stop_if_cancelled)
    res.packs_written = len(new_packs)
    gone = set(delete) | set(repack) | unindex
    kept = [
        (pid, [_record(bid, e) for bid, e in plans[pid].keep + plans[pid].drop])
        for pid in sorted(plans)
        if pid not in gone
    ]
    phase("writing the new index")
    _write_index(repo, kept + new_packs, old_indexes)
    res.index_objects_replaced = len(old_indexes)

    lock.prove()
    say(f"deleting {len(index_delete)} old index objects and {len(delete) + len(repack)} packs")
    for oid in index_delete:
        lock.check_valid()
        repo.delete_index(oid)
    for pack_id in delete + repack:
        lock.check_valid()
        repo.delete_pack(pack_id)
    return res


# Under the exclusive lock nobody writes packs, index objects or snapshots: every leftover
# there is dead. Locks and key files are written without that lock: only old ones go.
_LEFTOVER_AGE = {"data": 0.0, "index": 0.0, "snapshots": 0.0, "keys": 600.0, "locks": 600.0}


def _remove_leftovers(repo: Repository, res: PruneResult) -> None:
    """First of all, so that on a full disk the repacking below has room to write."""
    removed = repo.remove_leftovers(_LEFTOVER_AGE, time.time())
    res.leftovers_removed = len(removed)
    res.bytes_freed += sum(t.size for t in removed)


def _worth_repacking(plan: _PackPlan, size: int, max_unused: float) -> bool:
    return bool(plan.drop) and plan.unused_bytes() > max_unused * size


def _record(bid: bytes, e: IndexEntry) -> BlobRecord:
    return BlobRecord(e.type, bid, e.offset, e.length, e.raw_length)


def _repack(
    repo: Repository, packs: list[tuple[bytes, _PackPlan]], stop_if_cancelled: Callable[[], None]
) -> list[tuple[bytes, list[BlobRecord]]]:
    """Copy the used blobs of ``packs`` into new packs; each blob verified on the way."""
    written: list[tuple[bytes, list[BlobRecord]]] = []
    writers: dict[BlobType, PackWriter] = {}

    def flush(w: PackWriter) -> None:
        records = list(w.records)
        written.append((repo.save_pack(w.finish()), records))

    for pack_id, plan in packs:
        stop_if_cancelled()
        data = repo.read_pack(pack_id)
        name = pack_id.hex()
        if layout.object_id(data) != name:
            raise IntegrityError(f"pack {name} does not match its hash; prune stopped")
        salt, _ = parse_trailer(repo.keys.encryption, data, f"pack {name}")
        view = memoryview(data)
        for bid, e in plan.keep:
            rec = _record(bid, e)
            what = f"blob {bid.hex()} in pack {name}"
            payload = decrypt_blob(
                repo.keys.encryption, salt, rec, view[e.offset : e.offset + e.length], what
            )
            plain = blobcodec.decode(payload, e.raw_length, what, e.type == BlobType.TREE)
            if repo.blob_id(plain, e.type) != bid:
                raise IntegrityError(f"{what} does not match its ID; prune stopped")
            w = writers.get(e.type)
            if w is None:
                w = writers[e.type] = PackWriter(repo.keys.encryption)
            w.add(e.type, bid, payload, e.raw_length)  # payload keeps its compression
            if len(w) >= repo.settings.pack_size or len(w.records) >= BLOBS_PER_INDEX:
                flush(w)
                del writers[e.type]
    for w in writers.values():
        flush(w)
    return written


def _write_index(
    repo: Repository, packs: list[tuple[bytes, list[BlobRecord]]], old: list[str]
) -> None:
    """Index objects for ``packs``, then one that supersedes ``old``: readers see either the
    old set or the complete new one, never a partial new set alone."""
    for batch in index_batches(packs):
        repo.save_index(batch)
    repo.save_index([], supersedes=[bytes.fromhex(o) for o in old])

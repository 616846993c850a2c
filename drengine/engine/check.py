"""Check a repository: structure always, stored data on request.

Structure: every object in storage has a name of the format, in its place; every index
object decrypts, every indexed pack exists with the size the index implies, every snapshot
and tree decrypts, every tree entry keeps the format's rules (names, types, metadata ranges),
and every blob a tree references is indexed. Stale locks and leftover temporary files are
reported as warnings.
Data (``read_data``): every selected pack is downloaded, its name checked against its hash,
its trailer compared with the index, and every blob decrypted and checked against its ID.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drengine.core.errors import Cancelled, DrengineError, ObjectNotFound
from drengine.core.model import Node
from drengine.core.phases import NO_PHASES, Phases
from drengine.crypto.keys import b64d
from drengine.engine.check_packs import read_pack
from drengine.engine.check_procs import PackWorkers, process_count
from drengine.engine.reachability import referenced_blobs
from drengine.repository.index_entry import IndexEntry
from drengine.repository.locks import Locks, locked
from drengine.repository.repo import Repository
from drengine.repository.reports import load_report, report_ids, signing_key


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    packs_checked: int = 0
    packs_read: int = 0
    blobs_read: int = 0
    snapshots: int = 0


def run_check(
    repo: Repository,
    read_fraction: float = 0.0,
    say: Callable[[str], None] = lambda _m: None,
    seed: int | None = None,
    cancel: threading.Event | None = None,
    phases: Phases = NO_PHASES,
) -> CheckResult:
    """``cancel`` stops the check at its next phase or pack read (``Cancelled``);
    ``phases`` receives the timings of index loading, structure checks (verify), pack reads
    (fetch) and blob decryption (decrypt)."""

    def stop_if_cancelled() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the check was cancelled")

    def phase(message: str) -> None:
        stop_if_cancelled()
        say(message)

    with locked(repo, exclusive=False, operation="check"):
        return _run_check(repo, read_fraction, phase, seed, stop_if_cancelled, phases)


def _run_check(
    repo: Repository,
    read_fraction: float,
    say: Callable[[str], None],
    seed: int | None,
    stop_if_cancelled: Callable[[], None],
    phases: Phases,
) -> CheckResult:
    res = CheckResult()
    say("loading indexes")
    with phases.span("index"):
        repo.load_index()
    with phases.span("verify"):
        by_pack, stored = _check_packs(repo, res, say)
    packs: list[bytes] = []
    if read_fraction > 0:
        packs = sorted(p for p in by_pack if p in stored)
        if read_fraction < 1:
            rng = random.Random(seed)
            packs = rng.sample(packs, max(1, round(len(packs) * read_fraction))) if packs else []

    def cancelled() -> bool:
        try:
            stop_if_cancelled()
        except Cancelled:
            return True
        return False

    # Worker processes read the packs while this process checks the trees (both are
    # Python per blob or per node: threads of one process would share one core).
    workers = PackWorkers(repo, phases, cancelled)
    try:
        n = process_count(repo, len(packs), sum(stored[p] for p in packs))
        if n:
            workers.start(n, [(p, by_pack[p]) for p in packs])
        with phases.span("verify"):
            _check_metadata(repo, res, say)
        if packs:
            say(f"reading {len(packs)} packs")
        done = {p: (d.errors, d.blobs_read) for p, d in workers.results().items()}
        stop_if_cancelled()
    finally:
        workers.stop()
    left = [p for p in packs if p not in done]
    with ThreadPoolExecutor(3, thread_name_prefix="check") as pool:

        def read(p: bytes) -> tuple[list[str], int]:
            stop_if_cancelled()
            return read_pack(repo, p, by_pack[p], phases)

        done.update(zip(left, pool.map(read, left), strict=True))
    for p in packs:  # in pack order, however they were read
        errors, nblobs = done[p]
        res.errors.extend(errors)
        res.packs_read += 1
        res.blobs_read += nblobs
    return res


def _check_packs(
    repo: Repository, res: CheckResult, say: Callable[[str], None]
) -> tuple[dict[bytes, list[tuple[bytes, IndexEntry]]], dict[bytes, int]]:
    """The index objects and the packs: the indexed blobs by pack, and the packs stored
    (ID -> size)."""
    for name in repo.damaged_index_objects():
        res.errors.append(f"{name}: {repo.damaged[name]} (drengine repair index rebuilds it)")
    by_pack: dict[bytes, list[tuple[bytes, IndexEntry]]] = defaultdict(list)
    for bid, entry in repo.index.entries():
        by_pack[entry.pack_id].append((bid, entry))

    say("checking packs")
    stored = repo.list_packs()
    for pack_id, blobs in by_pack.items():
        res.packs_checked += 1
        size = stored.get(pack_id)
        if size is None:
            where = repo.strays.misplaced.get(pack_id)
            res.errors.append(
                f"pack {pack_id.hex()} is missing (indexed, not in storage)"
                if where is None
                else f"pack {pack_id.hex()} is stored as {where}, not in its place "
                "(drengine repair index moves it)"
            )
        elif size < max(e.offset + e.length for _, e in blobs):
            res.errors.append(f"pack {pack_id.hex()} is truncated ({size} bytes)")
    for pack_id in stored.keys() - by_pack.keys():
        res.warnings.append(f"pack {pack_id.hex()} is not in any index (prune removes it)")
    return by_pack, stored


def _check_metadata(repo: Repository, res: CheckResult, say: Callable[[str], None]) -> None:
    """Snapshots and trees, locks and leftovers, key files, reports, stray objects."""
    say("checking snapshots and trees")
    _check_trees(repo, res)
    _check_locks_and_leftovers(repo, res)
    for name, why in sorted(repo.damaged_key_files().items()):
        res.errors.append(f"key file {name}: {why}")
    _check_reports(repo, res)
    misplaced = set(repo.strays.misplaced.values())  # reported with their pack above
    for name, why in sorted(repo.strays.found.items()):
        if name not in misplaced:
            res.errors.append(f"{name}: {why}")


def _check_trees(repo: Repository, res: CheckResult) -> None:
    # Data blobs are looked up many at once (``lookup_many``): one at a time they cost a
    # quarter of the walk.
    refs: list[tuple[str, bytes]] = []

    def look_up() -> None:
        found = repo.index.lookup_many([bid for _, bid in refs])
        for (snapshot_id, bid), entry in zip(refs, found, strict=True):
            if entry is None:
                msg = f"snapshot {snapshot_id[:8]}: blob {bid.hex()} is not in the index"
                res.errors.append(msg)
        refs.clear()

    def indexed(snapshot_id: str, bid: bytes) -> None:
        refs.append((snapshot_id, bid))
        if len(refs) >= _LOOKUP_BATCH:
            look_up()

    def entries(snapshot_id: str, tree_id: bytes, nodes: list[Node]) -> None:
        where = f"snapshot {snapshot_id[:8]}: tree {tree_id.hex()[:16]}"
        for problem in tree_problems(nodes):
            res.errors.append(f"{where}: {problem}")
        for node in nodes:
            if node.damaged:
                res.warnings.append(f"{where}: entry {node.name!r} was repaired: {node.damaged}")

    reach = referenced_blobs(repo, indexed, entries)
    res.snapshots = reach.snapshots
    res.errors.extend(reach.errors)
    look_up()


def _check_reports(repo: Repository, res: CheckResult) -> None:
    """Every stored report decrypts and its signature is the repository's own."""
    key = signing_key(repo).public
    for oid in report_ids(repo):
        try:
            env = load_report(repo, oid)
        except ObjectNotFound:
            continue
        except DrengineError as e:
            res.errors.append(f"report {oid}: {e}")
            continue
        if b64d(env["signature"]["public_key"]) != key:
            res.errors.append(f"report {oid} is signed by another key than this repository's")


def tree_problems(nodes: list[Node]) -> list[str]:
    """Where one tree breaks the format's rules (§7): names, uniqueness, node fields."""
    problems = []
    seen: set[bytes] = set()
    for node in nodes:
        name = node.name
        if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
            problems.append(f"entry {name!r} has a name the format forbids")
        elif name in seen:
            problems.append(f"entry {name!r} appears twice")
        seen.add(name)
        if node.invalid:
            problems.append(f"entry {name!r} is invalid: {node.invalid}")
    return problems


# Blobs looked up at once: bounds what waits and the arrays ``lookup_many`` builds.
_LOOKUP_BATCH = 1 << 14

# Temporary files younger than this may belong to a backup running right now.
LEFTOVER_AGE = 3600.0


def _check_locks_and_leftovers(repo: Repository, res: CheckResult) -> None:
    locks = Locks(repo)
    for lock in locks.list():
        if locks.stale(lock):
            res.warnings.append(f"stale {lock.describe()} (drengine unlock removes it)")
    for oid in locks.unreadable:
        res.warnings.append(
            f"lock {oid} cannot be read; it blocks no one (drengine unlock removes it)"
        )
    now = time.time()
    old = [t for t in repo.leftovers() if now - t.mtime > LEFTOVER_AGE]
    for tmp in old:
        res.warnings.append(
            f"{tmp.name}: temporary file of a killed or failed write, {tmp.size} bytes "
            "(prune removes it)"
        )

"""Check a repository: structure always, stored data on request.

Structure: every index object decrypts, every indexed pack exists with the size the index
implies, every snapshot and tree decrypts, and every blob a tree references is indexed.
Data (``read_data``): every selected pack is downloaded, its name checked against its hash,
its trailer compared with the index, and every blob decrypted and checked against its ID.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drengine.core.errors import DrengineError
from drengine.engine.reachability import referenced_blobs
from drengine.repository import layout
from drengine.repository.index import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.locks import locked
from drengine.repository.pack import parse_trailer
from drengine.repository.repo import Repository


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
) -> CheckResult:
    with locked(repo, exclusive=False, operation="check"):
        return _run_check(repo, read_fraction, say, seed)


def _run_check(
    repo: Repository, read_fraction: float, say: Callable[[str], None], seed: int | None
) -> CheckResult:
    res = CheckResult()
    say("loading indexes")
    try:
        repo.load_index()
    except DrengineError as e:
        res.errors.append(str(e))
        return res
    by_pack: dict[bytes, list[tuple[bytes, IndexEntry]]] = defaultdict(list)
    for bid, entry in repo.index.entries():
        by_pack[entry.pack_id].append((bid, entry))

    say("checking packs")
    stored = {layout.pack_id_from_name(o.name): o.size for o in repo.backend.list(layout.DATA)}
    for pack_id, blobs in by_pack.items():
        res.packs_checked += 1
        size = stored.get(pack_id.hex())
        if size is None:
            res.errors.append(f"pack {pack_id.hex()} is missing (indexed, not in storage)")
        elif size < max(e.offset + e.length for _, e in blobs):
            res.errors.append(f"pack {pack_id.hex()} is truncated ({size} bytes)")
    for name in stored.keys() - {p.hex() for p in by_pack}:
        res.warnings.append(f"pack {name} is not in any index (prune removes it)")

    say("checking snapshots and trees")
    _check_trees(repo, res)

    if read_fraction > 0:
        packs = sorted(p for p in by_pack if p.hex() in stored)
        if read_fraction < 1:
            rng = random.Random(seed)
            packs = rng.sample(packs, max(1, round(len(packs) * read_fraction))) if packs else []
        say(f"reading {len(packs)} packs")
        with ThreadPoolExecutor(3, thread_name_prefix="check") as pool:
            for errors, nblobs in pool.map(lambda p: _read_pack(repo, p, by_pack[p]), packs):
                res.errors.extend(errors)
                res.packs_read += 1
                res.blobs_read += nblobs
    return res


def _check_trees(repo: Repository, res: CheckResult) -> None:
    def indexed(snapshot_id: str, bid: bytes) -> None:
        if repo.index.lookup(bid) is None:
            res.errors.append(f"snapshot {snapshot_id[:8]}: blob {bid.hex()} is not in the index")

    reach = referenced_blobs(repo, indexed)
    res.snapshots = reach.snapshots
    res.errors.extend(reach.errors)


def _read_pack(
    repo: Repository, pack_id: bytes, blobs: list[tuple[bytes, IndexEntry]]
) -> tuple[list[str], int]:
    name = pack_id.hex()
    try:
        data = repo.read_pack(pack_id)
    except DrengineError as e:
        return [f"pack {name}: {e}"], 0
    if layout.object_id(data) != name:
        return [f"pack {name} does not match its hash (damaged in storage)"], 0
    errors: list[str] = []
    try:
        _, records = parse_trailer(repo.keys.encryption, data, f"pack {name}")
        listed = {(r.id, r.offset, r.length) for r in records}
        indexed = {(bid, e.offset, e.length) for bid, e in blobs}
        if indexed - listed:
            errors.append(f"pack {name}: the index lists blobs the pack trailer does not")
    except DrengineError as e:
        errors.append(str(e))
    view = memoryview(data)
    n = 0
    for bid, entry in blobs:
        try:
            repo.open_blob(bid, entry, view[entry.offset : entry.offset + entry.length])
            n += 1
        except DrengineError as e:
            kind = "tree" if entry.type == BlobType.TREE else "data"
            errors.append(f"pack {name}: {kind} {e}")
    return errors, n

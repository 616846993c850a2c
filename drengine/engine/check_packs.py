"""Reading a pack for ``check --read-data``: in the checking process or in a check worker
(``check_worker``), which runs the same code."""

from __future__ import annotations

from drengine.core.errors import DrengineError
from drengine.core.phases import Phases
from drengine.repository import layout
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.pack import parse_trailer
from drengine.repository.repo import Repository

PackBlobs = list[tuple[bytes, IndexEntry]]  # the indexed blobs of one pack


def read_pack(
    repo: Repository, pack_id: bytes, blobs: list[tuple[bytes, IndexEntry]], phases: Phases
) -> tuple[list[str], int]:
    name = pack_id.hex()
    try:
        with phases.span("fetch"):
            data = repo.read_pack(pack_id)
    except DrengineError as e:
        return [f"pack {name}: {e}"], 0
    with phases.span("decrypt"):
        return _open_pack(repo, name, data, blobs)


def _open_pack(
    repo: Repository, name: str, data: bytes, blobs: list[tuple[bytes, IndexEntry]]
) -> tuple[list[str], int]:
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

"""Write one file of a snapshot to a stream, each blob verified before it is written."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import blake3

from drengine.core.errors import IntegrityError, UsageError
from drengine.core.model import Snapshot
from drengine.engine.blobstream import blob_stream
from drengine.engine.tree_paths import find_node
from drengine.repository.repo import Repository


def run_dump(repo: Repository, snap: Snapshot, path: str, out: BinaryIO) -> int:
    node = find_node(repo, snap, path)
    if node is None or node.type != "file":
        raise UsageError(f"{path} is not a file in snapshot {snap.id[:8]}")
    hasher = blake3.blake3()
    written = 0
    with ThreadPoolExecutor(4, thread_name_prefix="fetch") as pool:
        for data in blob_stream(repo, node.content, pool):
            out.write(data)
            hasher.update(data)
            written += len(data)
    out.flush()
    if written != node.size or hasher.digest() != node.content_hash:
        raise IntegrityError(f"content of {path} does not match the snapshot's content hash")
    return written

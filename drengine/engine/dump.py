"""Write one file of a snapshot to a stream, each blob verified before it is written
(whole: see ``core.streams``)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import blake3

from drengine.core.errors import IntegrityError, RestoreError, UsageError
from drengine.core.model import Snapshot
from drengine.core.streams import flush_all, write_all
from drengine.engine.blobstream import blob_stream
from drengine.engine.tree_paths import find_node
from drengine.repository.repo import Repository

log = logging.getLogger(__name__)


def run_dump(repo: Repository, snap: Snapshot, path: str, out: BinaryIO) -> int:
    node = find_node(repo, snap, path)
    if node is None or node.type != "file":
        raise UsageError(f"{path} is not a file in snapshot {snap.id[:8]}")
    if node.invalid:
        raise IntegrityError(
            f"{path} is invalid in snapshot {snap.id[:8]} ({node.invalid}); not dumped"
        )
    if node.damaged:
        log.warning("%s is incomplete in snapshot %s: %s", path, snap.id[:8], node.damaged)
    hasher = blake3.blake3()
    written = 0
    try:
        with ThreadPoolExecutor(4, thread_name_prefix="fetch") as pool:
            for data in blob_stream(repo, node.content, pool):
                write_all(out, data)
                hasher.update(data)
                written += len(data)
        flush_all(out)
    except BrokenPipeError:
        raise  # the reader went away (``| head``): the CLI exits quietly
    except OSError as e:
        raise RestoreError(f"cannot write {path} to the output: {e.strerror or e}") from None
    if written != node.size or hasher.digest() != node.content_hash:
        raise IntegrityError(f"content of {path} does not match the snapshot's content hash")
    return written

"""``restore SNAPSHOT --to URL``: hand a snapshot's recorded streams to the source module
that loads them (a database server, a device), each stream verified as it goes.

The engine knows no kind: the URL's scheme picks the module, the snapshot's record of that
kind says what to load, and ``verified_chunks`` gives the module each stream's plaintext,
every blob authenticated, the last one held back until the whole stream's size, BLAKE3 and
recorded SHA-256 matched. A loader that commits only at the end of its input (``pg_restore
--single-transaction``) so never commits a damaged or truncated stream.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import blake3

from drengine.core.errors import Cancelled, IntegrityError, UsageError
from drengine.core.model import Snapshot
from drengine.core.phases import NO_PHASES, Phases
from drengine.engine.blobstream import blob_stream
from drengine.engine.tree_paths import find_node
from drengine.repository.locks import locked
from drengine.repository.repo import Repository
from drengine.sources.base import LoadOptions
from drengine.sources.urls import finisher, loader, split_url

log = logging.getLogger(__name__)


def verified_chunks(
    repo: Repository,
    snap: Snapshot,
    path: str,
    phases: Phases = NO_PHASES,
    cancel: threading.Event | None = None,
) -> Iterator[bytes]:
    """The content of the file at ``path``, blob by blob; the last blob only once the whole
    stream matches its hashes (``IntegrityError`` otherwise). ``cancel`` stops it between
    blobs (``Cancelled``): the loader reading it is then stopped before it can commit."""
    node = find_node(repo, snap, path)
    if node is None or node.type != "file":
        raise UsageError(f"{path} is not a file in snapshot {snap.id[:8]}")
    if node.invalid or node.damaged:
        raise IntegrityError(
            f"{path} is {'invalid' if node.invalid else 'damaged'} in snapshot {snap.id[:8]} "
            f"({node.invalid or node.damaged}); not restored"
        )
    recorded = next((s.get("sha256") for s in snap.streams() if s.get("path") == path), None)
    b3, sha = blake3.blake3(), hashlib.sha256()
    size = 0
    held: bytes | None = None
    with ThreadPoolExecutor(4, thread_name_prefix="fetch") as pool:
        for data in blob_stream(repo, node.content, pool, phases=phases):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"the restore of {path} was cancelled")
            with phases.span("verify"):
                b3.update(data)
                sha.update(data)
            size += len(data)
            if held is not None:
                yield held
            held = data
    if size != node.size or b3.digest() != node.content_hash:
        raise IntegrityError(f"content of {path} does not match the snapshot's content hash")
    if recorded is not None and sha.hexdigest() != recorded:
        raise IntegrityError(f"content of {path} does not match its recorded SHA-256")
    if held is not None:
        yield held


def run_restore_to(
    repo: Repository, snap: Snapshot, url: str, options: LoadOptions
) -> list[dict[str, Any]]:
    split_url(url)
    with locked(repo, exclusive=False, operation="restore"):
        with options.phases.span("index"):
            repo.load_index()
        return load_to(repo, snap, url, options)


def load_to(
    repo: Repository, snap: Snapshot, url: str, options: LoadOptions
) -> list[dict[str, Any]]:
    """``run_restore_to`` for a caller that holds a lock and loaded the index (a drill)."""
    u = split_url(url)
    kind, restore = loader(u.scheme)
    part = next((p for p in snap.parts if p.get("kind") == kind), None)
    if part is None:
        held = ", ".join(sorted({p["kind"] for p in snap.parts})) or "nothing"
        raise UsageError(f"snapshot {snap.id[:8]} holds no {kind} dump (it holds {held})")
    phases = options.phases
    return restore(part, u, lambda p: verified_chunks(repo, snap, p, phases), options)


def finish_restored(
    snap: Snapshot, target: str, phases: Phases = NO_PHASES
) -> list[dict[str, Any]]:
    """After ``restore --target``: each source kind's finishing step on what was restored
    (SQLite: the database file rebuilt from its verified dump)."""
    made = []
    for part in snap.parts:
        finish = finisher(str(part.get("kind")))
        if finish is not None and (done := finish(part, target, phases)) is not None:
            made.append(done)
    return made
